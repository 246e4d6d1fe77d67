"""Core-set selection (Sener & Savarese 2018): greedy k-center on the image feature vectors."""

from __future__ import annotations

import numpy as np

from synthloop.active.base import Strategy
from synthloop.active.registry import register_strategy


@register_strategy
class CoresetStrategy(Strategy):
    """Repeatedly take the candidate farthest (Euclidean) from every centre so far.

    Initial centres: the labeled candidates (scope U+L) plus ``labeled_features`` given to
    ``select``. With none, the first pick is the candidate farthest from the candidates' mean
    (deterministic; ``rng_seed`` is unused). Score = distance to the nearest centre when picked
    (to the mean for that first pick), so from the second pick on scores never increase. Ties
    go to the lower index. Labeled candidates sit at distance 0: picked after all others.
    """

    name = "coreset"
    needs_features = True

    def _choose(self, probs, features, *, k, rng_seed, labeled_mask, labeled_features):
        n = len(features)
        centres = [features[labeled_mask]]
        if labeled_features is not None and len(labeled_features):
            centres.append(labeled_features)
        init = np.concatenate(centres, axis=0)
        if len(init):
            min_d = _min_dist(features, init)
        else:  # the mean only chooses the first pick; it is not a centre
            to_mean = np.sqrt(((features - features.mean(axis=0)) ** 2).sum(axis=1))
            min_d = np.full(n, np.inf)
        taken = np.zeros(n, dtype=bool)
        order = np.empty(k, dtype=np.int64)
        scores = np.empty(k)
        for j in range(k):
            rank_by = to_mean if j == 0 and not len(init) else min_d
            i = int(np.argmax(np.where(taken, -np.inf, rank_by)))
            order[j], scores[j] = i, rank_by[i]
            taken[i] = True
            d_new = np.sqrt(((features - features[i]) ** 2).sum(axis=1))
            min_d = np.minimum(min_d, d_new)
        return order, scores


def _min_dist(points: np.ndarray, centres: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(n, D), (m, D) -> (n,) distance from each point to its nearest centre, chunked."""
    out = np.empty(len(points))
    c2 = np.sum(centres**2, axis=1)
    for s in range(0, len(points), chunk):
        p = points[s:s + chunk]
        d2 = np.sum(p**2, axis=1)[:, None] - 2.0 * p @ centres.T + c2[None, :]
        out[s:s + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out
