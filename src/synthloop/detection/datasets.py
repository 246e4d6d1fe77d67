"""Images and targets from a ``CocoDataset`` in the form torchvision detectors take.

Images: (3, H, W) float32 tensors in 0..1. Targets: ``boxes`` (N, 4) float32 [x1, y1, x2, y2]
pixels, ``labels`` (N,) int64 category ids 1..C, ``image_id`` int. N may be 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from synthloop.data.coco import CocoDataset
from synthloop.data.images import to_rgb
from synthloop.detection.augment import build_augmentation


def read_rgb(path: Path | str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright (EXIF), 16-bit and CMYK photos converted (data/images.py)."""
    with Image.open(path) as im:
        return np.array(to_rgb(im))  # a writable copy: torch.from_numpy needs one


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def load_image(path: Path | str) -> torch.Tensor:
    """(3, H, W) float32 in 0..1."""
    return to_tensor(read_rgb(path))


def clean_boxes(boxes: np.ndarray, labels: np.ndarray, width: int, height: int,
                min_side: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Clip [x1, y1, x2, y2] boxes to the image and drop those thinner than ``min_side`` px."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_side) & ((boxes[:, 3] - boxes[:, 1]) >= min_side)
    return boxes[keep], np.asarray(labels, np.int64).reshape(-1)[keep]


def boxes_by_image(coco: CocoDataset) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per image id: boxes (N, 4) float32 [x1, y1, x2, y2] pixels and labels (N,) int64, crowd
    boxes left out (one pass over the annotations, unlike per-image ``boxes_xyxy`` calls)."""
    out = {}
    for image_id, anns in coco.annotations_by_image().items():
        anns = [a for a in anns if not a.iscrowd]
        boxes = np.array([[a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]]
                          for a in anns], dtype=np.float32).reshape(-1, 4)
        out[image_id] = boxes, np.array([a.category_id for a in anns], dtype=np.int64)
    return out


class DetectionDataset(Dataset):
    """``ds[i] -> (image, target)`` for training, with the named augmentation preset applied.

    Images whose file size differs from the COCO width/height raise ValueError (the boxes would
    be wrong). Images without boxes give empty (0, 4) / (0,) targets.
    """

    def __init__(self, coco: CocoDataset, *, augment: str = "none", seed: int = 0) -> None:
        self.coco = coco
        self.augment_name = augment
        self._augment = build_augmentation(augment, seed=seed)
        self._boxes = boxes_by_image(coco)

    def __len__(self) -> int:
        return len(self.coco.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        im = self.coco.images[index]
        image = read_rgb(self.coco.image_path(im))
        h, w = image.shape[:2]
        if (w, h) != (im.width, im.height):
            raise ValueError(f"image {im.id} ({im.file_name}) is {w}x{h} on disk but "
                             f"{im.width}x{im.height} in the COCO file")
        boxes, labels = clean_boxes(*self._boxes[im.id], w, h)
        if self._augment is not None:
            out = self._augment(image, boxes, labels)
            image = out.image
            boxes, labels = clean_boxes(out.boxes, out.labels, image.shape[1], image.shape[0])
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                  "image_id": im.id}
        return to_tensor(image), target


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, Any]]]):
    """Keep images and targets as lists: torchvision detectors take images of any size."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
