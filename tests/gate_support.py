"""Tiny validation sets and detections for gate tests (100x100 images, boxes near the truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import mlflow
from mlflow import MlflowClient

from synthloop import tracking
from synthloop.artifacts import EvalResult, ModelRef
from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
from synthloop.metrics import evaluate_predictions
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


def exact_set(n: int, classes: tuple[str, ...] = ("part",)) -> CocoDataset:
    """n 100x100 images, each with exactly one box of every class (category ids 1, 2, ...)."""
    images, anns = [], []
    for i in range(n):
        images.append(CocoImage(i + 1, f"{i}.jpg", 100, 100))
        for c in range(len(classes)):
            anns.append(CocoAnnotation(len(anns) + 1, i + 1, c + 1,
                                       (5.0 + 40 * c, 10.0 + 3 * i, 30.0, 25.0), 750.0))
    return CocoDataset(images, anns, categories_for(list(classes)), Path("."))


def exact_detections(ds: CocoDataset, hits: dict[int, set[int]]) -> list[ImageDetections]:
    """Exact copies (IoU 1, score 0.9) of the category-``c`` boxes on images ``hits[c]``;
    nothing else: every detection is a true positive at every IoU threshold."""
    by_image = ds.annotations_by_image()
    out = []
    for im in ds.images:
        found = [a for a in by_image.get(im.id, ()) if im.id in hits.get(a.category_id, ())]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a.bbox for a in found)],
                         np.float32).reshape(-1, 4)
        out.append(ImageDetections(im.id, boxes, np.array([a.category_id for a in found],
                                                          np.int64),
                                   np.full(len(found), 0.9, np.float32)))
    return out


def hand_ap(found: int, total: int) -> float:
    """COCO AP, by hand, of detections that are exact copies of ``found`` of ``total`` boxes and
    nothing else: precision is 1 up to recall found/total and there is no detection beyond, so
    of COCO's 101 recall points 0, .01, ..., 1 the ones <= found/total count 1, the rest 0 (at
    every IoU threshold alike). No detection at all: 0."""
    return 0.0 if found == 0 else ((100 * found) // total + 1) / 101


def register(cfg, ds, preds, md5: str, *, recorded_md5: str | None = None, cache: bool = True):
    """A registered version whose run recorded val metrics (AP, AP50, AP75, AP_<class>, as the
    training stage logs them) on ``recorded_md5`` (default md5; another md5 records AP 0.99
    only), with its predictions on ``md5`` cached as the training stage caches them (``cache``
    False: none cached, the gate has to load the model, which these versions do not have)."""
    tracking.setup(cfg)
    metrics = evaluate_predictions(ds, preds)  # an input of the gate, not an expectation
    with mlflow.start_run() as run:
        mlflow.log_param("val.md5", recorded_md5 or md5)
        mlflow.log_metrics({"val_AP": 0.99} if recorded_md5 else
                           {f"val_{k}": v for k, v in metrics.items()})
    if cache:
        save_predictions(predictions_path(cfg.workspace, run.info.run_id, md5), preds)
    version = register_version(MlflowClient(), cfg.registered_model_name,
                               f"runs:/{run.info.run_id}/model", run.info.run_id, {})
    return (ModelRef(run_id=run.info.run_id, uri=f"runs:/{run.info.run_id}/model",
                     version=version), EvalResult(metrics, md5, len(ds.images)))


def save_val_set(cfg, ds: CocoDataset) -> str:
    """Write ``ds`` as the workspace's data/val; returns its md5 (what the gate checks)."""
    from synthloop.versioning.dvc_repo import dataset_md5

    val_dir = cfg.workspace / "data" / "val"
    ds.with_image_root(val_dir / "images").save(val_dir / "annotations.json")
    return dataset_md5(val_dir)
