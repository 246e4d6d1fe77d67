"""Paired bootstrap of COCO AP over the validation images: how sure is "the candidate is better"?

A validation set of 60 images gives AP differences of a few points by chance alone. We resample
the IMAGES with replacement (each drawn image brings its ground truth and both models'
detections), recompute COCO AP of candidate and champion on the same resample with the
project's evaluation code (``metrics.evaluate_predictions``), and take percentiles of the
difference.
The gate promotes only when the interval's lower end clears ``gate.min_improvement``. The same
resamples give each class's AP drop (champion - candidate) an interval too, reported beside the
gate's per-class non-regression check. ``metric_intervals`` draws the same resamples for one
model alone (the cycle report's AP and AP50 intervals across cycles).

Pure computation: no MLflow, no files. ``decide_promotion`` takes the resulting interval.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

import numpy as np

from synthloop.artifacts import ImprovementInterval
from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage
from synthloop.metrics import Detections, ImageDetections, as_detections, evaluate_predictions


def resample_indices(num_images: int, *, resamples: int, seed: int) -> np.ndarray:
    """(resamples, num_images) int indices drawn with replacement; row 0 is NOT the identity."""
    if num_images < 1:
        raise ValueError("bootstrap needs at least one validation image")
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_images, size=(resamples, num_images))


def _resampled_ground_truth(ds: CocoDataset, picks: np.ndarray) -> CocoDataset:
    """``ds`` with image ``picks[j]`` renamed to id j+1 (duplicates become distinct images)."""
    by_image = ds.annotations_by_image()
    images: list[CocoImage] = []
    anns: list[CocoAnnotation] = []
    for j, k in enumerate(picks.tolist()):
        im = ds.images[k]
        images.append(replace(im, id=j + 1, meta={}))
        for a in by_image.get(im.id, ()):
            anns.append(CocoAnnotation(len(anns) + 1, j + 1, a.category_id, a.bbox, a.area,
                                       a.iscrowd))
    return CocoDataset(images, anns, ds.categories, ds.image_root)


def _resampled_predictions(by_image: dict[int, ImageDetections], ds: CocoDataset,
                           picks: np.ndarray) -> list[ImageDetections]:
    out = []
    for j, k in enumerate(picks.tolist()):
        det = by_image.get(ds.images[k].id)
        if det is not None:
            out.append(ImageDetections(j + 1, det.boxes, det.labels, det.scores))
    return out


def _index(predictions: Sequence[Detections], ds: CocoDataset) -> dict[int, ImageDetections]:
    known = {im.id for im in ds.images}
    by_image = {p.image_id: p for p in as_detections(predictions)}
    unknown = sorted(set(by_image) - known)
    if unknown:
        raise ValueError(f"predictions for images not in the validation set: {unknown[:10]}")
    return by_image


def paired_bootstrap(ds: CocoDataset, candidate: Sequence[Detections],
                     champion: Sequence[Detections], *, metric: str = "AP",
                     resamples: int = 200, confidence: float = 0.9, seed: int = 0
                     ) -> tuple[ImprovementInterval, np.ndarray]:
    """Interval of ``metric``(candidate) - ``metric``(champion) over image resamples of ``ds``.

    ``candidate``/``champion``: per-image detections on ``ds`` (boxes [x1, y1, x2, y2] pixels);
    images without an entry have no detections. Returns the interval (with the interval of
    each class's AP drop, ``class_drops``) and the (resamples, 2) array of [candidate, champion]
    metric values per resample (for plots and tests).
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    t0 = time.perf_counter()
    cand_by, champ_by = _index(candidate, ds), _index(champion, ds)
    full_cand = evaluate_predictions(ds, list(cand_by.values()))[metric]
    full_champ = evaluate_predictions(ds, list(champ_by.values()))[metric]
    names = [str(c["name"]) for c in ds.categories]
    samples = np.empty((resamples, 2), dtype=np.float64)
    per_class = np.full((resamples, len(names), 2), np.nan)  # NaN: no box of the class drawn
    for b, picks in enumerate(resample_indices(len(ds.images), resamples=resamples, seed=seed)):
        gt = _resampled_ground_truth(ds, picks)
        if not any(not a.iscrowd for a in gt.annotations):
            samples[b] = 0.0  # a resample without any box: neither model can score
            continue
        for m, by in enumerate((cand_by, champ_by)):
            values = evaluate_predictions(gt, _resampled_predictions(by, ds, picks))
            samples[b, m] = values[metric]
            per_class[b, :, m] = [values.get(f"AP_{n}", -1.0) for n in names]
    tail = 100.0 * (1.0 - confidence) / 2.0
    lower, upper = np.percentile(samples[:, 0] - samples[:, 1], [tail, 100.0 - tail])
    interval = ImprovementInterval(
        metric=metric, candidate=float(full_cand), champion=float(full_champ),
        improvement=float(full_cand - full_champ), lower=float(lower), upper=float(upper),
        confidence=float(confidence), resamples=int(resamples), num_images=len(ds.images),
        seed=int(seed), seconds=round(time.perf_counter() - t0, 3),
        class_drops=_class_drop_intervals(names, per_class, tail))
    return interval, samples


def _class_drop_intervals(names: list[str], per_class: np.ndarray, tail: float
                          ) -> dict[str, tuple[float, float]]:
    """name -> percentile interval of (champion - candidate) AP_<name>, over the resamples
    that drew a box of the class. ``per_class``: (resamples, classes, 2) [candidate, champion]
    AP, NaN or -1 where the resample holds no box of the class."""
    per_class = np.where(per_class < 0, np.nan, per_class)
    out = {}
    for k, name in enumerate(names):
        drop = per_class[:, k, 1] - per_class[:, k, 0]
        drop = drop[np.isfinite(drop)]
        if drop.size:
            lo, hi = np.percentile(drop, [tail, 100.0 - tail])
            out[name] = (float(lo), float(hi))
    return out


def metric_intervals(ds: CocoDataset, predictions: Sequence[Detections], *,
                     metrics: Sequence[str] = ("AP", "AP50"), resamples: int = 200,
                     confidence: float = 0.9, seed: int = 0) -> dict[str, tuple[float, float]]:
    """One model's percentile interval of each of ``metrics`` over image resamples of ``ds``.

    The resamples are the gate's (same ``seed`` -> same draws as ``paired_bootstrap``); one
    without any box is left out (no AP is defined there). ``predictions``: per-image detections
    on ``ds`` (boxes [x1, y1, x2, y2] pixels). Returns name -> (lower, upper); a metric that no
    resample could score is left out.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    by_image = _index(predictions, ds)
    values = np.full((resamples, len(metrics)), np.nan)
    for b, picks in enumerate(resample_indices(len(ds.images), resamples=resamples, seed=seed)):
        gt = _resampled_ground_truth(ds, picks)
        if any(not a.iscrowd for a in gt.annotations):
            got = evaluate_predictions(gt, _resampled_predictions(by_image, ds, picks))
            values[b] = [got.get(m, np.nan) for m in metrics]
    tail = 100.0 * (1.0 - confidence) / 2.0
    out = {}
    for j, name in enumerate(metrics):
        column = values[:, j][np.isfinite(values[:, j])]
        if column.size:
            lo, hi = np.percentile(column, [tail, 100.0 - tail])
            out[name] = (float(lo), float(hi))
    return out
