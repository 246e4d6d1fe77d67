"""Where a detector fails, torch-free: missed and false detections, binned.

Matching: per image and class, detections with score >= ``min_score`` in descending score
order each take the unmatched ground-truth box of their class with the highest IoU, if that is
>= ``iou`` (COCO's greedy rule at one IoU and one score threshold). A ground-truth box left
unmatched is *missed*; a kept detection left unmatched is *false*. Boxes are (N, 4)
[x1, y1, x2, y2] pixels inside the code; COCO files hold [x, y, w, h].

``analyse_photos``: labelled photos, each box binned by class, size (COCO's small < 32^2 <=
medium < 96^2 <= large, pixels), crowding (how many other ground-truth boxes it overlaps:
0, 1, 2+; for a detection, the ground-truth boxes it overlaps less one, so that neither a hit
nor a miss lands in a bin by construction), brightness (mean grey level inside the box, 0..1,
in fifths) and image region (the 3x3 grid cell of its centre). Missed counts against ground
truth (``miss_rate`` = missed / gt); false detections against kept detections (``false_rate``).

``analyse_renders``: rendered images, each binned by the values its plan sampled (the COCO
image's ``camera_plan``, ``hdri_plan``, ``lights``, ``distractors``, ``parts``: what
synthesis/shards.py writes), one table per variable; ``failure_rate`` per bin =
(missed + false) / (gt + false).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from synthloop.config import DomainConfig
from synthloop.config_steer import STEERABLE_COUNTS
from synthloop.data.coco import CocoDataset, CocoImage
from synthloop.metrics import Detections, as_detections
from synthloop.synthesis.randomizers import count_bin_starts

SIZE_BINS = ("small", "medium", "large")
CROWDING_BINS = ("0", "1", "2+")
BRIGHTNESS_BINS = ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0")
REGION_BINS = tuple(f"{v}-{h}" for v in ("top", "middle", "bottom")
                    for h in ("left", "centre", "right"))


@dataclass(frozen=True)
class ImageMatch:
    """One image's outcome: ``gt_missed`` (G,) bool; ``det_boxes`` (D, 4) [x1, y1, x2, y2]
    pixels, ``det_labels`` (D,) and ``det_false`` (D,) bool of the kept detections."""

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_missed: np.ndarray
    det_boxes: np.ndarray
    det_labels: np.ndarray
    det_false: np.ndarray


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of [x1, y1, x2, y2] boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(gt_boxes, gt_labels, det: Detections, *, iou: float = 0.5,
                min_score: float = 0.5) -> ImageMatch:
    """Greedy matching of one image's detections to its ground truth (see the module doc)."""
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    d = as_detections([det])[0]
    keep = np.flatnonzero(d.scores >= min_score)
    keep = keep[np.argsort(-d.scores[keep], kind="stable")]
    boxes, labels = d.boxes[keep].astype(np.float64), d.labels[keep]
    ious = iou_matrix(boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    false = np.ones(len(keep), bool)
    for i in range(len(keep)):
        cand = np.where((gt_labels == labels[i]) & ~taken, ious[i], -1.0)
        j = int(np.argmax(cand)) if len(cand) else -1
        if j >= 0 and cand[j] >= iou:
            taken[j], false[i] = True, False
    return ImageMatch(gt_boxes, gt_labels, ~taken, boxes, labels, false)


def match_dataset(ds: CocoDataset, predictions: Sequence[Detections], *, iou: float,
                  min_score: float) -> dict[int, ImageMatch]:
    """``match_image`` for every image of ``ds`` (an image without predictions: none)."""
    preds = {int(p.image_id): p for p in as_detections(predictions)}
    by_image: dict[int, list] = {im.id: [] for im in ds.images}
    for a in ds.annotations:
        if not a.iscrowd:
            x, y, w, h = a.bbox
            by_image[a.image_id].append(([x, y, x + w, y + h], a.category_id))
    empty = _NoDetections()
    out = {}
    for im in ds.images:
        gts = by_image[im.id]
        out[im.id] = match_image([g[0] for g in gts], [g[1] for g in gts],
                                 preds.get(im.id, empty), iou=iou, min_score=min_score)
    return out


class _NoDetections:
    image_id = 0
    boxes = np.zeros((0, 4), np.float32)
    labels = np.zeros(0, np.int64)
    scores = np.zeros(0, np.float32)


# ----------------------------------------------------------------------- photo attributes
def size_bin(box) -> str:
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    return SIZE_BINS[int(area >= 32 ** 2) + int(area >= 96 ** 2)]


def crowding_bin(box, others: np.ndarray, *, less: int = 0) -> str:
    """How many of ``others`` (ground-truth boxes) ``box`` overlaps, less ``less``."""
    n = int((iou_matrix([box], others) > 0).sum()) if len(others) else 0
    return CROWDING_BINS[min(max(n - less, 0), 2)]


def region_bin(box, width: int, height: int) -> str:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col = min(max(int(3 * cx / max(width, 1)), 0), 2)
    row = min(max(int(3 * cy / max(height, 1)), 0), 2)
    return REGION_BINS[3 * row + col]


def brightness_bin(grey: np.ndarray | None, box) -> str:
    """Mean of ``grey`` (H, W) in 0..1 inside ``box``; "unknown" without pixels."""
    if grey is None:
        return "unknown"
    h, w = grey.shape
    x1, y1 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
    x2, y2 = int(np.clip(np.ceil(box[2]), x1 + 1, w)), int(np.clip(np.ceil(box[3]), y1 + 1, h))
    mean = float(grey[y1:y2, x1:x2].mean())
    return BRIGHTNESS_BINS[min(int(mean * len(BRIGHTNESS_BINS)), len(BRIGHTNESS_BINS) - 1)]


def load_grey(ds: CocoDataset, image: CocoImage) -> np.ndarray | None:
    """The image as (H, W) float grey levels in 0..1, at the COCO size; None if unreadable."""
    from PIL import Image

    try:
        with Image.open(ds.image_path(image)) as img:
            grey = img.convert("L")
            if grey.size != (image.width, image.height):
                grey = grey.resize((image.width, image.height))
            return np.asarray(grey, np.float32) / 255.0
    except OSError:
        return None


def _cell() -> dict[str, int]:
    return {"gt": 0, "missed": 0, "detections": 0, "false": 0}


def _rates(table: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    for bins in table.values():
        for c in bins.values():
            c["miss_rate"] = round(c["missed"] / c["gt"], 4) if c["gt"] else None
            c["false_rate"] = round(c["false"] / c["detections"], 4) if c["detections"] else None
    return {k: dict(sorted(v.items())) for k, v in table.items()}


def analyse_photos(ds: CocoDataset, predictions: Sequence[Detections], *, iou: float = 0.5,
                   min_score: float = 0.5,
                   grey: Callable[[CocoDataset, CocoImage], np.ndarray | None] = load_grey
                   ) -> dict[str, Any]:
    """Missed / false detections on labelled photos by class, size, crowding, brightness and
    region: ``{"totals": {...}, "by": {attribute: {bin: {gt, missed, miss_rate, detections,
    false, false_rate}}}}``. ``grey`` reads an image's pixels (tests pass arrays)."""
    names = {int(c["id"]): str(c["name"]) for c in ds.categories}
    matches = match_dataset(ds, predictions, iou=iou, min_score=min_score)
    table: dict[str, dict[str, dict[str, int]]] = {
        k: {} for k in ("class", "size", "crowding", "brightness", "region")}
    for im in ds.images:
        m = matches[im.id]
        pixels = grey(ds, im)

        def add(box, label, kind: str, failed: bool, others: np.ndarray, less: int) -> None:
            keys = {"class": names.get(int(label), str(label)), "size": size_bin(box),
                    "crowding": crowding_bin(box, others, less=less),
                    "brightness": brightness_bin(pixels, box),
                    "region": region_bin(box, im.width, im.height)}
            for attr, b in keys.items():
                c = table[attr].setdefault(b, _cell())
                c[kind] += 1
                c["missed" if kind == "gt" else "false"] += int(failed)

        for g, (box, label) in enumerate(zip(m.gt_boxes, m.gt_labels)):
            add(box, label, "gt", bool(m.gt_missed[g]), np.delete(m.gt_boxes, g, axis=0), 0)
        for box, label, false in zip(m.det_boxes, m.det_labels, m.det_false):
            add(box, label, "detections", bool(false), m.gt_boxes, 1)
    gt = sum(len(m.gt_labels) for m in matches.values())
    missed = sum(int(m.gt_missed.sum()) for m in matches.values())
    dets = sum(len(m.det_labels) for m in matches.values())
    false = sum(int(m.det_false.sum()) for m in matches.values())
    return {"images": len(ds.images), "iou": iou, "min_score": min_score,
            "totals": {"gt": gt, "missed": missed, "detections": dets, "false": false,
                       "miss_rate": round(missed / gt, 4) if gt else None,
                       "false_rate": round(false / dets, 4) if dets else None},
            "by": _rates(table)}


# ---------------------------------------------------------------------- render attributes
_CAMERA = {"camera_distance": "distance", "camera_elevation_deg": "elevation_deg",
           "camera_azimuth_deg": "azimuth_deg", "camera_roll_deg": "roll_deg",
           "focal_length_mm": "focal_length_mm"}
_HDRI = {"hdri_strength": "strength", "hdri_rotation_deg": "rotation_deg"}
_LIGHT = {"point_light_power_w": "power_w", "point_light_kelvin": "kelvin"}
_LISTS = {"distractors": "distractors", "parts_per_image": "parts", "point_lights": "lights"}


def sampled_value(meta: dict[str, Any], key: str) -> float | None:
    """What the plan of a rendered image drew for ``key`` (a steerable range), from its COCO
    image entry; lights: the mean over the image's lamps (None without lamps or the record)."""
    if key in _CAMERA:
        return _get(meta.get("camera_plan"), _CAMERA[key])
    if key in _HDRI:
        return _get(meta.get("hdri_plan"), _HDRI[key])
    if key in _LIGHT:
        values = [lamp[_LIGHT[key]] for lamp in meta.get("lights") or [] if _LIGHT[key] in lamp]
        return float(np.mean(values)) if values else None
    if key in _LISTS:
        items = meta.get(_LISTS[key])
        return float(len(items)) if isinstance(items, list) else None
    raise ValueError(f"no sampled value for '{key}'")


def _get(section: Any, field: str) -> float | None:
    return float(section[field]) if isinstance(section, dict) and field in section else None


def bin_edges(domain: DomainConfig, key: str, bins: int) -> list[float]:
    """Edges of ``key``'s bins, as the randomizers cut them: ``bins`` equal widths over
    [min, max]; for a count, runs of the values (each bin [start, next start), at most one
    bin per value)."""
    r = getattr(domain, key)
    if key in STEERABLE_COUNTS:
        return [float(x) for x in count_bin_starts(r.min, r.max, min(bins, r.max - r.min + 1))]
    return [float(x) for x in np.linspace(r.min, r.max, bins + 1)]


def bin_index(value: float, edges: Sequence[float]) -> int:
    """The bin of ``value`` (values outside the range go to the end bins)."""
    return int(np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(edges) - 2))


def analyse_renders(ds: CocoDataset, predictions: Sequence[Detections], domain: DomainConfig, *,
                    variables: Sequence[str], bins: int, iou: float = 0.5,
                    min_score: float = 0.5) -> dict[str, Any]:
    """Failures on rendered images binned by each of ``variables``' sampled values:
    ``{"images", "totals", "by": {variable: {"edges": [...], "bins": [{images, gt, missed,
    false, failure_rate}, ...]}}}`` (images whose record lacks the value are left out)."""
    matches = match_dataset(ds, predictions, iou=iou, min_score=min_score)
    by: dict[str, Any] = {}
    for key in variables:
        edges = bin_edges(domain, key, bins)
        cells = [{"images": 0, "gt": 0, "missed": 0, "false": 0} for _ in edges[:-1]]
        for im in ds.images:
            value = sampled_value(im.meta, key)
            if value is None:
                continue
            m, c = matches[im.id], cells[bin_index(value, edges)]
            c["images"] += 1
            c["gt"] += len(m.gt_labels)
            c["missed"] += int(m.gt_missed.sum())
            c["false"] += int(m.det_false.sum())
        for c in cells:
            c["failure_rate"] = failure_rate(c)
        by[key] = {"edges": [round(e, 6) for e in edges], "bins": cells}
    total = {k: sum(int(getattr(m, f).sum()) if f else len(m.gt_labels)
                    for m in matches.values())
             for k, f in (("gt", None), ("missed", "gt_missed"), ("false", "det_false"))}
    return {"images": len(ds.images), "iou": iou, "min_score": min_score,
            "totals": {**total, "failure_rate": failure_rate(total)}, "by": by}


def failure_rate(cell: dict[str, int]) -> float | None:
    """(missed + false) / (gt + false): the share of objects and claims that went wrong."""
    n = cell["gt"] + cell["false"]
    return round((cell["missed"] + cell["false"]) / n, 4) if n else None


__all__ = ["ImageMatch", "analyse_photos", "analyse_renders", "bin_edges", "bin_index",
           "failure_rate", "iou_matrix", "match_dataset", "match_image", "sampled_value"]
