"""Per-bin failure rates -> bounded sampling weights for the scene randomizers.

A bin's rate (its failure rate over objects, ``failures.failure_rate``) is smoothed toward
the variable's mean with ``prior`` pseudo-images: ``(n_b * rate_b + prior * mean) / (n_b +
prior)`` with ``n_b`` the bin's images (the objects of one image fail together: an image, not
an object, is the unit of evidence), so a bin seen in two images cannot swing the weights
alone; an unseen bin gets the mean. Weights are the
rates over their mean, i.e. x uniform (1.0 = the bin's uniform share), then bounded:
``w_b = clip(s * rate_b / mean, floor, ceiling)`` with the one ``s`` that keeps the mean
weight at 1 (bisection; ``floor <= 1 <= ceiling`` makes it exist). So every bin keeps at least
``floor / bins`` of the draws (coverage never collapses) and none takes more than
``ceiling / bins``. No failure anywhere: uniform weights. Pure functions, no randomness.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from synthloop.steering.failures import failure_rate

DIGITS = 4  # weights are rounded: the render config holds short, stable numbers


def bounded_weights(failures: Sequence[float], counts: Sequence[float], *, floor: float,
                    ceiling: float, prior: float) -> list[float]:
    """Weights (mean 1, each in [floor, ceiling]) from per-bin ``failures`` out of ``counts``
    (``failures`` may be fractional: images x failure rate)."""
    if not 0 < floor <= 1 <= ceiling:
        raise ValueError(f"need 0 < floor <= 1 <= ceiling, got floor {floor}, ceiling {ceiling}")
    f, n = np.asarray(failures, np.float64), np.asarray(counts, np.float64)
    if f.shape != n.shape or f.ndim != 1 or not len(f):
        raise ValueError(f"failures {f.shape} and counts {n.shape} must be equal, non-empty 1-D")
    if (f < 0).any() or (f > n + 1e-9).any():
        raise ValueError("failures must lie in 0..counts")
    mean = f.sum() / n.sum() if n.sum() else 0.0
    if mean <= 0:
        return [1.0] * len(f)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n + prior > 0, (f + prior * mean) / (n + prior), mean)
    rel = np.maximum(rate / rate.mean(), 1e-9)
    lo, hi = 0.0, ceiling / rel.min()
    for _ in range(200):  # sum(clip(s * rel)) is continuous and non-decreasing in s
        s = (lo + hi) / 2
        lo, hi = (s, hi) if np.clip(s * rel, floor, ceiling).mean() < 1 else (lo, s)
    w = np.clip(hi * rel, floor, ceiling)
    return [round(float(x), DIGITS) for x in w]


def weights_from_renders(analysis: dict[str, Any], *, floor: float, ceiling: float,
                         prior: float) -> dict[str, list[float]]:
    """``{variable: weights}`` from ``failures.analyse_renders``' bins: each bin's failure
    rate, weighed by its number of images."""
    out = {}
    for key, table in analysis["by"].items():
        cells = table["bins"]
        out[key] = bounded_weights([c["images"] * (c["failure_rate"] or 0.0) for c in cells],
                                   [c["images"] for c in cells],
                                   floor=floor, ceiling=ceiling, prior=prior)
    return out


def weight_changes(old: dict[str, list[float]], new: dict[str, list[float]]
                   ) -> dict[str, dict[str, list[float]]]:
    """Per variable whose weights moved: ``{"from": old or uniform, "to": new}``."""
    changes = {}
    for key in sorted(set(old) | set(new)):
        size = len(new.get(key) or old[key])
        before = list(old.get(key) or [1.0] * size)
        after = list(new.get(key) or [1.0] * size)
        if before != after:
            changes[key] = {"from": before, "to": after}
    return changes


__all__ = ["bounded_weights", "failure_rate", "weight_changes", "weights_from_renders"]
