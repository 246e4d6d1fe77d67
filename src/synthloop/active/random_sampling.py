"""Random sampling: the paper's baseline (repeated with several seeds)."""

from __future__ import annotations

import numpy as np

from synthloop.active.base import Strategy
from synthloop.active.registry import register_strategy


@register_strategy
class RandomStrategy(Strategy):
    """Shuffle the candidates with ``numpy.random.default_rng(rng_seed)`` and take the first k.

    There is no informativeness score: every chosen image gets score 0.0. The order of the
    selection is the shuffle order, so k >= n returns the whole shuffled pool.
    """

    name = "random"

    def _choose(self, probs, features, *, k, rng_seed, labeled_mask, labeled_features):
        n = len(labeled_mask)
        order = np.random.default_rng(rng_seed).permutation(n)[:k]
        return order, np.zeros(len(order))
