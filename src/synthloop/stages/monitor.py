"""Stage: the monitor (what changed since the last cycle, should a cycle start?) and the locked
cycle runner that every trigger goes through.

``check``: pool growth since the last cycle, drift of the new images (stages/drift.py), the
champion's monitored metric (mean top detection score on new vs reference images), CAD files
changed since the champion's synthetic set was rendered; ``decide_trigger`` (pure) decides.
One MLflow run ``monitor-<UTC time>`` per check holds the numbers, the Evidently HTML report
and the decision.

``run_next_cycle``: one more DAL cycle under the workspace's cycle lock (gating/cycle_lock.py).
A second request while a cycle runs waits ``trigger.lock_wait_s`` then is recorded as skipped.
Crash safety comes from the stages themselves: each writes a record when done and returns it
on a rerun, so rerunning the same request resumes after the last finished stage.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable

from mlflow import MlflowClient

from synthloop import lineage, tracking, tracking_recovery
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.gating.cycle_lock import CycleBusy, cycle_lock, record_request
from synthloop.gating.registry import CHAMPION, get_alias_version
from synthloop.monitoring.decision import decide_trigger
from synthloop.stages import drift, ingest
from synthloop.stages.cad_records import cad_answered
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)


def state_dir(cfg: PipelineConfig):
    return Workspace.of(cfg).root / "state"


def pool_ids(cfg: PipelineConfig) -> list[int]:
    path = Workspace.of(cfg).dataset_dir("pool") / "annotations.json"
    return [im.id for im in CocoDataset.load(path).images] if path.exists() else []


def baseline(cfg: PipelineConfig) -> set[int]:
    """Pool ids the last cycle saw; before any locked cycle: the pool minus ingested images."""
    rec = read_record(state_dir(cfg) / "monitor" / "baseline.json")
    if rec is not None:
        return set(rec["pool_ids"])
    return set(pool_ids(cfg)) - ingest.ingested_ids(cfg)


def set_baseline(cfg: PipelineConfig, ids: list[int], *, cycle: int) -> None:
    write_record(state_dir(cfg) / "monitor" / "baseline.json",
                 {"pool_ids": sorted(ids), "cycle": cycle,
                  "set": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def finished_cycles(cfg: PipelineConfig) -> int:
    ws, done = Workspace.of(cfg), 0
    while (ws.cycle_dir(done + 1) / "gate.json").exists():
        done += 1
    return done


def cad_changed(cfg: PipelineConfig, client: MlflowClient) -> dict[str, tuple[str, str]]:
    """Parts whose mesh differs from the one the champion's synthetic set was rendered from:
    the newest CAD hashes in its chain (a CAD retrain's, else pretrain's)."""
    champ = get_alias_version(client, cfg.registered_model_name, CHAMPION)
    if champ is None:
        return {}
    chain = lineage.trace(client, cfg.registered_model_name, str(champ.version))
    recorded = next((step.cad for step in chain if step.cad), {})
    return lineage.cad_changes(recorded, lineage.cad_hashes(cfg)) if recorded else {}


def check(cfg: PipelineConfig, *, ingest_result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure what changed and decide whether a cycle should start; returns the record."""
    exp_id = tracking.setup(cfg)
    client = MlflowClient()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run = client.create_run(exp_id, run_name=f"monitor-{stamp}",
                            tags={"stage": "monitor", **lineage.run_tags(cfg, datasets={}),
                                  **tracking.process_tags()})
    rid = run.info.run_id
    with tracking_recovery.ends_failed(rid, client):
        base = baseline(cfg)
        new_ids = [i for i in pool_ids(cfg) if i not in base]
        result = None
        if len(new_ids) >= 2 and (len(base) >= 2 or cfg.monitoring.reference != "pool"):
            result = drift.run(cfg, current_ids=new_ids, baseline=base, run_id=rid)
        decision = decide_trigger(
            pool_growth=len(new_ids), drift=result.decision if result else None,
            champion_confidence=result.current_confidence if result else None,
            reference_confidence=result.reference_confidence if result else None, cfg=cfg.trigger)
        cad = cad_changed(cfg, client)
        answered = bool(cad) and cad_answered(cfg)
        record = {"time": stamp, "run_id": rid, "pipeline": cfg.name, "pool_growth": len(new_ids),
                  "baseline_size": len(base), "ingest": ingest_result,
                  "drift": result.to_dict() if result else None, "trigger": decision.to_dict(),
                  # an answered revision (retrained, the gate kept the champion) is not
                  # announced again every hour; a newer CAD revision is
                  "cad_changed": {} if answered else {k: list(v) for k, v in cad.items()},
                  "cad_answered": {k: list(v) for k, v in cad.items()} if answered else {}}
        for key, value in {"monitoring.reference": cfg.monitoring.reference,
                           "monitoring.embedding_method": cfg.monitoring.embedding_method,
                           "monitoring.stat_alpha": cfg.monitoring.stat_alpha,
                           **{f"trigger.{k}": v for k, v in cfg.trigger.model_extra.items()}
                           }.items():  # every registered trigger's settings
            client.log_param(rid, key, value)
        client.log_metric(rid, "pool_growth", float(len(new_ids)))
        client.log_metric(rid, "trigger_fired", float(decision.fire))
        client.set_tag(rid, "trigger.event", decision.event or "none")
        client.log_dict(rid, record, "monitor_record.json")
        client.set_terminated(rid)
    write_record(state_dir(cfg) / "monitor" / f"check-{stamp}.json", record)
    log.info("monitor: %s", "; ".join(decision.reasons))
    return record


def run_next_cycle(cfg: PipelineConfig, *, trigger: str, runner: Callable[..., Any] | None = None,
                   wait_s: float | None = None, progress: bool = False,
                   pipeline_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Run one more cycle if no other holds the lock; returns the request's log entry."""
    from synthloop.stages.pipeline import call, run_pipeline

    pipeline_fn = pipeline_fn or run_pipeline
    state = state_dir(cfg)
    wait = cfg.trigger.lock_wait_s if wait_s is None else wait_s
    asked = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        with cycle_lock(state, trigger=trigger, wait_s=wait) as held:
            target = finished_cycles(cfg) + 1
            seen = pool_ids(cfg)
            rows = pipeline_fn(cfg, runner=runner or call, cycles=target, progress=progress)
            row = rows[-1]
            set_baseline(cfg, seen, cycle=row.cycle)
            entry = {"trigger": trigger, "outcome": "ran", "asked": asked,
                     "started": held.since, "waited_s": round(held.waited_s, 2),
                     "cycle": row.cycle, "promoted": row.promoted,
                     "model_version": row.model_version, "reason": row.reason}
    except CycleBusy as busy:
        entry = {"trigger": trigger, "outcome": "skipped", "asked": asked,
                 "waited_s": round(busy.waited_s, 2), "held_by": busy.holder}
        log.warning("cycle request (%s) skipped: %s", trigger, busy)
    except Exception as exc:  # recorded, then re-raised: a rerun resumes from the stage records
        record_request(state, {"trigger": trigger, "outcome": "failed", "asked": asked,
                               "error": f"{type(exc).__name__}: {exc}"[:2000]})
        raise
    return record_request(state, entry)
