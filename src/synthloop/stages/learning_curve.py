"""The pipeline's own MLflow run: the learning curve across cycles, one run per workspace.

``pipeline-<name>`` (tag ``stage=pipeline``) is created by the workspace's first pipeline start
(its id kept in state/pipeline_run.json) and reopened by every later start, so one run holds
every cycle. Each finished cycle t (t = 0: M0) logs with step = t: ``val_AP``, ``val_AP50``,
``val_AP75``, ``val_AP_<class>``, ``labels_used`` and ``promoted``, which MLflow's chart view of
this run draws as AP by cycle. ``gate_decisions.json`` (an MLflow table: the artifact view
shows it as one) gets a row per gate decision: cycle, versions, promoted, rule, gain, interval,
reason. Logging is idempotent: a cycle already on the curve or in the table is not added again.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from synthloop import tracking, tracking_recovery
from synthloop.config import PipelineConfig
from synthloop.stages.workspace import Workspace, read_record, write_record

RECORD = "pipeline_run.json"
TABLE = "gate_decisions.json"
CURVE_KEYS = ("AP", "AP50", "AP75")
NOTE = ("The learning curve of this workspace: val AP, AP50 and per-class AP and the labels "
        "used, with step = cycle (0 = the model pretrained on renders); gate_decisions.json "
        "lists every gate decision.")


def pipeline_run_id(cfg: PipelineConfig) -> str:
    """The workspace's pipeline run: created once, reopened (RUNNING, owned by this process)."""
    path = Workspace.of(cfg).root / "state" / RECORD
    rec = read_record(path)
    exp_id = tracking.setup(cfg)
    client = MlflowClient()
    if rec:
        try:
            tracking_recovery.reopen_run(client, rec["run_id"])
            return rec["run_id"]
        except MlflowException:  # deleted in the UI: start a new curve
            pass
    run = client.create_run(exp_id, run_name=f"pipeline-{cfg.name}",
                            tags={"stage": "pipeline", "pipeline": cfg.name,
                                  "mlflow.note.content": NOTE, **tracking.process_tags()})
    write_record(path, {"run_id": run.info.run_id})
    return run.info.run_id


def curve_metrics(metrics: Mapping[str, float], labels_used: int, promoted: bool
                  ) -> dict[str, float]:
    """The values a cycle adds to the curve (COCO's -1, nothing to score, left out)."""
    out = {f"val_{k}": float(v) for k, v in metrics.items()
           if (k in CURVE_KEYS or k.startswith("AP_")) and float(v) >= 0}
    out.update(labels_used=float(labels_used), promoted=float(promoted))
    return out


def log_cycle(run_id: str, cycle: int, metrics: Mapping[str, float], *, labels_used: int,
              promoted: bool, client: MlflowClient | None = None) -> bool:
    """Add cycle ``cycle`` to the curve unless it is there; returns whether it was added."""
    client = client or MlflowClient()
    if any(m.step == cycle for m in client.get_metric_history(run_id, "labels_used")):
        return False
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, cycle) for k, v in
                                      curve_metrics(metrics, labels_used, promoted).items()])
    return True


def decision_row(record: Mapping[str, Any]) -> dict[str, Any]:
    interval = record.get("interval") or {}
    return {"cycle": int(record.get("cycle", 0)),
            "candidate_version": str(record.get("candidate_version", "")),
            "champion_before": str(record.get("champion_version_before") or ""),
            "promoted": bool(record.get("promote")), "rule": str(record.get("rule", "")),
            "gain": record.get("improvement"), "ci_lower": interval.get("lower"),
            "ci_upper": interval.get("upper"), "reason": str(record.get("reason", ""))}


def logged_cycles(client: MlflowClient, run_id: str) -> set[int]:
    if not any(a.path == TABLE for a in client.list_artifacts(run_id)):
        return set()
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(client.download_artifacts(run_id, TABLE, tmp)).read_text())
    column = table["columns"].index("cycle")
    return {int(row[column]) for row in table["data"]}


def log_decisions(cfg: PipelineConfig, run_id: str, client: MlflowClient | None = None) -> int:
    """Append the gate records (state/cycle_*/gate.json) not yet in the table; returns how many."""
    client = client or MlflowClient()
    have = logged_cycles(client, run_id)
    records = [read_record(p) for p in Workspace.of(cfg).root.glob("state/cycle_*/gate.json")]
    rows = sorted((decision_row(r) for r in records if r), key=lambda r: r["cycle"])
    rows = [r for r in rows if r["cycle"] not in have]
    if rows:
        client.log_table(run_id, data={k: [r[k] for r in rows] for k in rows[0]},
                         artifact_file=TABLE)
    return len(rows)
