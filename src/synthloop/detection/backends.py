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

Each backend is one object (``DetectorBackend``) registered by name in ``registry.BACKENDS``:
torchvision (``torchvision_backend``) is the default; ``mmdet`` (``mmdet_backend``) needs the
``mmdet`` extra (``make setup-mmdet``) and is imported only when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from synthloop.config import DetectorConfig
from synthloop.detection import registry
from synthloop.detection.checkpoint import read_checkpoint, rebuild_configs

BACKENDS = tuple(registry.BACKENDS)

Scorer = Callable[[list[torch.Tensor]], tuple[list[dict[str, torch.Tensor]], torch.Tensor]]


class DetectorBackend(Protocol):
    """What a backend provides (one object per backend module, named in ``registry``)."""

    name: str
    exportable: bool  # detection/export.py can export its models (ONNX)

    def build(self, *, cfg: DetectorConfig, num_classes: int) -> nn.Module:
        """A model on the CPU with ``detector_cfg`` and ``num_classes`` set; ``cfg.weights``
        loaded when it names a checkpoint."""

    def load_weights(self, model: nn.Module, source: str | Path, *, num_classes: int) -> None:
        """Load a checkpoint (path or URL) into ``model``; a box predictor for another class
        count starts fresh, any other misfit is a ValueError."""

    def open_scorer(self, model: nn.Module) -> tuple[Scorer, Callable[[], None]]:
        """``(score, close)``, see ``open_scorer``."""

    def requirements(self, cfg: DetectorConfig) -> tuple[str, ...]:
        """The distributions (PyPI names) that loading and running the model needs."""


def get_backend(name: str) -> DetectorBackend:
    """The backend registered as ``name``; ValueError listing the known ones otherwise."""
    return registry.get_backend(name)


def build_detector(*, cfg: DetectorConfig, num_classes: int,
                   device: torch.device | str | None = None) -> nn.Module:
    """Build the detector of ``cfg.backend`` for ``num_classes`` foreground classes.

    The weights are made on the CPU (a seeded initialisation is the same on every device), then
    the model moves to ``device`` (``detection.device.resolve_device``'s result; None: the CPU).
    """
    if not isinstance(cfg, DetectorConfig):
        raise TypeError(f"cfg must be a DetectorConfig, got {type(cfg).__name__}")
    model = get_backend(cfg.backend).build(cfg=cfg, num_classes=num_classes)
    return model.to(device) if device is not None else model


def backend_of(model: nn.Module) -> str:
    """The backend a built model belongs to (models without ``detector_cfg`` are torchvision's)."""
    cfg = getattr(model, "detector_cfg", None)
    return cfg.backend if cfg is not None else "torchvision"


def open_scorer(model: nn.Module) -> tuple[Scorer, Callable[[], None]]:
    """``(score, close)``: ``score(images)`` runs one eval forward and returns the per-image
    results (with ``probs``) and the pooled finest-level features (B, 256); call ``close()``
    when done (it removes the torchvision hooks)."""
    return get_backend(backend_of(model)).open_scorer(model)


def load_checkpoint(path: Path | str, *, device: torch.device | str | None = None) -> nn.Module:
    """Rebuild the detector saved by ``save_checkpoint`` and load its weights (eval mode), on
    ``device`` (``detection.device.resolve_device``'s result; None: the CPU).

    The model's ``checkpoint_extra`` attribute holds the saved ``extra`` dict.
    """
    ckpt = read_checkpoint(path)
    build_cfg, saved_cfg = rebuild_configs(ckpt, path)
    model = build_detector(cfg=build_cfg, num_classes=int(ckpt["num_classes"]))
    model.load_state_dict(ckpt["model"])
    model.detector_cfg = saved_cfg
    model.checkpoint_extra = ckpt.get("extra", {})
    if device is not None:
        model.to(device)
    return model.eval()
