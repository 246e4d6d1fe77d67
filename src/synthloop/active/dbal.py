"""Diverse mini-batch active learning (DBAL, Zhdanov 2019), as the paper uses it.

1. Score every candidate with the aggregated margin (default: margin-sum, paper eq. 1-2).
2. Keep the top ``ceil(beta * k)`` by that score (all of them when that exceeds the pool).
3. Cluster their feature vectors with k-means++ into k clusters, each image weighted by its
   score (uniform weights when every score is 0).
4. For each centre, in cluster-index order, take the nearest (Euclidean) image not chosen yet.

Step 4 always yields k distinct images, also when there are fewer distinct feature vectors than
k (k-means then returns duplicate centres; each still claims its own image). Distance ties go
to the higher-scored image (the prefilter's rank order). The result is listed best score first.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from pydantic import Field

from synthloop.active.base import Aggregation, AggregationParams, Strategy, rank_desc
from synthloop.active.registry import register_strategy
from synthloop.active.uncertainty import MarginStrategy


class DBALParams(AggregationParams):
    beta: float = Field(default=2.0, ge=1.0)  # prefilter: the top ceil(beta * k) by margin
    n_init: int = Field(default=1, ge=1)  # k-means restarts


@register_strategy
class DBALStrategy(Strategy):
    """DBAL over margin scores; ``beta`` >= 1 sets the prefilter size, ``n_init`` k-means runs."""

    name = "dbal"
    needs_probs = True
    needs_features = True
    Params = DBALParams

    def __init__(self, *, beta: float = 2.0, aggregation: Aggregation = "sum",
                 n_init: int = 1) -> None:
        if not beta >= 1.0:
            raise ValueError(f"beta must be >= 1, got {beta}")
        if n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {n_init}")
        self.beta = float(beta)
        self.n_init = int(n_init)
        self._margin = MarginStrategy(aggregation=aggregation)

    def params(self) -> dict[str, object]:
        return {"beta": self.beta, "aggregation": self._margin.aggregation, "n_init": self.n_init}

    def _choose(self, probs, features, *, k, rng_seed, labeled_mask, labeled_features):
        scores = self._margin.image_scores(probs)
        ranked = rank_desc(scores)
        n = len(scores)
        if k >= n:
            return ranked, scores[ranked]
        keep = ranked[: min(n, math.ceil(self.beta * k))]
        points, weights = features[keep], scores[keep]
        if not np.any(weights > 0):
            weights = np.ones_like(weights)
        centres = self._cluster(points, weights, k=k, seed=rng_seed)
        chosen = _nearest_unique(centres, points)
        picked = keep[chosen]
        picked = picked[rank_desc(scores[picked])]
        return picked, scores[picked]

    def _cluster(self, points: np.ndarray, weights: np.ndarray, *, k: int, seed: int) -> np.ndarray:
        from sklearn.cluster import KMeans  # imported here: keeps `import synthloop.active` light
        from sklearn.exceptions import ConvergenceWarning
        from threadpoolctl import threadpool_limits

        km = KMeans(n_clusters=k, init="k-means++", n_init=self.n_init,
                    random_state=seed % 2**32)
        # One thread: the problem is tiny (beta*k points), and OpenMP/BLAS threads spinning
        # against a busy neighbour process made 0.1 s fits take 1-2 s on 2 cores.
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            # fewer distinct points than k: duplicate centres are handled by _nearest_unique
            warnings.simplefilter("ignore", ConvergenceWarning)
            km.fit(points, sample_weight=weights)
        return km.cluster_centers_


def _nearest_unique(centres: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(k, D) centres, (m, D) points, k <= m -> k distinct point indices, one per centre."""
    d2 = (np.sum(centres**2, axis=1)[:, None] - 2.0 * centres @ points.T
          + np.sum(points**2, axis=1)[None, :])
    taken = np.zeros(len(points), dtype=bool)
    out = np.empty(len(centres), dtype=np.int64)
    for c in range(len(centres)):
        row = np.where(taken, np.inf, d2[c])
        out[c] = int(np.argmin(row))  # argmin: first (best-ranked) point on a tie
        taken[out[c]] = True
    return out
