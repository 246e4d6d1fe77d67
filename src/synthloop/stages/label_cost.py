"""Stage helpers: what each cycle's labels cost in annotator seconds, what they bought, and the
stop rule (the pure parts are in data/label_cost.py).

* ``simulated_cost`` / ``human_cost``: the label stage's cost of the simulated part (cost
  model, every box new) and of people's part (Label Studio lead times where the export has
  them, the cost model elsewhere; computed at ``synthloop label import``). The label stage
  writes the sum under ``cost`` in ``state/cycle_<t>/label.json``.
* ``after_gate``: the cycle's ``label_cost.json`` (seconds, source, AP gain = the gate's
  candidate AP - champion AP, gain per labelling minute, the stop rule's decision for the next
  cycle) and the MLflow metrics of the cycle's run: ``label_seconds``, ``label_minutes``,
  ``ap_gain_per_label_minute``, ``label_expected_gain_per_minute``, ``label_saturated``; tags
  ``label.cost_source`` and ``label.saturated``.
* ``saturation`` / ``skip_if_saturated``: the stop rule over the finished cycles (read from
  label.json and gate.json, so a crash before ``after_gate`` loses nothing); the nightly flow
  asks ``skip_if_saturated`` before a cycle and records a skip in ``state/cycle_runs.jsonl``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.data.label_cost import (LabelCost, Saturation, count_boxes, cycle_cost,
                                       dataset_cost, decide_saturation, gain_per_minute,
                                       labelstudio_lead_times)
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)
RECORD = "label_cost.json"


def simulated_cost(cfg: PipelineConfig, answers: CocoDataset, image_ids: list[int]) -> LabelCost:
    """The simulated oracle's images: no pre-annotations, so every box is drawn new."""
    return dataset_cost(answers, image_ids, cfg.labeling.cost)


def human_cost(cfg: PipelineConfig, manifest: Any, batch: Any, path: Path) -> LabelCost:
    """People's returned images (``batch``: data.label_import.ImportedBatch) against the
    exported pre-annotations; Label Studio lead times from the file at ``path`` where present."""
    offered: dict[int, list] = {}
    for p in manifest.preannotations:
        offered.setdefault(p.image_id, []).append((p.category_id, tuple(p.bbox)))
    counts = count_boxes(batch.boxes, offered, accept_iou=cfg.labeling.accept_iou)
    lead: dict[int, float] = {}
    if batch.tool == "labelstudio" and Path(path).suffix.lower() == ".json":
        lead = labelstudio_lead_times(json.loads(Path(path).read_text()))
    return cycle_cost(counts, cfg.labeling.cost, {i: t for i, t in lead.items() if i in counts})


def history(cfg: PipelineConfig, *, through: int | None = None) -> list[tuple[int, float]]:
    """(cycle, AP gain per labelling minute) of finished cycles with costed labels, in order."""
    ws = Workspace.of(cfg)
    out = []
    cycle = 1
    while (ws.cycle_dir(cycle) / "gate.json").exists() and (through is None or cycle <= through):
        lab, gate = (read_record(ws.cycle_dir(cycle) / n) for n in ("label.json", "gate.json"))
        cost = (lab or {}).get("cost")
        g = gain_per_minute((gate or {}).get("improvement"), cost["seconds"]) if cost else None
        if g is not None:
            out.append((cycle, g))
        cycle += 1
    return out


def saturation(cfg: PipelineConfig, *, through: int | None = None) -> Saturation:
    lab = cfg.labeling
    return decide_saturation(history(cfg, through=through),
                             threshold=lab.stop_below_gain_per_minute, window=lab.stop_window)


def after_gate(cfg: PipelineConfig, *, cycle: int, parent_run_id: str | None) -> dict[str, Any]:
    """Write the cycle's cost record and log it with the cycle's MLflow run; returns it."""
    ws = Workspace.of(cfg)
    lab = read_record(ws.cycle_dir(cycle) / "label.json") or {}
    gate = read_record(ws.cycle_dir(cycle) / "gate.json") or {}
    cost = lab.get("cost")
    seconds = float(cost["seconds"]) if cost else None
    gain = gate.get("improvement")
    per_min = gain_per_minute(gain, seconds) if seconds is not None else None
    sat = saturation(cfg, through=cycle)
    record = {"cycle": cycle, "label_seconds": seconds,
              "label_minutes": None if seconds is None else seconds / 60.0,
              "source": cost["source"] if cost else "unrecorded",
              "images": cost["images"] if cost else None, "boxes": cost["boxes"] if cost else None,
              "ap_gain": gain, "ap_gain_per_label_minute": per_min,
              "saturated": sat.saturated, "saturation": sat.to_dict()}
    write_record(ws.cycle_dir(cycle) / RECORD, record)
    if parent_run_id:
        log_cost(cfg, parent_run_id, cycle, record)
    log.info("label cost (cycle %d): %s min (%s), AP gain %s, %s AP per labelling minute; %s",
             cycle, "-" if seconds is None else f"{seconds / 60:.1f}", record["source"],
             "-" if gain is None else f"{gain:+.4f}",
             "-" if per_min is None else f"{per_min:+.5f}", sat.reason)
    return record


def log_cost(cfg: PipelineConfig, run_id: str, cycle: int, record: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    from synthloop import tracking

    tracking.setup(cfg)
    client = MlflowClient()
    sat = record["saturation"]
    metrics = {"label_seconds": record["label_seconds"], "label_minutes": record["label_minutes"],
               "ap_gain_per_label_minute": record["ap_gain_per_label_minute"],
               "label_expected_gain_per_minute": sat["expected_gain_per_minute"],
               "label_saturated": float(record["saturated"])}
    for key, value in metrics.items():
        if value is not None:
            client.log_metric(run_id, key, float(value), step=cycle)
    client.set_tag(run_id, "label.cost_source", record["source"])
    client.set_tag(run_id, "label.saturated", str(record["saturated"]).lower())


def skip_if_saturated(cfg: PipelineConfig, *, trigger: str) -> dict[str, Any] | None:
    """None when a cycle may query; else the skip, recorded in ``state/cycle_runs.jsonl``."""
    from synthloop.gating.cycle_lock import record_request

    sat = saturation(cfg)
    if not sat.saturated:
        return None
    entry = {"trigger": trigger, "outcome": "saturated", "reason": sat.reason,
             "saturation": sat.to_dict()}
    log.warning("cycle request (%s) skipped, querying stopped: %s", trigger, sat.reason)
    return record_request(Workspace.of(cfg).root / "state", entry)
