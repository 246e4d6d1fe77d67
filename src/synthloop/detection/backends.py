"""The detector backends behind one interface, chosen by ``DetectorConfig.backend``.

Both backends build an ``nn.Module`` with the torchvision detection calling convention, so the
training loop, evaluation, scoring and checkpoints are shared code:

- ``model(images, targets)`` in train mode -> dict of scalar loss tensors (their sum is the loss);
  images: list of (3, H, W) float tensors in 0..1; targets: ``{"boxes": (N, 4) [x1, y1, x2, y2]
  pixels, "labels": (N,) int64 category ids 1..C}``.
- ``model(images)`` in eval mode -> per image ``{"boxes", "labels", "scores", "probs"}``: boxes in
  original pixels, labels 1..C, probs (N, C+1) softmax rows with background in column 0.
- ``model.detector_cfg`` (the ``DetectorConfig``) and ``model.num_classes`` (background excluded)
  let ``save_checkpoint``/``load_checkpoint`` rebuild it; its ``state_dict`` is the weights.
- ``open_scorer(model)`` -> a function ``images -> (results, features)`` that yields the eval
  output and the pooled P2 feature (B, 256) from the SAME forward pass.

torchvision (``torchvision_backend``) is the default; ``mmdet`` (``mmdet_backend``) needs the
``mmdet`` extra (``make setup-mmdet``) and is imported only when asked for.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from synthloop.config import DetectorConfig

BACKENDS = ("torchvision", "mmdet")

Scorer = Callable[[list[torch.Tensor]], tuple[list[dict[str, torch.Tensor]], torch.Tensor]]


def build_detector(*, cfg: DetectorConfig, num_classes: int,
                   device: torch.device | str | None = None) -> nn.Module:
    """Build the detector of ``cfg.backend`` for ``num_classes`` foreground classes.

    The weights are made on the CPU (a seeded initialisation is the same on every device), then
    the model moves to ``device`` (``detection.device.resolve_device``'s result; None: the CPU).
    """
    if not isinstance(cfg, DetectorConfig):
        raise TypeError(f"cfg must be a DetectorConfig, got {type(cfg).__name__}")
    if cfg.backend == "mmdet":
        from synthloop.detection.mmdet_backend import build_mmdet_detector

        model = build_mmdet_detector(cfg=cfg, num_classes=num_classes)
    elif cfg.backend == "torchvision":
        from synthloop.detection.torchvision_backend import build_detector as build_torchvision

        model = build_torchvision(cfg=cfg, num_classes=num_classes)
    else:
        raise ValueError(f"unknown detector backend {cfg.backend!r}; known: {', '.join(BACKENDS)}")
    return model.to(device) if device is not None else model


def backend_of(model: nn.Module) -> str:
    """The backend a built model belongs to (models without ``detector_cfg`` are torchvision's)."""
    cfg = getattr(model, "detector_cfg", None)
    return cfg.backend if cfg is not None else "torchvision"


def open_scorer(model: nn.Module) -> tuple[Scorer, Callable[[], None]]:
    """``(score, close)``: ``score(images)`` runs one eval forward and returns the per-image
    results (with ``probs``) and the pooled finest-level features (B, 256); call ``close()``
    when done (it removes the torchvision hooks)."""
    if backend_of(model) == "mmdet":
        return model.forward_with_features, lambda: None
    from synthloop.detection.scoring import _FeatureCapture
    from synthloop.detection.torchvision_backend import with_prob_heads

    with_prob_heads(model)
    capture = _FeatureCapture(model)

    def score(images: list[torch.Tensor]) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
        results = model(images)
        return results, capture.features

    return score, capture.close
