"""Helpers for the tests of the mmdet backend (marker ``mmdet``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthloop.data.coco import CocoDataset, categories_for

W, H = 96, 64


def require_mmdet() -> None:
    """Skip the calling test where the mmdet extra is not installed (core CI without it)."""
    try:
        from synthloop.detection.mmdet_backend import require_mmdet as load
        load()
    except ImportError as exc:
        pytest.skip(f"mmdet extra not installed (`make setup-mmdet`): {exc}")


def make_coco(root: Path, n: int = 4) -> CocoDataset:
    """``n`` 96x64 images with one drawn rectangle each (class 1 red, 2 blue); every 4th is empty."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, n + 1):
        img = np.full((H, W, 3), 40, np.uint8)
        if i % 4:
            x, y, cat = int(rng.integers(0, W - 30)), int(rng.integers(0, H - 24)), 1 + i % 2
            img[y:y + 20, x:x + 26] = (220, 60, 60) if cat == 1 else (60, 60, 220)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat,
                         "bbox": [x, y, 26, 20], "area": 520.0, "iscrowd": 0})
        Image.fromarray(img).save(root / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": W, "height": H})
    return CocoDataset.from_dict({"images": images, "annotations": anns,
                                  "categories": categories_for(["red", "blue"])}, image_root=root)
