"""Prediction, and scoring for active learning: boxes, class probabilities and an image
embedding from ONE forward pass per batch.

Boxes are (N, 4) float32 [x1, y1, x2, y2] pixels in the original image coordinates (the model's
transform resizes inputs and maps boxes back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from synthloop import faults
from synthloop.data.coco import CocoDataset
from synthloop.detection.backends import open_scorer
from synthloop.detection.datasets import load_image


@dataclass(frozen=True)
class ImageScores:
    """One image's detections and embedding.

    boxes (N, 4) float32 [x1, y1, x2, y2] original pixels; labels (N,) int64 in 1..C;
    scores (N,) float32; probs (N, C+1) float32 softmax rows, background in column 0
    (``scores[i] == probs[i, labels[i]]``); feature (256,) float32, the finest FPN level
    (backbone key '0': P2 for ResNet-FPN; mmdet: ``extract_feat(x)[0]``) averaged over the
    image's own (unpadded) area. Both backends give this same layout.
    """

    image_id: int
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    probs: np.ndarray
    feature: np.ndarray


def _batches(source: CocoDataset | Sequence[torch.Tensor], batch_size: int
             ) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    if isinstance(source, CocoDataset):
        for start in range(0, len(source.images), batch_size):
            chunk = source.images[start:start + batch_size]
            yield [im.id for im in chunk], [load_image(source.image_path(im)) for im in chunk]
    else:
        for start in range(0, len(source), batch_size):
            chunk = list(source[start:start + batch_size])
            yield list(range(start, start + len(chunk))), chunk


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)  # an exported scorer holds none: it runs on the CPU
    return param.device if param is not None else torch.device("cpu")


def predict_with_probs_and_features(model: nn.Module,
                                    dataset_or_images: CocoDataset | Sequence[torch.Tensor], *,
                                    batch_size: int, progress: bool = True) -> list[ImageScores]:
    """Score every image with one forward pass per batch.

    ``dataset_or_images``: a ``CocoDataset`` (image ids from it) or a sequence of (3, H, W) float
    tensors in 0..1 (image ids 0..n-1). Returns one ``ImageScores`` per image, in order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _device_of(model)
    is_coco = isinstance(dataset_or_images, CocoDataset)
    total = len(dataset_or_images.images) if is_coco else len(dataset_or_images)
    was_training = model.training
    model.eval()
    score, close = open_scorer(model)  # the backend's one-pass forward (backends.py)
    out: list[ImageScores] = []
    try:
        with torch.inference_mode(), tqdm(total=total, disable=not progress, desc="score",
                                          unit="img") as bar:
            for ids, images in _batches(dataset_or_images, batch_size):
                results, features = score([im.to(device) for im in images])
                features = features.float().cpu().numpy()
                for image_id, res, feature in zip(ids, results, features):
                    out.append(ImageScores(
                        image_id=int(image_id),
                        boxes=res["boxes"].float().cpu().numpy().reshape(-1, 4),
                        labels=res["labels"].cpu().numpy().astype(np.int64),
                        scores=res["scores"].float().cpu().numpy(),
                        probs=res["probs"].float().cpu().numpy(),
                        feature=feature.copy()))
                bar.update(len(ids))
                faults.point("score.mid_pool")
    finally:
        close()
        model.train(was_training)
    return out


def predict(model: nn.Module, images: Sequence[torch.Tensor], *, batch_size: int | None = None
            ) -> list[dict[str, Any]]:
    """Plain inference: per image ``{"boxes", "labels", "scores"}`` CPU tensors (boxes in
    original [x1, y1, x2, y2] pixels; ``probs`` too when the model has ``RoIHeadsWithProbs``)."""
    device = _device_of(model)
    step = batch_size or max(1, len(images))
    was_training = model.training
    model.eval()
    out: list[dict[str, Any]] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), step):
                batch = [im.to(device) for im in images[start:start + step]]
                out.extend({k: v.cpu() for k, v in res.items()} for res in model(batch))
    finally:
        model.train(was_training)
    return out
