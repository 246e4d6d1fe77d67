"""Shared pieces of the Prefect flows (flows/ is not a package: Prefect and the tests put this
folder on sys.path, so the flow files import this module by its plain name).

Resuming: Prefect's results are NOT what makes a crashed flow resume. Every stage writes a
record in <workspace>/state when it finishes and returns that record when called again, so a
retried task, a retried flow or a new run of the same deployment skips the finished stages and
continues after the last one. Tasks and flows therefore retry freely (``retries``) and cache
nothing (``NO_CACHE``): the stage records are the cache.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from synthloop.config import PipelineConfig, load_config

TASK_RETRIES = 1


CYCLE_LIMIT_ENV = "SYNTHLOOP_CYCLE_LIMIT"  # set by `synthloop stack up` for its worker


@contextmanager
def cycle_slot() -> Iterator[dict[str, Any]]:
    """On a Prefect server with workers (``synthloop stack``): hold the one slot of the global
    concurrency limit named by $SYNTHLOOP_CYCLE_LIMIT, so one cycle runs at a time across all
    workers and machines; a second request waits for the slot. Yields ``{"limit", "waited_s"}``.
    Without the variable (local runs) nothing is taken: the workspace's cycle lock decides."""
    import os
    import time

    name = os.environ.get(CYCLE_LIMIT_ENV)
    if not name:
        yield {"limit": None, "waited_s": 0.0}
        return
    from prefect.concurrency.sync import concurrency

    t0 = time.monotonic()
    # A 60 s lease (the server's minimum), renewed while this run lives: a worker killed
    # mid-cycle blocks the next cycle for about a minute, not Prefect's default 5.
    with concurrency(name, occupy=1, strict=True, lease_duration=60):
        yield {"limit": name, "waited_s": round(time.monotonic() - t0, 2)}


def prefect_runner(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run one stage call as a Prefect task; a retry is safe because every stage is idempotent."""
    return task(fn, name=name, retries=TASK_RETRIES, retry_delay_seconds=5,
                cache_policy=NO_CACHE)(*args, **kwargs)


def load(config: str, overrides: list[str] | None = None) -> PipelineConfig:
    return load_config(config, overrides=list(overrides or []))


def pipeline_resource(cfg: PipelineConfig) -> dict[str, str]:
    """The Prefect event resource of a pipeline: triggers in prefect.yaml match on its id."""
    return {"prefect.resource.id": f"synthloop.pipeline.{cfg.name}",
            "prefect.resource.name": cfg.name}


def emit_monitor_events(cfg: PipelineConfig, config: str, record: dict[str, Any]) -> list[str]:
    """Emit the monitor's decision as Prefect events (the deployments' triggers react)."""
    sent = []
    decision = record["trigger"]
    payload = {"config": str(Path(config).resolve()), "pipeline": cfg.name,
               "monitor_run_id": record["run_id"]}
    if decision["fire"]:
        emit_event(event=decision["event"], resource=pipeline_resource(cfg),
                   payload={**payload, "trigger": decision["trigger"],
                            "reasons": list(decision["reasons"])})
        sent.append(decision["event"])
    if record.get("cad_changed"):
        from synthloop.monitoring.decision import EVENT_CAD

        emit_event(event=EVENT_CAD, resource=pipeline_resource(cfg),
                   payload={**payload, "trigger": "cad-changed", "parts": record["cad_changed"]})
        sent.append(EVENT_CAD)
    return sent
