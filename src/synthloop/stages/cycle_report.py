"""Stage: the cycle's report, one self-contained HTML page (reports/cycle_report.py renders it).

Made at the end of every cycle (``pipeline.run_cycle``, after the gate) from the stage records
under ``state/cycle_<t>/`` (the earlier cycles' give the curve), the cycle run's MLflow metrics,
the queried images with their new labels drawn, the gate run's ``gate_report.png`` and the
monitor's checks since the previous cycle. Written to ``state/cycle_<t>/cycle_report.html`` and
logged as the artifact ``cycle_report.html`` of the cycle's run; the run's tag ``report`` names
it and its description links it.

AP and AP50 intervals: each cycle's model on the validation set, bootstrapped over the gate's
image resamples (``gate.bootstrap_resamples``, ``confidence``, ``bootstrap_seed``) from the
predictions the training stage cached; computed once per model and kept in that cycle's
``report.json`` (with the report's own cost in seconds). A model evaluated on another
validation-set version gets no interval (its AP would describe other images).

Evidence other stages may add is shown when present: metrics of the cycle's run named
``sim_to_real_*`` (the sim-to-real gap, issue 16 part 2, with the fine-tune's render share
``finetune_synthetic_share`` it may steer) and a ``failure_analysis.json`` in the
cycle's state (part 1); without them the page says "not measured" / "not enabled".

A report that cannot be made is a warning and the tag ``report.error``, never a failed cycle:
the gate has already decided and moved the alias by then.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from synthloop import tracking
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.io_utils import atomic_write_text
from synthloop.reports.cycle_report import CycleRecords, HistoryRow, Thumbnail, render_html
from synthloop.stages.label_cost import RECORD as LABEL_COST_RECORD
from synthloop.stages.workspace import Workspace, read_record, write_record
from synthloop.tracking_recovery import NOTE_TAG, describe_error

log = logging.getLogger(__name__)
REPORT = "cycle_report.html"
RECORD = "report.json"
TAG = "report"
ERROR_TAG = "report.error"
MAX_THUMBNAILS = 24
MAX_CHECKS = 5
SIM_TO_REAL_PREFIX = "sim_to_real_"
MIX_SHARE = "finetune_synthetic_share"  # stages/finetune.py: shown with the gap
STAMP = "%Y%m%dT%H%M%SZ"  # the monitor's check stamps: strings that sort by time


def run(cfg: PipelineConfig, *, cycle: int, parent_run_id: str) -> dict[str, Any]:
    """Make, write and log cycle ``cycle``'s report; returns its record (path, seconds)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    path = Workspace.of(cfg).cycle_dir(cycle) / REPORT
    client = MlflowClient()
    try:
        exp_id = tracking.setup(cfg)
        records = gather(cfg, cycle, parent_run_id, client, exp_id)
        atomic_write_text(path, render_html(records))
        client.log_artifact(parent_run_id, str(path))
        link(client, exp_id, parent_run_id, cycle)
        if ERROR_TAG in client.get_run(parent_run_id).data.tags:  # an earlier try's
            client.delete_tag(parent_run_id, ERROR_TAG)
    except Exception as exc:  # a courtesy to the reader: never fail a decided cycle over it
        log.warning("cycle %d: no report (%s)", cycle, describe_error(exc))
        try:
            client.set_tag(parent_run_id, ERROR_TAG, describe_error(exc))
        except Exception as tag_error:  # noqa: BLE001 - a store outage: the warning says it
            log.warning("cycle %d: could not tag the report's error: %s", cycle, tag_error)
        return {"cycle": cycle, "error": describe_error(exc)}
    done = {"cycle": cycle, "path": str(path), "artifact": REPORT,
            "made": datetime.now(timezone.utc).strftime(STAMP),
            "seconds": round(time.perf_counter() - t0, 3),
            "cpu_seconds": round(time.process_time() - cpu0, 3)}
    update_record(cfg, cycle, done)
    log.info("cycle %d: report %s (%.1f s)", cycle, path, done["seconds"])
    return done


