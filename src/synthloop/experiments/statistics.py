"""Statistics of the experiment grid: pure functions of plain numbers (no files, no models).

A cell's runs (one per seed and fold) are the resampling units. ``bootstrap_mean_interval``
is the percentile bootstrap of their mean; ``labels_to_match`` reads a learning curve (mean AP
against labelled images, piecewise linear) for the fewest labels that reach a target AP, and
``bootstrap_labels_to_match`` gives that number an interval by resampling every point of the
curve, and the target's runs, independently (this ignores that runs on the same fold share a
validation set, which makes the interval wider, not narrower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value, NaN for none)."""
    arr = np.asarray(values, float)
    if arr.size == 0:
        return float("nan"), float("nan")
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), se


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of ``samples`` (values may be +inf: taken from the
    samples themselves, never interpolated, so an infinite end stays infinite)."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(samples, float), [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(lo), float(hi)


def _resampled_means(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """(resamples,) means of ``values`` drawn with replacement."""
    idx = rng.integers(0, values.size, size=(resamples, values.size))
    return values[idx].mean(axis=1)


def bootstrap_mean_interval(values: Sequence[float], *, resamples: int = 2000,
                            confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs for no values)."""
    arr = np.asarray(values, float)
    if arr.size == 0:
        return float("nan"), float("nan")
    means = _resampled_means(arr, np.random.default_rng(seed), resamples)
    return percentile_interval(means, confidence)


def labels_to_match(labels: Sequence[float], ap: Sequence[float], target: float) -> float | None:
    """The fewest labels at which the curve through (labels, ap) reaches ``target``.

    The curve is piecewise linear between its points, taken in order of labels; the answer is
    its first crossing (the first point if that one already reaches the target), or None when
    no point reaches the target.
    """
    order = np.argsort(np.asarray(labels, float), kind="stable")
    xs = np.asarray(labels, float)[order]
    ys = np.asarray(ap, float)[order]
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y >= target:
            if i == 0:
                return float(x)
            x0, y0 = xs[i - 1], ys[i - 1]
            return float(x0 + (target - y0) / (y - y0) * (x - x0))
    return None


@dataclass(frozen=True)
class MatchEstimate:
    """``labels``: from the mean curve (None: not reached); ``interval``: percentile bootstrap
    interval, an end None where more than that share of resamples never reach the target;
    ``reached_share``: the share of resamples whose curve reaches it."""

    labels: float | None
    interval: tuple[float | None, float | None]
    reached_share: float
    target: float


def bootstrap_labels_to_match(points: Sequence[tuple[float, Sequence[float]]],
                              target_values: Sequence[float], *, resamples: int = 2000,
                              confidence: float = 0.95, seed: int = 0) -> MatchEstimate:
    """``labels_to_match`` of a curve whose points (labels, AP of each run) are means of runs,
    against the mean of ``target_values``, with a bootstrap interval over the runs."""
    if not points or not len(target_values):
        raise ValueError("labels_to_match needs a curve and target runs")
    xs = [float(x) for x, _ in points]
    runs = [np.asarray(v, float) for _, v in points]
    target_runs = np.asarray(target_values, float)
    target = float(target_runs.mean())
    estimate = labels_to_match(xs, [r.mean() for r in runs], target)
    rng = np.random.default_rng(seed)
    curves = np.stack([_resampled_means(r, rng, resamples) for r in runs], axis=1)
    targets = _resampled_means(target_runs, rng, resamples)
    found = np.array([labels_to_match(xs, curve, t) for curve, t in zip(curves, targets)],
                     dtype=object)
    samples = np.array([math.inf if f is None else f for f in found], float)
    lo, hi = percentile_interval(samples, confidence)
    return MatchEstimate(estimate, (None if math.isinf(lo) else lo, None if math.isinf(hi) else hi),
                         float(np.isfinite(samples).mean()), target)


__all__ = ["MatchEstimate", "bootstrap_labels_to_match", "bootstrap_mean_interval",
           "labels_to_match", "mean_se", "percentile_interval"]
