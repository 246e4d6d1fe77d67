"""Training augmentations chosen by name: ``none``, ``flip``, ``paper``.

Each preset is an Albumentations pipeline over an HWC uint8 image with ``pascal_voc`` boxes
(``[x1, y1, x2, y2]`` pixels) and integer labels. Albumentations is imported only when a preset
is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

PRESETS = ("none", "flip", "paper")


@dataclass(frozen=True)
class Augmented:
    """``image`` (H, W, 3) uint8; ``boxes`` (N, 4) float32 [x1, y1, x2, y2] pixels; ``labels`` (N,) int64."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


Augmentation = Callable[[np.ndarray, np.ndarray, np.ndarray], Augmented]


def _albumentations():
    # Albumentations may ask PyPI for a newer version at import: never do that from here.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import albumentations as A
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ImportError("augmentation needs albumentations: pip install synthloop") from exc
    return A


def _transforms(name: str, A: Any) -> list[Any]:
    if name == "flip":
        return [A.HorizontalFlip(p=0.5)]
    # "paper": flip, colour jitter, Gaussian noise, Gaussian blur, shift and scale (PAPER.md)
    return [
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.5),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.3),
        A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        A.Affine(translate_percent=(-0.1, 0.1), scale=(0.8, 1.2), border_mode=0, fill=0, p=0.5),
    ]


def build_augmentation(name: str, *, seed: int = 0) -> Augmentation | None:
    """The named preset as ``f(image, boxes, labels) -> Augmented``; None for ``"none"``.

    Boxes that shift or scale mostly out of the frame (under 30 % visible, or under 2 px a
    side) are dropped with their labels. Raises ValueError listing the presets on an unknown name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; known: {', '.join(PRESETS)}")
    if name == "none":
        return None
    A = _albumentations()
    compose = A.Compose(
        _transforms(name, A),
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True,
                                 min_visibility=0.3, min_width=2, min_height=2),
        seed=seed,
    )

    def apply(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> Augmented:
        out = compose(image=image, bboxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                      labels=np.asarray(labels, np.int64))
        return Augmented(
            image=np.ascontiguousarray(out["image"]),
            boxes=np.asarray(out["bboxes"], np.float32).reshape(-1, 4),
            # Albumentations hands labels back as floats or objects: cast to the int class ids
            labels=np.asarray(out["labels"]).astype(np.int64).reshape(-1),
        )

    return apply
