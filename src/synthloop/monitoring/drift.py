"""Drift checks with Evidently 0.7: embeddings, prediction confidence, image statistics.

One Evidently ``Report`` per check run holds every metric (and becomes the HTML logged to
MLflow). Evidently 0.7 returns scores, not booleans, so thresholds are ours:

* embeddings: ``EmbeddingsDrift`` with the MMD (default) or domain-classifier ("model") method
  on PCA-reduced features. Its raw score depends on the sample sizes, so the threshold is
  calibrated per check by a permutation test: the same method scored on
  ``monitoring.permutations`` random re-splits of the pooled images, threshold = the (1 - alpha) quantile. Identical
  distributions then fire at rate ~alpha, whatever the sizes (measured in
  benchmarks/drift_quality.py). ``monitoring.embedding_threshold`` fixes it instead.
* confidence and image statistics: ``ValueDrift`` with the two-sample K-S test; the score is
  the p-value, drift iff p < ``monitoring.stat_alpha``.
* objects: what the champion detects, one row per image with a detection (``OBJECT_COLUMNS``:
  CIELAB colour, area and aspect of its top boxes), standardized on the pooled rows and tested
  as one multivariate sample with the same Evidently MMD method and permutation threshold as
  the embeddings: one check at level alpha. On the drift benchmark it caught a new part colour
  about twice as often as five per-column K-S tests at alpha / 5 (docs/benchmarks.md). Not
  computed (score NaN: never drift) while a side has fewer than ``monitoring.object_min_images``
  images with a detection.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from synthloop.config import MonitoringConfig
from synthloop.monitoring.decision import DriftCheck
from synthloop.monitoring.features import OBJECT_COLUMNS, STAT_COLUMNS, FeatureTable

log = logging.getLogger(__name__)
PERMUTATIONS = 100


def _embedding_method(name: str, pca_components: int | None):
    from evidently.metrics.embeddings import MMDDriftMethod, ModelDriftMethod

    if name == "mmd":
        return MMDDriftMethod(pca_components=pca_components)
    if name == "model":
        return ModelDriftMethod(pca_components=pca_components)
    raise ValueError(f"unknown embedding drift method {name!r}; known: mmd, model")


def _frame(emb: np.ndarray):
    import pandas as pd

    return pd.DataFrame(emb, columns=[f"e{i}" for i in range(emb.shape[1])])


def _pca_components(cfg: MonitoringConfig, n_ref: int, n_cur: int, dims: int) -> int | None:
    if cfg.pca_components is None:
        return None
    return max(1, min(cfg.pca_components, n_ref - 1, n_cur - 1, dims))


def permutation_threshold(reference: np.ndarray, current: np.ndarray, method, *, alpha: float,
                          permutations: int = PERMUTATIONS, seed: int = 0) -> float:
    """(1 - alpha) quantile of ``method``'s score over random re-splits of the pooled rows."""
    pooled = np.concatenate([reference, current])
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(permutations):
        perm = rng.permutation(len(pooled))
        cur, ref = pooled[perm[:len(current)]], pooled[perm[len(current):]]
        null.append(float(method(_frame(cur), _frame(ref))[0]))  # methods mutate their frames
    return float(np.quantile(null, 1.0 - alpha))


def _dataset(table: FeatureTable):
    import pandas as pd
    from evidently import DataDefinition, Dataset

    cols = [f"e{i}" for i in range(table.embeddings.shape[1])]
    df = pd.DataFrame(table.embeddings.astype(np.float64), columns=cols)
    df["confidence"] = table.confidence.astype(np.float64)
    for name in STAT_COLUMNS:
        df[name] = np.asarray(table.stats[name], np.float64)
    return Dataset.from_pandas(df, data_definition=DataDefinition(
        embeddings={"p2": cols}, numerical_columns=["confidence", *STAT_COLUMNS]))


def _scores_without_report(reference: FeatureTable, current: FeatureTable, method,
                           columns: list[str]) -> list[float]:
    """The numbers the Report computes, from the same Evidently functions, minus its rendering
    (the embedding widget runs t-SNE: seconds per check). For benchmarks of many checks."""
    import pandas as pd
    from evidently.legacy.calculations.stattests.ks_stattest import _ks_stat_test

    values = [float(method(_frame(current.embeddings), _frame(reference.embeddings))[0])]
    for c in columns:
        ref = reference.confidence if c == "confidence" else reference.stats[c]
        cur = current.confidence if c == "confidence" else current.stats[c]
        values.append(float(_ks_stat_test(pd.Series(ref, dtype=float), pd.Series(cur, dtype=float),
                                          None, 0.05)[0]))
    return values


