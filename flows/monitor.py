"""Flow `monitor` (the pool watcher): ingest new camera images, check drift and the champion's
monitored metric, decide (pure), and emit the event that the `al_cycle` deployment's trigger
starts a cycle on. `continuous_training` runs it with ``emit_events=False`` and decides itself.
"""

from __future__ import annotations

from prefect import flow

from flow_support import emit_monitor_events, load, prefect_runner
from synthloop.stages import ingest
from synthloop.stages import monitor as monitor_stage


@flow(name="monitor", log_prints=True)
def monitor(config: str = "pipelines/demo.yaml", overrides: list[str] | None = None,
            emit_events: bool = True) -> dict:
    cfg = load(config, overrides)
    ingested = None
    if cfg.ingest.source:
        ingested = prefect_runner("ingest", ingest.run, cfg).to_dict()
    record = prefect_runner("check", monitor_stage.check, cfg, ingest_result=ingested)
    record["events"] = emit_monitor_events(cfg, config, record) if emit_events else []
    print("monitor:", "; ".join(record["trigger"]["reasons"]), "| events:", record["events"])
    return record


if __name__ == "__main__":
    import sys

    print(monitor(*sys.argv[1:2]))
