"""Prefect flow of the demo pipeline: the same stage sequence as `synthloop demo`, each stage a task.

Run:  .venv/bin/python flows/demo.py [pipelines/demo.yaml]
Uses Prefect's ephemeral API by default (nothing to start); set PREFECT_API_URL for a server.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from synthloop.config import load_config
from synthloop.stages.pipeline import run_pipeline


def prefect_runner(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run one stage call as a Prefect task (retries only where a rerun is safe: all stages
    are idempotent on their inputs, so one retry after a transient failure is harmless)."""
    return task(fn, name=name, retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)(*args, **kwargs)


@flow(name="synthloop-demo", log_prints=True)
def demo_flow(config: str = "pipelines/demo.yaml", cycles: int | None = None) -> list[dict]:
    cfg = load_config(config)
    rows = run_pipeline(cfg, runner=prefect_runner, cycles=cycles)
    return [row.__dict__ for row in rows]


if __name__ == "__main__":
    from synthloop.cli import _logging, print_report
    from synthloop.stages.pipeline import CycleSummary

    _logging(False)
    config = sys.argv[1] if len(sys.argv) > 1 else "pipelines/demo.yaml"
    t0 = time.perf_counter()
    rows = demo_flow(config)
    print_report(load_config(config), [CycleSummary(**r) for r in rows], time.perf_counter() - t0)
