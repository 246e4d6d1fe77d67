"""Prefect flow of the demo pipeline: the same stage sequence as `synthloop demo`, each stage a task.

Run:  .venv/bin/python flows/demo.py [pipelines/demo.yaml [overlay.yaml ...]]
      (overlays are merged over the pipeline file in order, as `synthloop demo --overlay`)
Uses Prefect's ephemeral API by default (nothing to start); set PREFECT_API_URL for a server.
"""

from __future__ import annotations

import sys
import time

from prefect import flow

from flow_support import prefect_runner
from synthloop.config import load_config
from synthloop.stages.pipeline import run_pipeline


@flow(name="synthloop-demo", log_prints=True)
def demo_flow(config: str = "pipelines/demo.yaml", cycles: int | None = None,
              overlays: list[str] | None = None) -> list[dict]:
    cfg = load_config(config, overlays=overlays or ())
    rows = run_pipeline(cfg, runner=prefect_runner, cycles=cycles)
    return [row.__dict__ for row in rows]


if __name__ == "__main__":
    from synthloop.log_setup import setup_logging
    from synthloop.stages.pipeline import CycleSummary, run_report

    setup_logging(False)
    config = sys.argv[1] if len(sys.argv) > 1 else "pipelines/demo.yaml"
    overlays = sys.argv[2:]
    t0 = time.perf_counter()
    rows = demo_flow(config, overlays=overlays)
    print(run_report(load_config(config, overlays=overlays), [CycleSummary(**r) for r in rows],
                     time.perf_counter() - t0))
