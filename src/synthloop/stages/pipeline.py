"""The pipeline as a sequence of stage calls: data -> pretrain -> DAL cycles.

Every call goes through a ``runner(name, fn, *args, **kwargs)``. The default runs the stage in
this process; flows/ passes a runner that makes each call a Prefect task, so the CLI and the
Prefect flows share this one sequence (and the library never imports Prefect).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from mlflow import MlflowClient

from synthloop import lineage, tracking, tracking_datasets, tracking_recovery
from synthloop.artifacts import DatasetRef, ModelRef
from synthloop.config import PipelineConfig
from synthloop.gating.cycle_lock import cycle_lock
from synthloop.gating.registry import CHAMPION, get_alias_version, tag_orphaned_versions
from synthloop.stages import (cad_records, cycle_report, finetune, gate, label, label_cost,
                              learning_curve, pretrain, query, render, score, sim_to_real, steer)
from synthloop.stages.workspace import Workspace, read_record, write_record
from synthloop.versioning.remote import commit_and_push

log = logging.getLogger(__name__)
Runner = Callable[..., Any]


def call(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """The plain runner: run the stage here and now."""
    return fn(*args, **kwargs)


@dataclass(frozen=True)
class CycleSummary:
    cycle: int
    labels_total: int
    labels_new: int
    metrics: dict[str, float]
    promoted: bool
    model_version: str
    reason: str


def version_data(cfg: PipelineConfig, message: str, tag: str) -> str:
    return commit_and_push(cfg, message, tag=tag)


def prepare_data(cfg: PipelineConfig, runner: Runner = call) -> dict[str, DatasetRef]:
    """Render (or find) the synthetic set, the validation set and the pool; version them.

    The DVC commit is skipped when the three sets have the md5s it recorded last time (every
    later change to data/ is committed by the stage that made it: label, ingest).
    """
    refs = {name: runner(f"render-{name}", render.run, cfg, name)
            for name in ("synthetic", "val", "pool")}
    record_path = Workspace.of(cfg).root / "state" / "datasets.json"
    md5s = {name: ref.md5 for name, ref in refs.items()}
    if read_record(record_path) != md5s:
        runner("version-data", version_data, cfg, "datasets: synthetic, val, pool", "datasets")
        write_record(record_path, md5s)
    return refs


def finished_cycle(cfg: PipelineConfig, cycle: int) -> tuple[ModelRef, CycleSummary] | None:
    """A cycle whose records are all written, as ``run_cycle`` would return it; else None."""
    d = Workspace.of(cfg).cycle_dir(cycle)
    cand, gate_rec, lab = (read_record(d / name) for name in
                           ("candidate.json", "gate.json", "label.json"))
    if not (cand and gate_rec and lab):
        return None
    model = ModelRef(**cand["model"])
    metrics = {**cand["eval"]["metrics"],
               **{k: v for k, v in model.metrics.items() if k.startswith("train_")}}
    return model, CycleSummary(cycle, int(lab["total"]), len(lab["new"]),
                               metrics, bool(gate_rec["promote"]),
                               str(model.version), gate_rec["reason"])


def cycle_run_id(cfg: PipelineConfig, cycle: int) -> str:
    """The parent MLflow run of a cycle (created once; reopened when a crashed cycle reruns)."""
    path = Workspace.of(cfg).cycle_dir(cycle) / "run.json"
    rec = read_record(path)
    exp_id = tracking.setup(cfg)
    if rec:
        tracking_recovery.reopen_run(MlflowClient(), rec["run_id"])
        return rec["run_id"]
    a = cfg.active
    run = MlflowClient().create_run(exp_id, run_name=f"cycle-{cycle}",
                                    tags={"stage": "cycle", "cycle": str(cycle),
                                          **tracking.process_tags()})
    client = MlflowClient()
    for key, value in {"strategy": a.strategy, **a.strategy_params(), "k": a.k,
                       "scope": a.scope, "seed": a.seed + cycle}.items():
        client.log_param(run.info.run_id, f"active.{key}", value)
    write_record(path, {"run_id": run.info.run_id})
    return run.info.run_id


def run_cycle(cfg: PipelineConfig, cycle: int, *, previous: ModelRef, data: dict[str, DatasetRef],
              runner: Runner = call, progress: bool = True) -> tuple[ModelRef, CycleSummary]:
    """One DAL cycle: score -> query -> label -> finetune (+ evaluate) -> gate.

    The cycle's MLflow run holds the pool it scored and the labelled and validation sets as
    inputs; a stage that raises ends it FAILED with the error (``ends_failed``).
    """
    parent = cycle_run_id(cfg, cycle)
    with tracking_recovery.ends_failed(parent):
        return _run_cycle(cfg, cycle, parent, previous=previous, data=data, runner=runner,
                          progress=progress)


def _run_cycle(cfg: PipelineConfig, cycle: int, parent: str, *, previous: ModelRef,
               data: dict[str, DatasetRef], runner: Runner, progress: bool
               ) -> tuple[ModelRef, CycleSummary]:
    tracking_datasets.log_datasets(cfg, parent, {"pool": data["pool"]})
    have = label.labeled_ids(cfg)
    scores_path = runner("score", score.run, cfg, cycle=cycle, model=previous, pool=data["pool"],
                         labeled_ids=have, progress=progress)
    batch = runner("query", query.run, cfg, cycle=cycle, scores_path=scores_path, model=previous,
                   pool=data["pool"], labeled_ids=have, parent_run_id=parent)
    runner("log-query-batch", lineage.log_query_batch, cfg, parent, batch)
    labeled = runner("label", label.run, cfg, cycle=cycle, batch=batch)
    if cfg.steer.enabled:  # M_{t-1}'s failures steer a top-up render for this fine-tune
        runner("steer", steer.run, cfg, cycle=cycle, model=previous, synthetic=data["synthetic"],
               val=data["val"], parent_run_id=parent, progress=progress)
    gap = None  # the gap in M_{t-1}'s features, before the fine-tune it may steer
    if cfg.sim_to_real.enabled or cfg.finetune_mix.mode == "gap_rule":
        gap = runner("sim-to-real", sim_to_real.run, cfg, cycle=cycle, model=previous,
                     synthetic=data["synthetic"], pool=data["pool"], labeled=labeled,
                     parent_run_id=parent, progress=progress)
    candidate, ev = runner("finetune", finetune.run, cfg, cycle=cycle, previous=previous,
                           labeled=labeled, val=data["val"], parent_run_id=parent,
                           progress=progress, synthetic=data.get("synthetic"), gap=gap)
    tracking.setup(cfg)  # a resumed cycle may have opened no stage that would have set it
    tracking_datasets.log_datasets(cfg, parent, {"labeled": labeled, "val": data["val"]})
    decision = runner("gate", gate.run, cfg, cycle=cycle, candidate=candidate, candidate_eval=ev,
                      parent_run_id=parent)
    # seconds of labelling, AP gain per labelling minute, the stop rule (label_cost.json, MLflow)
    runner("label-cost", label_cost.after_gate, cfg, cycle=cycle, parent_run_id=parent)
    tracking.setup(cfg)
    client = MlflowClient()
    client.log_metric(parent, "labels_total", float(labeled.num_images))
    client.log_metric(parent, "labels_new", float(len(batch.new_label_ids)))
    for k, v in ev.metrics.items():
        client.log_metric(parent, f"val_{k}", v)
    # last: the page shows the run's metrics as logged (stages/cycle_report.py)
    runner("cycle-report", cycle_report.run, cfg, cycle=cycle, parent_run_id=parent)
    client.set_terminated(parent)
    metrics = {**ev.metrics, **{k: v for k, v in candidate.metrics.items() if k.startswith("train_")}}
    return candidate, CycleSummary(cycle, labeled.num_images, len(batch.new_label_ids), metrics,
                                   bool(decision["promote"]), str(candidate.version),
                                   decision["reason"])


def run_pipeline(cfg: PipelineConfig, *, runner: Runner = call, cycles: int | None = None,
                 progress: bool = True) -> list[CycleSummary]:
    """Data, M0, then ``cycles`` DAL cycles (default: cfg.active.cycles). Reruns resume.

    Holds the workspace's cycle lock (gating/cycle_lock.py): while another run trains or
    promotes, this one waits ``trigger.lock_wait_s`` and then raises ``CycleBusy``.
    """
    with cycle_lock(Workspace.of(cfg).root / "state", trigger="pipeline",
                    wait_s=cfg.trigger.lock_wait_s):
        Workspace.of(cfg).sweep_partial_files()  # a killed run's temp files (we hold the lock)
        close_interrupted(cfg)
        curve = learning_curve.pipeline_run_id(cfg)
        with tracking_recovery.ends_failed(curve):
            rows = _run_pipeline(cfg, runner=runner, cycles=cycles, progress=progress, curve=curve)
        MlflowClient().set_terminated(curve)
        return rows


def recorded_versions(cfg: PipelineConfig) -> set[str]:
    """Registry versions the workspace's stage records name (M0 and every cycle's candidate)."""
    records = (read_record(p) for p in Workspace.of(cfg).root.glob("state/cycle_*/candidate.json"))
    return {str(rec["model"]["version"]) for rec in records if rec}


def close_interrupted(cfg: PipelineConfig) -> None:
    """What a killed run left open in MLflow: end its RUNNING runs as KILLED, tag the versions
    it registered but no stage recorded as orphaned. Call holding the cycle lock, before any
    stage (a live process's runs are left alone, see tracking_recovery.py)."""
    exp_id = tracking.setup(cfg)
    client = MlflowClient()
    tracking_recovery.mark_interrupted_runs(client, exp_id)
    orphans = tag_orphaned_versions(client, cfg.registered_model_name,
                                    recorded=recorded_versions(cfg))
    if orphans:
        log.warning("registry: versions %s of %s were registered by killed runs and never "
                    "gated; tagged orphaned", ", ".join(orphans), cfg.registered_model_name)


def add_to_curve(cfg: PipelineConfig, curve: str | None, row: CycleSummary) -> None:
    """Cycle ``row`` on the pipeline run's learning curve, its gate decision in the table."""
    if curve is None:
        return
    tracking.setup(cfg)
    learning_curve.log_cycle(curve, row.cycle, row.metrics, labels_used=row.labels_total,
                             promoted=row.promoted)
    learning_curve.log_decisions(cfg, curve)


def _run_pipeline(cfg: PipelineConfig, *, runner: Runner, cycles: int | None,
                  progress: bool, curve: str | None = None) -> list[CycleSummary]:
    data = prepare_data(cfg, runner)
    model = runner("pretrain", pretrain.run, cfg, data["synthetic"], data["val"], progress=progress)
    rec = read_record(Workspace.of(cfg).cycle_dir(0) / "gate.json") or {}
    rows = [CycleSummary(0, 0, 0, dict(model.metrics), bool(rec.get("promote")),
                         str(model.version), rec.get("reason", ""))]
    add_to_curve(cfg, curve, rows[0])
    for t in range(1, (cfg.active.cycles if cycles is None else cycles) + 1):
        done = finished_cycle(cfg, t)  # finished cycles are not re-entered stage by stage
        if not done:  # a CAD retrain promoted since cycle t-1: M_t starts from it
            model = cad_records.promoted_after(cfg, t - 1) or model
        model, row = done or run_cycle(cfg, t, previous=model, data=data, runner=runner,
                                       progress=progress)
        rows.append(row)
        add_to_curve(cfg, curve, row)
    return rows


def champion_summary(cfg: PipelineConfig) -> dict[str, Any] | None:
    tracking.setup(cfg)
    client = MlflowClient()
    champ = get_alias_version(client, cfg.registered_model_name, CHAMPION)
    if champ is None:
        return None
    metrics = client.get_run(champ.run_id).data.metrics
    return {"version": str(champ.version), "AP": metrics.get("val_AP"),
            "AP50": metrics.get("val_AP50")}


def format_table(rows: list[CycleSummary]) -> str:
    head = f"{'cycle':>5}  {'labels':>6}  {'new':>4}  {'AP':>6}  {'AP50':>6}  {'version':>7}  promoted"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.cycle:>5}  {r.labels_total:>6}  {r.labels_new:>4}  "
                     f"{r.metrics.get('AP', float('nan')):>6.3f}  "
                     f"{r.metrics.get('AP50', float('nan')):>6.3f}  {r.model_version:>7}  "
                     f"{'yes' if r.promoted else 'no'}")
    for r in rows:  # a time cap is a machine-speed accident: say it where the numbers are
        if r.metrics.get("train_time_capped"):
            what = "pretraining" if r.cycle == 0 else f"cycle {r.cycle}'s fine-tuning"
            lines.append(f"NOTE: {what} hit its time cap after {r.metrics['train_steps']:.0f} of "
                         f"{r.metrics['train_planned_steps']:.0f} planned steps, so its AP is lower "
                         f"than the recipe gives (raise max_minutes in the pipeline, or run on a "
                         f"less busy machine)")
    return "\n".join(lines)


def run_report(cfg: PipelineConfig, rows: list[CycleSummary], seconds: float) -> str:
    """What a finished run prints (the CLI and flows/demo.py): the cycle table, the champion,
    the wall time and where to look at runs and dataset versions."""
    lines = [""]
    if cfg.proxy_real:
        lines.append("NOTE: pool and validation images are a rendered PROXY of real photos "
                     "(other materials, backgrounds, lighting, sensor noise); bring real photos "
                     "for real figures.")
    lines.append(format_table(rows))
    champ = champion_summary(cfg)
    if champ:
        lines.append(f"\nchampion: {cfg.registered_model_name} v{champ['version']} "
                     f"(val AP {champ['AP']:.3f}, AP50 {champ['AP50']:.3f})")
    lines += [f"wall time: {seconds / 60:.1f} min",
              f"look at the runs:  mlflow ui --backend-store-uri {cfg.tracking_uri}",
              f"                   then open {tracking.runs_url(cfg)}",
              f"dataset versions:  git -C {cfg.workspace} log --oneline --decorate"]
    return "\n".join(lines)
