"""Tiny validation sets and detections for gate tests (100x100 images, boxes near the truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import mlflow
from mlflow import MlflowClient

from synthloop import tracking
from synthloop.artifacts import EvalResult, ModelRef
from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
from synthloop.detection.evaluation import evaluate_predictions
from synthloop.gating.predictions import ImageDetections, predictions_path, save_predictions
from synthloop.gating.registry import register_version


def val_set(n: int = 30, seed: int = 0) -> tuple[CocoDataset, list[tuple[float, ...]]]:
    """n 100x100 images with 1-2 boxes each (image 3 has none: images without boxes count)."""
    rng = np.random.default_rng(seed)
    images, anns, boxes = [], [], []
    for i in range(n):
        images.append(CocoImage(i + 1, f"{i}.jpg", 100, 100))
        for _ in range(0 if i == 3 else int(rng.integers(1, 3))):
            x, y = rng.uniform(0, 60, 2)
            w, h = rng.uniform(15, 35, 2)
            anns.append(CocoAnnotation(len(anns) + 1, i + 1, 1, (x, y, w, h), w * h))
            boxes.append((i + 1, x, y, x + w, y + h))
    return CocoDataset(images, anns, categories_for(["part"]), Path(".")), boxes


def detections(ds: CocoDataset, boxes, *, jitter: float, seed: int, misses: float = 0.0
               ) -> list[ImageDetections]:
    """Boxes [x1, y1, x2, y2] near the ground truth (+ one false positive an image)."""
    rng = np.random.default_rng(seed)
    out = []
    for im in ds.images:
        own = [np.array(b[1:]) + rng.normal(0, jitter, 4) for b in boxes
               if b[0] == im.id and rng.uniform() >= misses]
        fp = [np.array([5, 5, 30, 30]) + rng.uniform(0, 60, 1)]
        det = np.array(own + fp, np.float32)
        scores = np.concatenate([rng.uniform(0.6, 1.0, len(own)), [0.3]]).astype(np.float32)
        out.append(ImageDetections(im.id, det, np.ones(len(det), np.int64), scores))
    return out


def register(cfg, ds, preds, md5: str, *, recorded_md5: str | None = None):
    """A registered version whose run recorded val metrics on ``recorded_md5`` (default md5)."""
    tracking.setup(cfg)
    ap = evaluate_predictions(ds, preds)["AP"]
    with mlflow.start_run() as run:
        mlflow.log_param("val.md5", recorded_md5 or md5)
        mlflow.log_metric("val_AP", 0.99 if recorded_md5 else ap)
    save_predictions(predictions_path(cfg.workspace, run.info.run_id, md5), preds)
    version = register_version(MlflowClient(), cfg.registered_model_name,
                               f"runs:/{run.info.run_id}/model", run.info.run_id, {})
    return (ModelRef(run_id=run.info.run_id, uri=f"runs:/{run.info.run_id}/model",
                     version=version), EvalResult({"AP": ap}, md5, len(ds.images)))
