"""Shared body of the pretrain and finetune stages: train, evaluate on val, log, register.

Each call is one MLflow run holding params, the per-epoch curve, the validation metrics and the
model; the model becomes a registry version tagged with its val AP and val-set md5.
"""

from __future__ import annotations

import json
import logging
import time
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


def train_evaluate_register(cfg: PipelineConfig, *, run_name: str, tags: dict[str, str],
                            train_ds: CocoDataset, stop_ds: CocoDataset | None,
                            val: DatasetRef, train_cfg: TrainConfig,
                            init_checkpoint: Path | None, checkpoint_dir: Path,
                            parent_run_id: str | None = None,
                            extra_params: dict[str, Any] | None = None,
                            datasets: dict[str, DatasetRef] | None = None,
                            progress: bool = True) -> tuple[ModelRef, EvalResult]:
    """Train (from ``init_checkpoint`` or from the configured weights), evaluate on ``val``.

    ``datasets``: what the model was trained from ({name: ref}), logged with ``val`` as the
    run's MLflow inputs. A raise ends the run FAILED with the error (``ends_failed``).
    """
    from synthloop.detection import (build_detector, evaluate_predictions, load_checkpoint,
                                     predict_with_probs_and_features, save_checkpoint, train)
    from synthloop.detection.device import resolve_device
    from synthloop.detection.training import seed_everything
    from synthloop.gating.predictions import predictions_path, save_predictions

    num_classes = len(cfg.class_names)
    device = resolve_device(cfg.runtime.device)
    if init_checkpoint is not None:
        model = load_checkpoint(init_checkpoint, device=device)
    else:
        # New heads start from the training seed: a rerun after a crash (or a second machine)
        # trains the same M0, so the query and the labelled set are reproducible too.
        seed_everything(train_cfg.seed)
        model = build_detector(cfg=cfg.detector, num_classes=num_classes, device=device)
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
        tracking_datasets.log_datasets(cfg, run.info.run_id, {**(datasets or {}), "val": val},
                                       client)
        mlflow.log_params({**flat_params("detector", cfg.detector), **flat_params("train", train_cfg),
                           "train.num_images": len(train_ds.images), "runtime.device": str(device),
                           "val.md5": val.md5, **(extra_params or {})})

        cpu = {"start": time.process_time(), "monitor": 0.0}
        monitor: list[dict[str, float]] = []

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            # epoch_loss* are training losses; epoch_AP* score the early-stopping set
            # (a held-out slice of the renders), never the validation set.
            mlflow.log_metrics({f"epoch_{k}": float(v) for k, v in metrics.items()
                                if isinstance(v, (int, float))}, step=epoch)
            if train_cfg.monitor_val and "AP" in metrics:
                # For the record only (val AP against training CPU time); selection and
                # stopping never see it. Its own evaluation time is not counted.
                from synthloop.detection import evaluate

                train_cpu = time.process_time() - cpu["start"] - cpu["monitor"]
                t = time.process_time()
                val_m = evaluate(model, val_ds, batch_size=cfg.active.batch_size, progress=False)
                cpu["monitor"] += time.process_time() - t
                row = {"epoch": epoch, "step": metrics.get("step", 0.0),
                       "train_cpu_seconds": train_cpu, "train_seconds": metrics.get("seconds", 0.0),
                       **{f"val_{k}": v for k, v in val_m.items()}}
                monitor.append(row)
                mlflow.log_metrics({f"monitor_{k}": float(v) for k, v in row.items()}, step=epoch)
                atomic_write_text(checkpoint_dir / "monitor.json", json.dumps(monitor, indent=1))
                log.info("%s epoch %d: monitor val AP50 %.3f after %.1f CPU min", run_name, epoch,
                         val_m["AP50"], train_cpu / 60)
            log.info("%s epoch %d: loss %.3f%s", run_name, epoch, metrics.get("loss", float("nan")),
                     f", early-stopping set AP50 {metrics['AP50']:.3f}" if "AP50" in metrics else "")

        t0 = time.perf_counter()
        result = train(model, train_ds, cfg=train_cfg, val_ds=stop_ds, checkpoint_dir=checkpoint_dir,
                       progress=progress, on_epoch=on_epoch, runtime=cfg.runtime)
        train_s = time.perf_counter() - t0
        # Said in the report when a time cap, not the step budget, ended training.
        planned = train_cfg.epochs * -(-len(train_ds.images) // train_cfg.batch_size)
        train_stats = {"train_steps": float(result.steps), "train_planned_steps": float(planned),
                       "train_time_capped": float(result.stop_reason == "max_minutes")}
        if result.stop_reason == "max_minutes":
            log.warning("%s: stopped at its %.0f-minute cap after %d of %d steps; the model is "
                        "undertrained (raise %s.max_minutes or use a faster machine)", run_name,
                        train_cfg.max_minutes, result.steps, planned,
                        "pretrain" if run_name == "pretrain" else "finetune")
        # Keep the per-image detections: the gate bootstraps AP from them (no second pass).
        predictions = predict_with_probs_and_features(model, val_ds, progress=False,
                                                      batch_size=cfg.active.batch_size)
        metrics = evaluate_predictions(val_ds, predictions)
        save_predictions(predictions_path(cfg.workspace.resolve(), run.info.run_id, val.md5),
                         predictions)
        ev = EvalResult(metrics={k: float(v) for k, v in metrics.items()}, dataset_md5=val.md5,
                        num_images=len(val_ds.images))
        mlflow.log_metrics({f"val_{k}": v for k, v in ev.metrics.items()})
        mlflow.log_metrics({"train_seconds": train_s, **train_stats})
        ckpt = checkpoint_dir / tracking.CHECKPOINT_NAME
        save_checkpoint(model, ckpt, cfg=cfg.detector, num_classes=num_classes,
                        extra={"class_names": cfg.class_names,
                               **({"backbone_weights_sha256": backbone_sha} if backbone_sha else {})})
        export_files = None
        if cfg.export.enabled and cfg.detector.backend == "torchvision":
            from synthloop.detection.export import export_onnx

            # The scorer of this very version, beside its checkpoint (detection/export.py).
            export_files = export_onnx(model.cpu(), checkpoint_dir / "export")
        model_uri = tracking.log_detector(ckpt, export_files=export_files)
        version = register_version(client, cfg.registered_model_name, model_uri, run.info.run_id,
                                   tags={**tags, "val_AP": f"{ev.metrics.get('AP', 0.0):.4f}",
                                         "val_md5": val.md5})
        log.info("%s: val AP %.3f AP50 %.3f (%d steps, %.0f s) -> registry version %s", run_name,
                 ev.metrics.get("AP", 0.0), ev.metrics.get("AP50", 0.0), result.steps, train_s, version)
    ref = ModelRef(run_id=run.info.run_id, uri=model_uri, version=version,
                   metrics={**ev.metrics, **train_stats})
    return ref, ev
