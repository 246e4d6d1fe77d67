"""Flow `continuous_training` (nightly in prefect.yaml): monitor -> decide -> cycle.

The monitor's decision (pure: ``monitoring.decision.decide_trigger``) says whether a cycle is
due; ``force`` runs one anyway. The cycle goes through the same lock as event-triggered
`al_cycle` runs, so a nightly run and a drift-triggered run never train or promote together.
"""

from __future__ import annotations

from prefect import flow

from al_cycle import al_cycle
from monitor import monitor


@flow(name="continuous_training", log_prints=True)
def continuous_training(config: str = "pipelines/demo.yaml", overrides: list[str] | None = None,
                        force: bool = False) -> dict:
    record = monitor(config, overrides, emit_events=False)
    decision = record["trigger"]
    if not (decision["fire"] or force):
        print("continuous_training: no cycle needed -", "; ".join(decision["reasons"]))
        return {"monitor": record, "cycle": None}
    trigger = f"nightly:{decision['trigger'] or 'forced'}"
    return {"monitor": record, "cycle": al_cycle(config, trigger=trigger, overrides=overrides)}


if __name__ == "__main__":
    import sys

    print(continuous_training(*sys.argv[1:2]))
