"""Per-detection uncertainty scores (baal heuristics); ranking and aggregation live in the base.

Every ``detection_scores`` takes ``probs``: (d, C+1) float, class probabilities of d detections
with background in column 0, and returns (d,) scores, higher = more informative.
"""

from __future__ import annotations

import numpy as np

from synthloop.active.base import ScoredStrategy
from synthloop.active.registry import register_strategy


@register_strategy
class MarginStrategy(ScoredStrategy):
    """Maximum margin (paper eq. 1): s = 1 - (p1 - p2), the two most probable classes,
    background included. With the default ``aggregation="sum"`` this is the paper's margin-sum."""

    name = "margin"

    @staticmethod
    def detection_scores(probs: np.ndarray) -> np.ndarray:
        if len(probs) == 0:
            return np.zeros(0)
        top2 = np.partition(probs, -2, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])


@register_strategy
class EntropyStrategy(ScoredStrategy):
    """Shannon entropy of the class distribution (nats), background included."""

    name = "entropy"

    @staticmethod
    def detection_scores(probs: np.ndarray) -> np.ndarray:
        p = np.clip(probs, 1e-12, 1.0)  # 0 * log 0 counts as 0
        return np.maximum(-(probs * np.log(p)).sum(axis=1), 0.0)


@register_strategy
class LeastConfidenceStrategy(ScoredStrategy):
    """Least confidence: s = 1 - p1, the most probable class's probability."""

    name = "least_confidence"

    @staticmethod
    def detection_scores(probs: np.ndarray) -> np.ndarray:
        if len(probs) == 0:
            return np.zeros(0)
        return 1.0 - probs.max(axis=1)
