"""Prefect events over the server's REST API (POST /api/events), without importing prefect:
``synthloop ingest`` tells a running Prefect server that the pool grew, and the al-cycle
deployment's trigger (prefect.yaml) starts a cycle on the worker."""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any

from synthloop.config import PipelineConfig
from synthloop.monitoring.decision import decide_trigger


def emit_event(api_url: str, *, event: str, resource: dict[str, str], payload: dict[str, Any],
               timeout_s: float = 30.0) -> str:
    """POST one event to ``<api_url>/events``; returns its id. Raises OSError if unreachable."""
    event_id = str(uuid.uuid4())
    body = [{"id": event_id, "occurred": datetime.now(timezone.utc).isoformat(), "event": event,
             "resource": resource, "related": [], "payload": payload}]
    req = urllib.request.Request(f"{api_url.rstrip('/')}/events", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s):
        pass
    return event_id


def pipeline_resource(cfg: PipelineConfig) -> dict[str, str]:
    """The resource prefect.yaml's triggers match on (``synthloop.pipeline.*``)."""
    return {"prefect.resource.id": f"synthloop.pipeline.{cfg.name}",
            "prefect.resource.name": cfg.name}


def emit_pool_growth(api_url: str, cfg: PipelineConfig, *, config_path: str,
                     pool_growth: int) -> dict[str, Any]:
    """Decide on pool growth alone (pure ``decide_trigger``) and emit its event when it fires.
    Returns ``{"fire", "event", "event_id", "reasons"}``."""
    decision = decide_trigger(pool_growth=pool_growth, drift=None, champion_confidence=None,
                              reference_confidence=None, cfg=cfg.trigger)
    sent = None
    if decision.fire:
        sent = emit_event(api_url, event=decision.event, resource=pipeline_resource(cfg),
                          payload={"config": config_path, "pipeline": cfg.name,
                                   "trigger": decision.trigger, "pool_growth": pool_growth,
                                   "reasons": list(decision.reasons)})
    return {"fire": decision.fire, "event": decision.event, "event_id": sent,
            "reasons": list(decision.reasons)}