def update_record(cfg: PipelineConfig, cycle: int, values: dict[str, Any]) -> None:
    path = Workspace.of(cfg).cycle_dir(cycle) / RECORD
    write_record(path, {**(read_record(path) or {}), **values})


def link(client: MlflowClient, exp_id: str, run_id: str, cycle: int) -> None:
    """The run's tag names the artifact; its description (MLflow's note) links to it."""
    client.set_tag(run_id, TAG, REPORT)
    line = (f"Cycle {cycle} report: [{REPORT}](#/experiments/{exp_id}/runs/{run_id}/artifacts/"
            f"{REPORT}) (one self-contained HTML page: gate evidence, AP by cycle, the query "
            "batch, labels and their cost, drift).")
    note = client.get_run(run_id).data.tags.get(NOTE_TAG, "")
    if REPORT not in note:
        client.set_tag(run_id, NOTE_TAG, f"{note}\n\n{line}" if note else line)


def gather(cfg: PipelineConfig, cycle: int, run_id: str, client: MlflowClient,
           exp_id: str) -> CycleRecords:
    """The page's inputs, from the workspace's records and the tracking store."""
    ws = Workspace.of(cfg)
    d = ws.cycle_dir(cycle)
    query, label = read_record(d / "query.json") or {}, read_record(d / "label.json") or {}
    thumbs, left_out = thumbnails(cfg, query)
    metrics = dict(client.get_run(run_id).data.metrics)
    history, note = curve(cfg, cycle)
    return CycleRecords(
        pipeline=cfg.name, cycle=cycle, run_id=run_id, run_metrics=metrics, history=history,
        gate=read_record(d / "gate.json") or {}, query=query, label=label,
        label_cost=read_record(d / LABEL_COST_RECORD),
        class_names=list(cfg.class_names), thumbnails=thumbs, thumbnails_left_out=left_out,
        gate_figure=gate_figure(client, exp_id, run_id), monitor_checks=monitor_checks(cfg, cycle),
        sim_to_real=gap_metrics(metrics),
        failure_analysis=read_record(d / "failure_analysis.json"), interval_note=note,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def gap_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The run's ``sim_to_real_*`` metrics, and the render share of its fine-tune when renders
    were mixed in or the gap was measured (a share of 0 next to no gap says nothing)."""
    gap = {k: v for k, v in metrics.items() if k.startswith(SIM_TO_REAL_PREFIX)}
    if MIX_SHARE in metrics and (gap or metrics[MIX_SHARE] > 0):
        gap[MIX_SHARE] = metrics[MIX_SHARE]
    return gap


def curve(cfg: PipelineConfig, cycle: int) -> tuple[list[HistoryRow], str]:
    """Cycles 0..``cycle`` with their AP/AP50 intervals, and what the intervals are."""
    ws, g = Workspace.of(cfg), cfg.gate
    rows, val = [], None
    for t in range(cycle + 1):
        cand = read_record(ws.cycle_dir(t) / "candidate.json")
        if not cand:
            continue
        gate_rec = read_record(ws.cycle_dir(t) / "gate.json") or {}
        intervals = {}
        if g.bootstrap_resamples > 0:
            val = val if val is not None else current_val(cfg)
            intervals = model_intervals(cfg, t, cand, val)
        rows.append(HistoryRow(cycle=t, version=str(cand["model"].get("version")),
                               metrics=cand["eval"]["metrics"],
                               promoted=bool(gate_rec.get("promote")), intervals=intervals))
    if g.bootstrap_resamples <= 0:
        return rows, "no intervals: gate.bootstrap_resamples is 0"
    return rows, (f"{g.confidence:.0%} percentile intervals of each model's AP and AP50 over "
                  f"{g.bootstrap_resamples} resamples of the validation images (the gate's "
                  f"resamples, seed {g.bootstrap_seed}); none for a model evaluated on another "
                  "validation set")


def current_val(cfg: PipelineConfig) -> tuple[CocoDataset | None, str]:
    """data/val and its content md5 (None, "" when there is none)."""
    from synthloop.versioning.dvc_repo import dataset_md5

    folder = Workspace.of(cfg).dataset_dir("val")
    if not (folder / "annotations.json").is_file():
        return None, ""
    return CocoDataset.load(folder / "annotations.json"), dataset_md5(folder)


def model_intervals(cfg: PipelineConfig, cycle: int, cand: dict[str, Any],
                    val: tuple[CocoDataset | None, str]) -> dict[str, tuple[float, float]]:
    """Cycle ``cycle``'s model: AP/AP50 intervals (cached in its report.json); {} when its
    predictions are gone or it was evaluated on another validation set."""
    from synthloop.gating.bootstrap import metric_intervals
    from synthloop.gating.predictions import load_predictions, predictions_path

    ds, md5 = val
    run_id, g = cand["model"]["run_id"], cfg.gate
    key = f"{run_id}-{md5}-{g.bootstrap_resamples}-{g.confidence}-{g.bootstrap_seed}"
    cached = read_record(Workspace.of(cfg).cycle_dir(cycle) / RECORD) or {}
    if cached.get("intervals_key") == key:
        return {k: tuple(v) for k, v in cached["intervals"].items()}
    path = predictions_path(Workspace.of(cfg).root, run_id, md5)
    if ds is None or cand["eval"].get("dataset_md5") != md5 or not path.exists():
        return {}
    found = metric_intervals(ds, load_predictions(path), resamples=g.bootstrap_resamples,
                             confidence=g.confidence, seed=g.bootstrap_seed)
    update_record(cfg, cycle, {"intervals_key": key, "intervals": found})
    return found


def thumbnails(cfg: PipelineConfig, query: dict[str, Any]) -> tuple[list[Thumbnail], int]:
    """The batch's first ``MAX_THUMBNAILS`` images with their labels drawn (the pool's image,
    no boxes, for one not in the labelled set), and how many were left out."""
    from synthloop.reports.charts import draw_boxes

    ws = Workspace.of(cfg)
    ids = list(query.get("image_ids") or ())
    scores = dict(zip(ids, query.get("scores") or ()))
    new = set(query.get("new_label_ids") or ())
    sets = [CocoDataset.load(ws.dataset_dir(n) / "annotations.json") for n in ("labeled", "pool")
            if (ws.dataset_dir(n) / "annotations.json").is_file()]
    out = []
    for image_id in ids[:MAX_THUMBNAILS]:
        ds = next((s for s in sets if any(im.id == image_id for im in s.images)), None)
        if ds is None:
            continue
        image = next(im for im in ds.images if im.id == image_id)
        boxes, labels = ds.boxes_xyxy(image_id)
        names = {int(c["id"]): str(c["name"]) for c in ds.categories}
        jpeg = draw_boxes(ds.image_path(image).read_bytes(), boxes, labels.tolist(), names)
        out.append(Thumbnail(image_id, jpeg, scores.get(image_id), len(labels), image_id in new))
    return out, max(0, len(ids) - MAX_THUMBNAILS)


def gate_figure(client: MlflowClient, exp_id: str, run_id: str) -> bytes | None:
    """The PNG the gate logged in its child run of the cycle (None when it made none)."""
    runs = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' "
                              "and tags.stage = 'gate'", order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs or not any(a.path == "gate_report.png"
                           for a in client.list_artifacts(runs[0].info.run_id)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(runs[0].info.run_id, "gate_report.png",
                                              tmp)).read_bytes()


def monitor_checks(cfg: PipelineConfig, cycle: int) -> list[dict[str, Any]]:
    """The monitor's checks since the previous cycle's report (the last ``MAX_CHECKS``;
    without an earlier report, the latest check only)."""
    folder = Workspace.of(cfg).root / "state" / "monitor"
    paths = sorted(folder.glob("check-*.json")) if folder.is_dir() else []
    since = (read_record(Workspace.of(cfg).cycle_dir(cycle - 1) / RECORD) or {}).get("made")
    if since:
        paths = [p for p in paths if p.stem.removeprefix("check-") > since]
    else:
        paths = paths[-1:]
    return [r for r in (read_record(p) for p in paths[-MAX_CHECKS:]) if r]
