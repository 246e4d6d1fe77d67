"""COCO box metrics of per-image detections, without torch: what the detector's evaluation, the
gate's bootstrap and the reports share.

``Detections`` is what any per-image prediction offers (``detection.scoring.ImageScores``, the
gate's cached ``ImageDetections``): boxes (N, 4) [x1, y1, x2, y2] pixels of the original image,
labels (N,) category ids 1..C, scores (N,). COCO result rows hold [x, y, w, h] pixels.
Evaluation is faster-coco-eval (agrees with pycocotools to the last digit, ~5x faster).

Metrics: ``AP`` (mean over IoU .50:.05:.95), ``AP50``, ``AP75``, and ``AP_<class name>`` per
category (-1.0 where the evaluated images hold no ground truth of that class, as COCO reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from synthloop.data.coco import CocoDataset


class Detections(Protocol):
    """One image's detections: boxes (N, 4) [x1, y1, x2, y2] original pixels, labels (N,)
    category ids, scores (N,) (numpy arrays or anything ``np.asarray`` takes)."""

    image_id: int
    boxes: Any
    labels: Any
    scores: Any


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections as plain arrays (a ``Detections``)."""

    image_id: int
    boxes: np.ndarray  # (N, 4) float32 [x1, y1, x2, y2] pixels
    labels: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float32


def as_detections(predictions: Sequence[Detections]) -> list[ImageDetections]:
    """Drop everything but boxes, labels and scores (e.g. from ``ImageScores``)."""
    return [ImageDetections(int(p.image_id), np.asarray(p.boxes, np.float32).reshape(-1, 4),
                            np.asarray(p.labels, np.int64).reshape(-1),
                            np.asarray(p.scores, np.float32).reshape(-1)) for p in predictions]


def coco_rows(predictions: Sequence[Detections]) -> list[dict[str, Any]]:
    """COCO result rows ``{image_id, category_id, bbox: [x, y, w, h] pixels, score}``."""
    rows: list[dict[str, Any]] = []
    for pred in predictions:
        boxes = np.asarray(pred.boxes, np.float64).reshape(-1, 4)
        for (x1, y1, x2, y2), label, score in zip(boxes, np.asarray(pred.labels).reshape(-1),
                                                   np.asarray(pred.scores).reshape(-1)):
            rows.append({"image_id": int(pred.image_id), "category_id": int(label),
                         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                         "score": float(score)})
    return rows


def coco_eval(ds: CocoDataset, rows: Sequence[dict[str, Any]]):
    """faster-coco-eval's ``COCOeval_faster`` of ``rows`` (non-empty) against ``ds``, evaluated
    and accumulated: ``.eval["precision"]`` is (IoU thresholds .50:.05:.95, 101 recall points,
    categories, area ranges, max dets), -1 where a category has no ground truth."""
    from faster_coco_eval import COCO, COCOeval_faster

    quiet = lambda *args, **kwargs: None  # noqa: E731
    gt = COCO(ds.to_dict(), print_function=quiet)
    result = COCOeval_faster(gt, gt.loadRes(list(rows)), iouType="bbox", print_function=quiet)
    result.evaluate()
    result.accumulate()
    return result


def evaluate_predictions(ds: CocoDataset, predictions: Sequence[Detections]) -> dict[str, float]:
    """COCO box metrics of precomputed ``predictions`` against ``ds``'s ground truth.

    Images of ``ds`` without a prediction count as having no detections; images without ground
    truth count their detections as false positives. No detections at all gives AP 0. A dataset
    without any ground-truth box raises ValueError (there is nothing to measure), and so does a
    prediction for an image that is not in ``ds``.
    """
    if not any(not a.iscrowd for a in ds.annotations):
        raise ValueError("evaluation needs ground truth: the dataset has no (non-crowd) boxes")
    known = {im.id for im in ds.images}
    for pred in predictions:
        if int(pred.image_id) not in known:
            raise ValueError(f"prediction for image {pred.image_id}, which is not in the dataset")
    names = {int(c["id"]): str(c["name"]) for c in ds.categories}
    rows = coco_rows(predictions)
    if not rows:
        with_gt = {a.category_id for a in ds.annotations if not a.iscrowd}
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0,
                **{f"AP_{n}": 0.0 if i in with_gt else -1.0 for i, n in names.items()}}
    result = coco_eval(ds, rows)
    result.summarize()
    stats = result.stats
    metrics = {"AP": max(0.0, float(stats[0])), "AP50": max(0.0, float(stats[1])),
               "AP75": max(0.0, float(stats[2]))}
    # area "all", 100 detections; a category without ground truth is all -1
    precision = result.eval["precision"][:, :, :, 0, -1]
    for k, cat_id in enumerate(result.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        metrics[f"AP_{names[int(cat_id)]}"] = float(values.mean()) if values.size else -1.0
    return metrics
