"""Shared body of the pretrain and finetune stages: train, evaluate on val, log, register.

Each call is one MLflow run holding params, the per-epoch curve, the validation metrics and the
model; the model becomes a registry version tagged with its val AP and val-set md5.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from synthloop import tracking, tracking_datasets, tracking_recovery
from synthloop.artifacts import DatasetRef, EvalResult, ModelRef
from synthloop.config import PipelineConfig, TrainConfig
from synthloop.data.coco import CocoDataset
from synthloop.gating.registry import register_version
from synthloop.io_utils import atomic_write_text

log = logging.getLogger(__name__)


def flat_params(prefix: str, model: Any) -> dict[str, Any]:
    """Flatten a pydantic model into ``prefix.key`` params (MLflow compares them across runs)."""
    out: dict[str, Any] = {}
    for key, value in model.model_dump(mode="json").items():
        if isinstance(value, dict):
            for sub, v in value.items():
                out[f"{prefix}.{key}.{sub}"] = v
        else:
            out[f"{prefix}.{key}"] = value
    return out


@dataclass(frozen=True)
class TrainOutcome:
    """What training reports besides the model: steps, wall seconds and the stats logged with
    the run (``train_time_capped``: 1.0 when a time cap, not the step budget, ended training)."""
    steps: int
    seconds: float
    stats: dict[str, float]


def train_evaluate_register(cfg: PipelineConfig, *, run_name: str, tags: dict[str, str],
                            train_ds: CocoDataset, stop_ds: CocoDataset | None,
                            val: DatasetRef, train_cfg: TrainConfig,
                            init_checkpoint: Path | None, checkpoint_dir: Path,
                            parent_run_id: str | None = None,
                            extra_params: dict[str, Any] | None = None,
                            datasets: dict[str, DatasetRef] | None = None,
                            progress: bool = True) -> tuple[ModelRef, EvalResult]:
    """Train (from ``init_checkpoint`` or from the configured weights), evaluate on ``val``,
    log the model and register it: one MLflow run (``train_model`` -> ``evaluate_model`` ->
    ``log_model`` -> ``register_model``).

    ``datasets``: what the model was trained from ({name: ref}), logged with ``val`` as the
    run's MLflow inputs. A raise ends the run FAILED with the error (``ends_failed``).
    """
    from synthloop.detection.device import resolve_device

    device = resolve_device(cfg.runtime.device)
    model = initial_model(cfg, train_cfg, init_checkpoint, device)
    val_ds = CocoDataset.load(val.annotations, val.image_root)
    # The pretrained backbone file's sha256 travels in every checkpoint of its descendants.
    backbone_sha = (getattr(model, "backbone_weights_sha256", None)
                    or getattr(model, "checkpoint_extra", {}).get("backbone_weights_sha256"))
    if backbone_sha:
        tags = {**tags, "lineage.backbone_weights_sha256": backbone_sha}
    client = MlflowClient()
    run_tags = {**tags, **tracking.process_tags()}  # the run's owner; not the version's tags
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    with (mlflow.start_run(run_name=run_name, tags=run_tags) as run,
          tracking_recovery.ends_failed(run.info.run_id, client)):
        run_id = run.info.run_id
        tracking_datasets.log_datasets(cfg, run_id, {**(datasets or {}), "val": val}, client)
        mlflow.log_params({**flat_params("detector", cfg.detector), **flat_params("train", train_cfg),
                           "train.num_images": len(train_ds.images), "runtime.device": str(device),
                           "val.md5": val.md5, **(extra_params or {})})
        outcome = train_model(cfg, model, run_name=run_name, train_ds=train_ds, stop_ds=stop_ds,
                              val_ds=val_ds, train_cfg=train_cfg, checkpoint_dir=checkpoint_dir,
                              progress=progress)
        ev = evaluate_model(cfg, model, val_ds, val_md5=val.md5, run_id=run_id)
        model_uri = log_model(cfg, model, ev, outcome, checkpoint_dir=checkpoint_dir,
                              backbone_sha=backbone_sha)
        version = register_model(client, cfg, model_uri, run_id, tags=tags, ev=ev)
        log.info("%s: val AP %.3f AP50 %.3f (%d steps, %.0f s) -> registry version %s", run_name,
                 ev.metrics.get("AP", 0.0), ev.metrics.get("AP50", 0.0), outcome.steps,
                 outcome.seconds, version)
    ref = ModelRef(run_id=run_id, uri=model_uri, version=version,
                   metrics={**ev.metrics, **outcome.stats})
    return ref, ev


def initial_model(cfg: PipelineConfig, train_cfg: TrainConfig, init_checkpoint: Path | None,
                  device: Any) -> Any:
    """The model to train: ``init_checkpoint``'s, or a new one from the configured weights."""
    from synthloop.detection import build_detector, load_checkpoint
    from synthloop.detection.training import seed_everything

    if init_checkpoint is not None:
        return load_checkpoint(init_checkpoint, device=device)
    # New heads start from the training seed: a rerun after a crash (or a second machine)
    # trains the same M0, so the query and the labelled set are reproducible too.
    seed_everything(train_cfg.seed)
    return build_detector(cfg=cfg.detector, num_classes=len(cfg.class_names), device=device)


