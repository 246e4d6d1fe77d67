"""Detector backends behind one interface (torchvision Faster R-CNN is the default).

``build_detector`` -> ``train`` (or ``train_one_epoch``) -> ``evaluate`` (COCO AP) ->
``predict_with_probs_and_features`` (boxes, class probabilities, P2 embedding: one forward pass).
Boxes are [x1, y1, x2, y2] pixels in the code, labels are COCO category ids 1..C (0 background).

Names are loaded on first use so that ``import synthloop.detection`` does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "build_detector": "backends",
    "open_scorer": "backends",
    "RoIHeadsWithProbs": "torchvision_backend",
    "ImageScores": "scoring",
    "predict": "scoring",
    "predict_with_probs_and_features": "scoring",
    "train": "training",
    "train_one_epoch": "training",
    "TrainResult": "training",
    "NonFiniteLossError": "training",
    "evaluate": "evaluation",
    "evaluate_predictions": "evaluation",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "backends",
    "get_backend": "backends",
    "read_checkpoint": "checkpoint",
    "build_augmentation": "augment",
    "PRESETS": "augment",
    "DetectionDataset": "datasets",
    "load_image": "datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'synthloop.detection' has no attribute {name!r}")
    return getattr(import_module(f"synthloop.detection.{module}"), name)


def __dir__() -> list[str]:
    return __all__
