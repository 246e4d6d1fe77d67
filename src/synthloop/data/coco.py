"""COCO detection datasets: load, validate, save (atomically), subset, merge.

Boxes are COCO ``[x, y, w, h]`` in pixels inside the json and in ``CocoAnnotation.bbox``;
``CocoDataset.boxes_xyxy`` converts to ``[x1, y1, x2, y2]`` pixels for the detector code.
Category ids are 1..C, which is also the torchvision label (0 is background).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from synthloop.io_utils import atomic_write_text


def _int(value: Any) -> int:
    """An integer field (640.0 from some tools is fine); 'one', '3' or 3.5 are errors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"needs an integer, got {value!r}")
    return int(value)


class CocoError(ValueError):
    """A COCO file is malformed; the message names the file and every problem found."""


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CocoAnnotation:
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]  # [x, y, w, h] pixels
    area: float
    iscrowd: int = 0
    segmentation: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


_IMAGE_KEYS = {"id", "file_name", "width", "height"}
_ANN_KEYS = {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}


@dataclass
class CocoDataset:
    """Images, annotations and categories; ``image_root`` is where ``file_name`` resolves."""

    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[dict[str, Any]]
    image_root: Path

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: Path | str, image_root: Path | str | None = None) -> "CocoDataset":
        """Read and validate a COCO json; ``image_root`` defaults to ``<json dir>/images``."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CocoError(f"{path}: file not found") from None
        except json.JSONDecodeError as exc:
            raise CocoError(f"{path}: not valid JSON ({exc})") from None
        root = Path(image_root) if image_root is not None else path.parent / "images"
        return cls.from_dict(raw, image_root=root, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, *, image_root: Path, source: str = "<dict>") -> "CocoDataset":
        problems: list[str] = []
        if not isinstance(raw, dict):
            raise CocoError(f"{source}: top level must be an object with images/annotations/categories")
        for key in ("images", "annotations", "categories"):
            if not isinstance(raw.get(key), list):
                problems.append(f"missing or non-list key '{key}'")
        if problems:
            raise CocoError(f"{source}: " + "; ".join(problems))
        images = []
        for i, im in enumerate(raw["images"]):
            missing = _IMAGE_KEYS - set(im) if isinstance(im, dict) else _IMAGE_KEYS
            if missing:
                problems.append(f"images[{i}] missing {sorted(missing)}")
                continue
            meta = {k: v for k, v in im.items() if k not in _IMAGE_KEYS}
            try:
                images.append(CocoImage(_int(im["id"]), str(im["file_name"]), _int(im["width"]),
                                        _int(im["height"]), meta))
            except (TypeError, ValueError) as exc:
                problems.append(f"images[{i}] {exc}")
        anns = []
        for i, a in enumerate(raw["annotations"]):
            missing = {"id", "image_id", "category_id", "bbox"} - set(a) if isinstance(a, dict) else {"id"}
            if missing:
                problems.append(f"annotations[{i}] missing {sorted(missing)}")
                continue
            bbox = a["bbox"]
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
                problems.append(f"annotations[{i}] bbox must be [x, y, w, h]")
                continue
            meta = {k: v for k, v in a.items() if k not in _ANN_KEYS}
            try:
                x, y, w, h = (float(v) for v in bbox)
                anns.append(CocoAnnotation(_int(a["id"]), _int(a["image_id"]),
                                           _int(a["category_id"]), (x, y, w, h),
                                           float(a.get("area", w * h)), _int(a.get("iscrowd", 0)),
                                           a.get("segmentation"), meta))
            except (TypeError, ValueError) as exc:
                problems.append(f"annotations[{i}] {exc}")
        cats = [dict(c) for c in raw["categories"]]
        if problems:
            raise CocoError(f"{source}: " + "; ".join(problems))
        ds = cls(images, anns, cats, Path(image_root))
        ds.validate(source=source)
        return ds

    # --------------------------------------------------------------- validation
    def validate(self, *, source: str = "<dataset>") -> None:
        """Raise CocoError listing every problem: duplicate ids, unknown refs, bad boxes."""
        problems: list[str] = []
        for name, ids in (("image", [im.id for im in self.images]),
                          ("annotation", [a.id for a in self.annotations]),
                          ("category", [c.get("id") for c in self.categories])):
            dup = [i for i, n in Counter(ids).items() if n > 1]
            if dup:
                problems.append(f"duplicate {name} ids {sorted(dup)[:5]}")
        cat_ids = {c.get("id") for c in self.categories}
        for c in self.categories:
            if not isinstance(c.get("id"), int) or not c.get("name"):
                problems.append(f"category {c!r} needs an int id and a name")
        by_id = {im.id: im for im in self.images}
        for im in self.images:
            if im.width <= 0 or im.height <= 0:
                problems.append(f"image {im.id} has non-positive size {im.width}x{im.height}")
            if Path(im.file_name).is_absolute() or ".." in Path(im.file_name).parts:
                problems.append(f"image {im.id} file_name {im.file_name!r} escapes the image root")
        for a in self.annotations:
            im = by_id.get(a.image_id)
            if im is None:
                problems.append(f"annotation {a.id} refers to unknown image {a.image_id}")
                continue
            if a.category_id not in cat_ids:
                problems.append(f"annotation {a.id} has unknown category {a.category_id}")
            x, y, w, h = a.bbox
            if not all(np.isfinite(v) for v in a.bbox) or w <= 0 or h <= 0:
                problems.append(f"annotation {a.id} has a non-positive or non-finite box {list(a.bbox)}")
            elif x < -0.5 or y < -0.5 or x + w > im.width + 0.5 or y + h > im.height + 0.5:
                problems.append(f"annotation {a.id} box {list(a.bbox)} lies outside image {im.id} "
                                f"({im.width}x{im.height})")
        if problems:
            more = f" (+{len(problems) - 20} more)" if len(problems) > 20 else ""
            raise CocoError(f"{source}: " + "; ".join(problems[:20]) + more)

    # ------------------------------------------------------------------- access
    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in sorted(self.categories, key=lambda c: c["id"])]

    def image_path(self, image: CocoImage) -> Path:
        return self.image_root / image.file_name

    def annotations_by_image(self) -> dict[int, list[CocoAnnotation]]:
        out: dict[int, list[CocoAnnotation]] = {im.id: [] for im in self.images}
        for a in self.annotations:
            out.setdefault(a.image_id, []).append(a)
        return out

    def boxes_xyxy(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``boxes`` (N, 4) float32 ``[x1, y1, x2, y2]`` pixels and ``labels`` (N,) int64."""
        anns = [a for a in self.annotations if a.image_id == image_id and not a.iscrowd]
        boxes = np.array([[a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]]
                          for a in anns], dtype=np.float32).reshape(-1, 4)
        labels = np.array([a.category_id for a in anns], dtype=np.int64)
        return boxes, labels

    def subset(self, image_ids: Iterable[int]) -> "CocoDataset":
        """The images with these ids (order kept as given) and their annotations."""
        wanted = list(dict.fromkeys(int(i) for i in image_ids))
        by_id = {im.id: im for im in self.images}
        unknown = [i for i in wanted if i not in by_id]
        if unknown:
            raise CocoError(f"subset: unknown image ids {unknown[:10]}")
        keep = set(wanted)
        return CocoDataset([by_id[i] for i in wanted],
                           [a for a in self.annotations if a.image_id in keep],
                           [dict(c) for c in self.categories], self.image_root)

    def without_annotations(self) -> "CocoDataset":
        return CocoDataset(list(self.images), [], [dict(c) for c in self.categories], self.image_root)

    def with_image_root(self, root: Path) -> "CocoDataset":
        return replace(self, image_root=Path(root))

    # ------------------------------------------------------------------- saving
    def to_dict(self) -> dict[str, Any]:
        images = [{"id": im.id, "file_name": im.file_name, "width": im.width,
                   "height": im.height, **im.meta} for im in self.images]
        anns = []
        for a in self.annotations:
            d = {"id": a.id, "image_id": a.image_id, "category_id": a.category_id,
                 "bbox": [round(v, 3) for v in a.bbox], "area": round(a.area, 3),
                 "iscrowd": a.iscrowd, **a.meta}
            if a.segmentation is not None:
                d["segmentation"] = a.segmentation
            anns.append(d)
        return {"images": images, "annotations": anns, "categories": self.categories}

    def to_json(self) -> str:
        """The text ``save`` writes (compact)."""
        return json.dumps(self.to_dict(), indent=None, separators=(",", ":"))

    def save(self, path: Path | str) -> Path:
        """Write the json atomically (temp file + rename): a crash never leaves half a file."""
        path = Path(path)
        atomic_write_text(path, self.to_json())
        return path