class EpochLogger:
    """The ``on_epoch`` callback of training: per-epoch metrics to MLflow and the log; with
    ``train.monitor_val``, val AP against training CPU time (monitor.json beside the checkpoints).

    The monitor is for the record only: selection and stopping never see it, and its own
    evaluation time is not counted as training CPU time.
    """

    def __init__(self, cfg: PipelineConfig, model: Any, val_ds: CocoDataset, *, run_name: str,
                 train_cfg: TrainConfig, checkpoint_dir: Path) -> None:
        self.cfg, self.model, self.val_ds, self.run_name = cfg, model, val_ds, run_name
        self.train_cfg, self.checkpoint_dir = train_cfg, checkpoint_dir
        self.cpu_start, self.monitor_cpu = time.process_time(), 0.0
        self.rows: list[dict[str, float]] = []

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        # epoch_loss* are training losses; epoch_AP* score the early-stopping set
        # (a held-out slice of the renders), never the validation set.
        mlflow.log_metrics({f"epoch_{k}": float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float))}, step=epoch)
        if self.train_cfg.monitor_val and "AP" in metrics:
            self.monitor(epoch, metrics)
        log.info("%s epoch %d: loss %.3f%s", self.run_name, epoch, metrics.get("loss", float("nan")),
                 f", early-stopping set AP50 {metrics['AP50']:.3f}" if "AP50" in metrics else "")

    def monitor(self, epoch: int, metrics: dict[str, float]) -> None:
        from synthloop.detection import evaluate

        train_cpu = time.process_time() - self.cpu_start - self.monitor_cpu
        t = time.process_time()
        val_m = evaluate(self.model, self.val_ds, batch_size=self.cfg.active.batch_size,
                         progress=False)
        self.monitor_cpu += time.process_time() - t
        row = {"epoch": epoch, "step": metrics.get("step", 0.0),
               "train_cpu_seconds": train_cpu, "train_seconds": metrics.get("seconds", 0.0),
               **{f"val_{k}": v for k, v in val_m.items()}}
        self.rows.append(row)
        mlflow.log_metrics({f"monitor_{k}": float(v) for k, v in row.items()}, step=epoch)
        atomic_write_text(self.checkpoint_dir / "monitor.json", json.dumps(self.rows, indent=1))
        log.info("%s epoch %d: monitor val AP50 %.3f after %.1f CPU min", self.run_name, epoch,
                 val_m["AP50"], train_cpu / 60)


