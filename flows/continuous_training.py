"""Flow `continuous_training` (nightly in prefect.yaml): monitor -> decide -> cycle.

The monitor's decision (pure: ``monitoring.decision.decide_trigger``) says whether a cycle is
due; ``force`` runs one anyway. With ``labeling.stop_below_gain_per_minute`` set, a due cycle is
skipped before it queries when the stop rule says the loop is saturated (expected AP gain per
labelling minute below the threshold: stages/label_cost.py); the skip is recorded in
``state/cycle_runs.jsonl`` and printed. ``force`` overrides that too. The cycle goes through
the same lock as event-triggered `al_cycle` runs, so a nightly run and a drift-triggered run
never train or promote together.
"""

from __future__ import annotations

from prefect import flow

from al_cycle import al_cycle
from flow_support import load, prefect_runner
from monitor import monitor
from synthloop.stages import label_cost


@flow(name="continuous_training", log_prints=True)
def continuous_training(config: str = "pipelines/demo.yaml", overrides: list[str] | None = None,
                        force: bool = False) -> dict:
    record = monitor(config, overrides, emit_events=False)
    decision = record["trigger"]
    if not (decision["fire"] or force):
        print("continuous_training: no cycle needed -", "; ".join(decision["reasons"]))
        return {"monitor": record, "cycle": None}
    trigger = f"nightly:{decision['trigger'] or 'forced'}"
    if not force:
        skipped = prefect_runner("saturation", label_cost.skip_if_saturated,
                                 load(config, overrides), trigger=trigger)
        if skipped:
            print("continuous_training: querying skipped -", skipped["reason"])
            return {"monitor": record, "cycle": skipped}
    return {"monitor": record, "cycle": al_cycle(config, trigger=trigger, overrides=overrides)}


if __name__ == "__main__":
    import sys

    print(continuous_training(*sys.argv[1:2]))