def merge(datasets: list[CocoDataset], *, image_root: Path) -> CocoDataset:
    """Concatenate datasets that share categories, renumbering image and annotation ids.

    Every dataset's ``file_name`` must already resolve under ``image_root``.
    """
    if not datasets:
        raise CocoError("merge: nothing to merge")
    cats = datasets[0].categories
    for ds in datasets[1:]:
        if [c["name"] for c in ds.categories] != [c["name"] for c in cats]:
            raise CocoError("merge: datasets have different categories")
    images, anns = [], []
    for ds in datasets:
        remap = {}
        for im in ds.images:
            remap[im.id] = len(images) + 1
            images.append(replace(im, id=remap[im.id]))
        for a in ds.annotations:
            anns.append(replace(a, id=len(anns) + 1, image_id=remap[a.image_id]))
    return CocoDataset(images, anns, [dict(c) for c in cats], Path(image_root))


def union(datasets: list[CocoDataset]) -> CocoDataset:
    """``merge`` for datasets whose images live in different folders (renders and labelled
    photos): each ``file_name`` becomes relative to the folders' common parent, which is the
    result's ``image_root``. Ids are renumbered; the categories must match."""
    import os

    if not datasets:
        raise CocoError("union: nothing to join")
    # absolute, not resolved: image files may be links into a cache outside the roots
    roots = [Path(os.path.abspath(ds.image_root)) for ds in datasets]
    common = Path(os.path.commonpath(roots))
    moved = [replace(ds, image_root=common, images=[
        replace(im, file_name=(root.relative_to(common) / im.file_name).as_posix())
        for im in ds.images]) for ds, root in zip(datasets, roots)]
    return merge(moved, image_root=common)


def categories_for(class_names: list[str]) -> list[dict[str, Any]]:
    """COCO categories with ids 1..C in the given order."""
    return [{"id": i + 1, "name": n, "supercategory": "part"} for i, n in enumerate(class_names)]