def train_model(cfg: PipelineConfig, model: Any, *, run_name: str, train_ds: CocoDataset,
                stop_ds: CocoDataset | None, val_ds: CocoDataset, train_cfg: TrainConfig,
                checkpoint_dir: Path, progress: bool = True) -> TrainOutcome:
    """Train ``model`` in place (early stopping on ``stop_ds``), logging every epoch."""
    from synthloop.detection import train

    on_epoch = EpochLogger(cfg, model, val_ds, run_name=run_name, train_cfg=train_cfg,
                           checkpoint_dir=checkpoint_dir)
    t0 = time.perf_counter()
    result = train(model, train_ds, cfg=train_cfg, val_ds=stop_ds, checkpoint_dir=checkpoint_dir,
                   progress=progress, on_epoch=on_epoch, runtime=cfg.runtime)
    seconds = time.perf_counter() - t0
    # Said in the report when a time cap, not the step budget, ended training.
    planned = train_cfg.epochs * -(-len(train_ds.images) // train_cfg.batch_size)
    stats = {"train_steps": float(result.steps), "train_planned_steps": float(planned),
             "train_time_capped": float(result.stop_reason == "max_minutes")}
    if result.stop_reason == "max_minutes":
        log.warning("%s: stopped at its %.0f-minute cap after %d of %d steps; the model is "
                    "undertrained (raise %s.max_minutes or use a faster machine)", run_name,
                    train_cfg.max_minutes, result.steps, planned,
                    "pretrain" if run_name == "pretrain" else "finetune")
    return TrainOutcome(steps=result.steps, seconds=seconds, stats=stats)


def evaluate_model(cfg: PipelineConfig, model: Any, val_ds: CocoDataset, *, val_md5: str,
                   run_id: str) -> EvalResult:
    """COCO metrics on the validation set; the per-image detections are kept beside the
    workspace (the gate bootstraps AP from them: no second pass)."""
    from synthloop.detection import evaluate_predictions, predict_with_probs_and_features
    from synthloop.gating.predictions import predictions_path, save_predictions

    predictions = predict_with_probs_and_features(model, val_ds, progress=False,
                                                  batch_size=cfg.active.batch_size)
    metrics = evaluate_predictions(val_ds, predictions)
    save_predictions(predictions_path(cfg.workspace.resolve(), run_id, val_md5), predictions)
    return EvalResult(metrics={k: float(v) for k, v in metrics.items()}, dataset_md5=val_md5,
                      num_images=len(val_ds.images))


def log_model(cfg: PipelineConfig, model: Any, ev: EvalResult, outcome: TrainOutcome, *,
              checkpoint_dir: Path, backbone_sha: str | None) -> str:
    """Log the metrics and the model (checkpoint, plus the exported scorer when
    ``export.enabled``) to the active run; returns the logged model's URI."""
    from synthloop.detection import get_backend, save_checkpoint

    mlflow.log_metrics({f"val_{k}": v for k, v in ev.metrics.items()})
    mlflow.log_metrics({"train_seconds": outcome.seconds, **outcome.stats})
    ckpt = checkpoint_dir / tracking.CHECKPOINT_NAME
    save_checkpoint(model, ckpt, cfg=cfg.detector, num_classes=len(cfg.class_names),
                    extra={"class_names": cfg.class_names,
                           **({"backbone_weights_sha256": backbone_sha} if backbone_sha else {})})
    export_files = None
    if cfg.export.enabled and get_backend(cfg.detector.backend).exportable:
        from synthloop.detection.export import export_onnx

        # The scorer of this very version, beside its checkpoint (detection/export.py).
        export_files = export_onnx(model.cpu(), checkpoint_dir / "export")
    return tracking.log_detector(ckpt, export_files=export_files)


def register_model(client: MlflowClient, cfg: PipelineConfig, model_uri: str, run_id: str, *,
                   tags: dict[str, str], ev: EvalResult) -> str:
    """A new registry version of the pipeline's model, tagged with its val AP and val md5."""
    return register_version(client, cfg.registered_model_name, model_uri, run_id,
                            tags={**tags, "val_AP": f"{ev.metrics.get('AP', 0.0):.4f}",
                                  "val_md5": ev.dataset_md5})
