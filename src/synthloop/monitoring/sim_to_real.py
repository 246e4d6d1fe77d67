"""The sim-to-real gap in the detector's own feature space, and the rule it drives.

Two numbers compare a sample of render features ``x`` (m, d) with a sample of real-photo
features ``y`` (n, d) (rows are images, or boxes of one class):

* ``mmd2_unbiased``: the squared maximum mean discrepancy with a Gaussian (RBF) kernel
  ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``, ``sigma`` the median pairwise distance of the
  pooled sample (the median heuristic), UNBIASED estimate (Gretton et al. 2012, eq. 3: the
  within-sample sums leave out i == j), so it is ~0 (and may be slightly negative) when both
  samples come from one distribution; at most 2. A permutation p-value says whether it is
  larger than re-splits of the pooled sample give.
* ``domain_auc``: how well a logistic regression (standardized features, L2, C = 1) tells the
  two apart, as the ROC AUC of its out-of-fold decision values over stratified k-fold cross
  validation: 0.5 = indistinguishable, 1 = fully separable (the domain-classifier view of the
  proxy A-distance of Ben-David et al. 2010).

``synthetic_share`` turns the AUC and the number of real labels into the share of renders in
a fine-tune's training set (``finetune_mix.mode: gap_rule``). No torch here: numpy + sklearn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from synthloop.config import FinetuneMixConfig


def _as_samples(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two (n, d) samples with the same d, got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"need at least 2 rows a sample, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features hold NaN or inf")
    return x, y


def _sq_dists(z: np.ndarray) -> np.ndarray:
    sq = (z * z).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """The median heuristic: the median distance between distinct rows of the pooled sample
    (1.0 when every row is the same point)."""
    x, y = _as_samples(x, y)
    d2 = _sq_dists(np.vstack([x, y]))
    med = float(np.median(np.sqrt(d2[np.triu_indices(len(d2), k=1)])))
    return med if med > 0 else 1.0


def _mmd2_from_kernel(k: np.ndarray, m: int) -> float:
    n = len(k) - m
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None,
                  permutations: int = 0, seed: int = 0) -> dict[str, float]:
    """Unbiased MMD^2 of ``x`` (m, d) and ``y`` (n, d) with an RBF kernel.

    ``bandwidth``: sigma (None: the median heuristic on the pooled sample). ``permutations``
    > 0 adds ``p_value``: the share of random re-splits of the pooled rows (plus the observed
    split) whose MMD^2 is at least the observed one. Returns {"mmd2", "bandwidth"[, "p_value"]}.
    """
    x, y = _as_samples(x, y)
    sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if sigma <= 0:
        raise ValueError(f"bandwidth must be > 0, got {sigma}")
    k = np.exp(-_sq_dists(np.vstack([x, y])) / (2.0 * sigma * sigma))
    m = len(x)
    observed = _mmd2_from_kernel(k, m)
    out = {"mmd2": observed, "bandwidth": sigma}
    if permutations > 0:
        rng = np.random.default_rng(seed)
        hits = 1
        for _ in range(permutations):
            p = rng.permutation(len(k))
            hits += _mmd2_from_kernel(k[np.ix_(p, p)], m) >= observed
        out["p_value"] = hits / (permutations + 1)
    return out


def domain_auc(x: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling ``x`` (label 1, renders) from
    ``y`` (label 0, photos); ``folds`` is lowered to the smaller sample's size when needed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _as_samples(x, y)
    k = min(folds, len(x), len(y))
    if k < 2:
        raise ValueError("domain_auc needs folds >= 2")
    z = np.vstack([x, y])
    labels = np.r_[np.ones(len(x)), np.zeros(len(y))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    scores = cross_val_predict(clf, z, labels, cv=StratifiedKFold(k, shuffle=True,
                                                                   random_state=seed),
                               method="decision_function")
    return float(roc_auc_score(labels, scores))


@dataclass(frozen=True)
class Gap:
    """The gap between two samples: ``mmd2`` (unbiased, RBF, median-heuristic ``bandwidth``),
    its permutation ``p_value``, the cross-validated domain-classifier ``auc``, and the sizes."""

    mmd2: float
    bandwidth: float
    p_value: float | None
    auc: float
    n_synthetic: int
    n_real: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_gap(x: np.ndarray, y: np.ndarray, *, folds: int = 5, permutations: int = 100,
                seed: int = 0) -> Gap:
    """MMD^2 and domain AUC of renders ``x`` (m, d) vs photos ``y`` (n, d)."""
    mmd = mmd2_unbiased(x, y, permutations=permutations, seed=seed)
    return Gap(mmd2=mmd["mmd2"], bandwidth=mmd["bandwidth"], p_value=mmd.get("p_value"),
               auc=domain_auc(x, y, folds=folds, seed=seed), n_synthetic=len(x), n_real=len(y))


def synthetic_share(mix: FinetuneMixConfig, *, auc: float | None, labels: int) -> float:
    """The share of renders in a fine-tune's training set.

    ``off``: 0 (the paper: L only). ``fixed``: ``synthetic_share``. ``gap_rule``:
    ``clip(base * (1 - excess) * n0 / (n0 + labels), lo, hi)`` with ``excess = clip(2 * auc - 1,
    0, 1)`` the domain classifier's AUC above chance (0: renders look like photos to the model,
    1: fully separable). Renders help most when real labels are few and the model sees them as
    photos; as labels grow, or the model separates the domains, the real labels should dominate
    (the weight on the source domain in Ben-David et al. 2010's bound shrinks with both the
    divergence and the target sample size; this is a monotone, transparent stand-in).
    """
    if mix.mode == "off":
        return 0.0
    if mix.mode == "fixed":
        return float(mix.synthetic_share)
    if auc is None or not np.isfinite(auc):
        raise ValueError("finetune_mix.mode gap_rule needs the cycle's sim-to-real AUC")
    if labels < 0:
        raise ValueError(f"labels must be >= 0, got {labels}")
    excess = float(np.clip(2.0 * auc - 1.0, 0.0, 1.0))
    share = mix.base * (1.0 - excess) * mix.n0 / (mix.n0 + labels)
    return float(np.clip(share, mix.lo, mix.hi))


def synthetic_count(share: float, real: int) -> int:
    """Renders to add to ``real`` labelled images so they make ``share`` of the set."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"synthetic share must be in [0, 1), got {share}")
    return int(round(share / (1.0 - share) * real))
