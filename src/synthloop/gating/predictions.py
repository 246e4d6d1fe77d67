"""Per-image detections on the validation set, kept so the gate can bootstrap without rerunning
the models: one ``.npz`` per (MLflow run, val-set md5) under ``<workspace>/state/val_predictions``.

Boxes are (N, 4) float32 [x1, y1, x2, y2] pixels in the original image (as the detector returns
them); labels (N,) int64 category ids; scores (N,) float32.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from synthloop.io_utils import atomic_write_bytes


class HasDetections(Protocol):
    image_id: int
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections (what COCO evaluation needs; fits ``evaluate_predictions``)."""

    image_id: int
    boxes: np.ndarray  # (N, 4) float32 [x1, y1, x2, y2] pixels
    labels: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float32


def predictions_path(workspace_root: Path, run_id: str, val_md5: str) -> Path:
    """Where the predictions of ``run_id``'s model on val version ``val_md5`` are cached."""
    return Path(workspace_root) / "state" / "val_predictions" / f"{run_id}-{val_md5[:16]}.npz"


def save_predictions(path: Path, predictions: Sequence[HasDetections]) -> Path:
    """Write detections of every image (images without detections included) atomically."""
    counts = np.array([len(np.asarray(p.scores)) for p in predictions], dtype=np.int64)
    boxes = [np.asarray(p.boxes, np.float32).reshape(-1, 4) for p in predictions]
    buf = io.BytesIO()
    np.savez(buf, image_ids=np.array([int(p.image_id) for p in predictions], dtype=np.int64),
             counts=counts,
             boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
             labels=np.concatenate([np.asarray(p.labels, np.int64).reshape(-1)
                                    for p in predictions]) if predictions else np.zeros(0, np.int64),
             scores=np.concatenate([np.asarray(p.scores, np.float32).reshape(-1)
                                    for p in predictions]) if predictions else np.zeros(0, np.float32))
    return atomic_write_bytes(path, buf.getvalue())


def load_predictions(path: Path) -> list[ImageDetections]:
    with np.load(path) as z:
        splits = np.cumsum(z["counts"])[:-1]
        boxes = np.split(z["boxes"], splits)
        labels = np.split(z["labels"], splits)
        scores = np.split(z["scores"], splits)
        ids = z["image_ids"].tolist()
    return [ImageDetections(int(i), b, l, s) for i, b, l, s in zip(ids, boxes, labels, scores)]


def as_detections(predictions: Sequence[HasDetections]) -> list[ImageDetections]:
    """Drop everything but boxes, labels and scores (e.g. from ``ImageScores``)."""
    return [ImageDetections(int(p.image_id), np.asarray(p.boxes, np.float32).reshape(-1, 4),
                            np.asarray(p.labels, np.int64).reshape(-1),
                            np.asarray(p.scores, np.float32).reshape(-1)) for p in predictions]
