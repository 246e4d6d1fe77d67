"""COCO box AP of a detector on a dataset: one forward per batch, then ``synthloop.metrics``.

The metrics themselves (``evaluate_predictions``, the ``Detections`` protocol) live in the
torch-free ``synthloop.metrics``, which the gate uses too; they are re-exported here.
"""

from __future__ import annotations

from torch import nn

from synthloop.data.coco import CocoDataset
from synthloop.metrics import Detections, evaluate_predictions

__all__ = ["Detections", "evaluate", "evaluate_predictions"]


def evaluate(model: nn.Module, ds: CocoDataset, *, batch_size: int,
             progress: bool = False) -> dict[str, float]:
    """Run the model over ``ds`` (one forward per batch) and return its COCO box metrics."""
    from synthloop.detection.scoring import predict_with_probs_and_features

    predictions = predict_with_probs_and_features(model, ds, batch_size=batch_size, progress=progress)
    return evaluate_predictions(ds, predictions)
