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

    ``crop`` (training only): return a ``crop`` x ``crop`` patch of the image *as the detector
    sees it at inference*, i.e. resized by the factor its transform would apply with
    ``resize=(min_size, max_size)``; the detector must then skip its own training resize
    (``model.transform._skip_resize``). Objects keep the pixel size they have at evaluation
    while a step costs a crop, not a whole image. A share ``crop_near_parts`` (default 80 %) of
    the crops are centred near a random box (more positives a step), the rest anywhere.
    ``crop_scale`` (lo, hi): each patch's scale is that evaluation scale times a log-uniform
    factor in [lo, hi].
    """

    def __init__(self, coco: CocoDataset, *, augment: str = "none", seed: int = 0,
                 crop: int | None = None, resize: tuple[int, int] | None = None,
                 crop_scale: tuple[float, float] | None = None,
                 crop_near_parts: float = 0.8) -> None:
        if crop is not None and resize is None:
            raise ValueError("crop needs resize=(min_size, max_size) of the detector")
        if crop_scale is not None and crop is None:
            raise ValueError("crop_scale needs crop")
        if not 0.0 <= crop_near_parts <= 1.0:
            raise ValueError(f"crop_near_parts {crop_near_parts}: give a share in [0, 1]")
        self.crop_scale = crop_scale
        self.crop_near_parts = crop_near_parts
        self.coco = coco
        self.augment_name = augment
        self._augment = build_augmentation(augment, seed=seed)
        self._boxes = boxes_by_image(coco)
        self.crop, self.resize = crop, resize
        self._rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """Restart the crop and augmentation random streams from ``seed`` (a DataLoader worker
        does this with its own seed: every worker holds a copy of the dataset)."""
        self._augment = build_augmentation(self.augment_name, seed=seed)
        self._rng = np.random.default_rng(seed)

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
        if self.crop is not None:
            image, boxes, labels = self._random_crop(image, boxes, labels)
        if self._augment is not None:
            out = self._augment(image, boxes, labels)
            image = out.image
            boxes, labels = clean_boxes(out.boxes, out.labels, image.shape[1], image.shape[0])
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                  "image_id": im.id}
        return to_tensor(image), target


    def _random_crop(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        min_size, max_size = self.resize
        scale = min(min_size / min(h, w), max_size / max(h, w))
        rng = self._rng
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            scale *= float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        side = self.crop / scale  # crop side in source pixels
        cw, ch = min(side, w), min(side, h)
        if len(boxes) and rng.random() < self.crop_near_parts:
            b = boxes[rng.integers(len(boxes))]
            cx = (b[0] + b[2]) / 2 + rng.uniform(-0.4, 0.4) * cw
            cy = (b[1] + b[3]) / 2 + rng.uniform(-0.4, 0.4) * ch
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        x0 = float(np.clip(cx - cw / 2, 0, w - cw))
        y0 = float(np.clip(cy - ch / 2, 0, h - ch))
        out_w, out_h = max(1, round(cw * scale)), max(1, round(ch * scale))
        patch = Image.fromarray(image).resize((out_w, out_h), Image.BILINEAR,
                                              box=(x0, y0, x0 + cw, y0 + ch))
        if len(boxes):
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            moved = (boxes - np.array([x0, y0, x0, y0], np.float32)) * np.float32(scale)
            moved_c = moved.copy()
            moved_c[:, [0, 2]] = moved_c[:, [0, 2]].clip(0, out_w)
            moved_c[:, [1, 3]] = moved_c[:, [1, 3]].clip(0, out_h)
            kept_area = ((moved_c[:, 2] - moved_c[:, 0]).clip(0) * (moved_c[:, 3] - moved_c[:, 1]).clip(0))
            keep = kept_area >= 0.5 * area * scale * scale  # at least half of the box inside
            boxes, labels = clean_boxes(moved_c[keep], labels[keep], out_w, out_h, min_side=2.0)
        return np.array(patch), boxes, labels


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, Any]]]):
    """Keep images and targets as lists: torchvision detectors take images of any size."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