def object_rows(table: FeatureTable) -> np.ndarray:
    """(m, 5) OBJECT_COLUMNS of the images that have a detection (rows without NaN)."""
    if not all(c in table.stats for c in OBJECT_COLUMNS):
        return np.zeros((0, len(OBJECT_COLUMNS)))
    rows = np.stack([np.asarray(table.stats[c], np.float64) for c in OBJECT_COLUMNS], axis=1)
    return rows[np.isfinite(rows).all(axis=1)]


def objects_check(reference: FeatureTable, current: FeatureTable,
                  cfg: MonitoringConfig) -> DriftCheck:
    """MMD of the object rows (pooled z-scores: the same scaling in every permutation, so the
    permutation threshold stays exact) against its permutation threshold at ``stat_alpha``."""
    ref, cur = object_rows(reference), object_rows(current)
    if min(len(ref), len(cur)) < cfg.object_min_images:
        return DriftCheck("objects", "mmd", float("nan"), float("nan"), "above")
    pooled = np.concatenate([ref, cur])
    scale = pooled.std(axis=0)
    scale[scale == 0] = 1.0
    ref, cur = (ref - pooled.mean(axis=0)) / scale, (cur - pooled.mean(axis=0)) / scale
    method = _embedding_method("mmd", None)
    score = float(method(_frame(cur), _frame(ref))[0])
    threshold = permutation_threshold(ref, cur, method, alpha=cfg.stat_alpha, seed=cfg.seed,
                                      permutations=cfg.permutations)
    return DriftCheck("objects", "mmd", score, threshold, "above")


def run_checks(reference: FeatureTable, current: FeatureTable, cfg: MonitoringConfig, *,
               html_path: Path | None = None, report: bool = True) -> list[DriftCheck]:
    """Score ``current`` against ``reference``; write Evidently's HTML report to ``html_path``.

    ``report=False`` skips the Evidently Report (and its HTML) but computes the same scores.
    BLAS runs single-threaded here: these matrices are small (hundreds x 256), and OpenBLAS's
    thread pool next to torch's made one 100x256 SVD take 1-2 s instead of 2-20 ms on 2 cores.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _run_checks(reference, current, cfg, html_path=html_path, report=report)


def _run_checks(reference: FeatureTable, current: FeatureTable, cfg: MonitoringConfig, *,
                html_path: Path | None, report: bool) -> list[DriftCheck]:
    from evidently import Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift

    if len(reference) < 2 or len(current) < 2:
        raise ValueError(f"drift checks need >= 2 images per side, got {len(reference)} "
                         f"reference and {len(current)} current")
    pca = _pca_components(cfg, len(reference), len(current), reference.embeddings.shape[1])
    method = _embedding_method(cfg.embedding_method, pca)
    columns = ["confidence", *STAT_COLUMNS]
    if report:
        snapshot = Report([EmbeddingsDrift(embeddings_name="p2", drift_method=method),
                           *[ValueDrift(column=c, method="ks") for c in columns]]
                          ).run(_dataset(current), _dataset(reference))
        values = [float(m["value"]) for m in snapshot.dict()["metrics"]]
        if html_path is not None:
            Path(html_path).parent.mkdir(parents=True, exist_ok=True)
            snapshot.save_html(str(html_path))
    else:
        values = _scores_without_report(reference, current, method, columns)
    if cfg.embedding_threshold is not None:
        threshold = cfg.embedding_threshold
    else:
        threshold = permutation_threshold(reference.embeddings, current.embeddings,
                                          _embedding_method(cfg.embedding_method, pca),
                                          alpha=cfg.stat_alpha, seed=cfg.seed,
                                          permutations=cfg.permutations)
    checks = [DriftCheck("embedding", cfg.embedding_method, values[0], threshold, "above")]
    checks += [DriftCheck(c, "ks", v, cfg.stat_alpha, "below") for c, v in zip(columns, values[1:])]
    if cfg.objects:
        checks.append(objects_check(reference, current, cfg))
    return checks
