"""Per-image detections on the validation set, kept so the gate can bootstrap without rerunning
the models: one ``.npz`` per (MLflow run, val-set md5) under ``<workspace>/state/val_predictions``.

Boxes are (N, 4) float32 [x1, y1, x2, y2] pixels in the original image (as the detector returns
them); labels (N,) int64 category ids; scores (N,) float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from synthloop.ragged_npz import load_ragged, save_ragged
# The detections protocol and record are the metrics module's (one definition, torch-free).
from synthloop.metrics import Detections as HasDetections
from synthloop.metrics import ImageDetections, as_detections

__all__ = ["HasDetections", "ImageDetections", "as_detections", "load_predictions",
           "predictions_path", "save_predictions"]


def predictions_path(workspace_root: Path, run_id: str, val_md5: str) -> Path:
    """Where the predictions of ``run_id``'s model on val version ``val_md5`` are cached."""
    return Path(workspace_root) / "state" / "val_predictions" / f"{run_id}-{val_md5[:16]}.npz"


def save_predictions(path: Path, predictions: Sequence[HasDetections]) -> Path:
    """Write detections of every image (images without detections included) atomically."""
    dets = as_detections(predictions)  # (N, 4) float32, (N,) int64, (N,) float32 each
    return save_ragged(path, [d.image_id for d in dets], [len(d.scores) for d in dets],
                       {"boxes": [d.boxes for d in dets], "labels": [d.labels for d in dets],
                        "scores": [d.scores for d in dets]},
                       empty={"boxes": np.zeros((0, 4), np.float32),
                              "labels": np.zeros(0, np.int64), "scores": np.zeros(0, np.float32)})


def load_predictions(path: Path) -> list[ImageDetections]:
    ids, r, _ = load_ragged(path, ["boxes", "labels", "scores"])
    return [ImageDetections(int(i), b, l, s)
            for i, b, l, s in zip(ids, r["boxes"], r["labels"], r["scores"])]
