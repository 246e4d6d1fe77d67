"""Shared pieces of the Prefect flows (flows/ is not a package: Prefect and the tests put this
folder on sys.path, so the flow files import this module by its plain name).

Resuming: Prefect's results are NOT what makes a crashed flow resume. Every stage writes a
record in <workspace>/state when it finishes and returns that record when called again, so a
retried task, a retried flow or a new run of the same deployment skips the finished stages and
continues after the last one. Tasks and flows therefore retry freely (``retries``) and cache
nothing (``NO_CACHE``): the stage records are the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from synthloop.config import PipelineConfig, load_config

TASK_RETRIES = 1


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
