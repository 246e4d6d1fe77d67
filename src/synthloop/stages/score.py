"""Stage: score the candidate images with ONE forward pass each (probabilities + P2 features).

The result is cached per (model version, pool md5) in the cycle's state folder, so a crash
after scoring never costs a second pass.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from synthloop import tracking
from synthloop.artifacts import DatasetRef, ModelRef
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.ragged_npz import load_ragged, save_ragged
from synthloop.stages.workspace import Workspace

log = logging.getLogger(__name__)


def candidate_ids(cfg: PipelineConfig, pool: CocoDataset, labeled_ids: set[int]) -> list[int]:
    """Pool images the strategy may pick: U, or U together with L (the paper's {U, L})."""
    ids = [im.id for im in pool.images]
    if cfg.active.scope == "unlabeled":
        ids = [i for i in ids if i not in labeled_ids]
    return ids


def candidate_subset(ids: list[int], *, m: int | None, k: int, seed: int) -> list[int]:
    """A seeded random subset of ``m * k`` of ``ids`` (kept in pool order), or all of ``ids``
    when ``m`` is None or the pool is no larger than that."""
    if m is None or len(ids) <= m * k:
        return list(ids)
    rows = np.random.default_rng(seed).choice(len(ids), size=m * k, replace=False)
    return [ids[j] for j in sorted(rows)]


def subset_seed(cfg: PipelineConfig, cycle: int) -> int:
    """The seed of cycle ``cycle``'s candidate subset (the query's seed: recorded with it)."""
    return cfg.active.seed + cycle


def save_scores(path: Path, scores: list, *, scorer: str = "torch",
                candidates: int | None = None) -> None:
    """``scorer``: what scored ("torch" | "onnx:<runtime>"); ``candidates``: how many images
    were candidates before a subset was drawn (default: as many as were scored)."""
    width = scores[0].probs.shape[1] if scores and scores[0].probs.ndim == 2 else 0
    probs = [s.probs.reshape(-1, width).astype(np.float32) for s in scores] if width else []
    save_ragged(path, [s.image_id for s in scores], [len(s.scores) for s in scores],
                {"probs": probs}, empty={"probs": np.zeros((0, width), np.float32)},
                features=np.stack([s.feature for s in scores]).astype(np.float32),
                scorer=np.array(scorer),
                candidates=np.array(len(scores) if candidates is None else candidates))


def scores_meta(path: Path) -> dict[str, object]:
    """``{"scorer", "candidates", "scored"}`` of a scores file (older files: torch, all)."""
    with np.load(path) as z:
        scored = len(z["image_ids"])
        return {"scorer": str(z["scorer"]) if "scorer" in z.files else "torch",
                "candidates": int(z["candidates"]) if "candidates" in z.files else scored,
                "scored": scored}


def load_scores(path: Path) -> tuple[list[int], list[np.ndarray], np.ndarray]:
    """Return (image ids, per-image probs (d_i, C+1), features (n, 256))."""
    ids, ragged, rest = load_ragged(path, ["probs"])
    return ids, ragged["probs"], rest["features"]


def run(cfg: PipelineConfig, *, cycle: int, model: ModelRef, pool: DatasetRef,
        labeled_ids: set[int], progress: bool = True) -> Path:
    from synthloop.detection import load_checkpoint, predict_with_probs_and_features
    from synthloop.detection.device import resolve_device

    m = cfg.active.candidate_subset
    subset = f"-m{m}k{cfg.active.k}s{subset_seed(cfg, cycle)}" if m else ""
    out = Workspace.of(cfg).cycle_dir(cycle) / f"scores-v{model.version}-{pool.md5[:12]}{subset}.npz"
    if out.exists():
        log.info("score: cached %s", out.name)
        return out
    pool_ds = CocoDataset.load(pool.annotations, pool.image_root)
    ids = candidate_ids(cfg, pool_ds, labeled_ids)
    if not ids:
        raise ValueError(f"score: the pool {pool.annotations} has no candidate images "
                         f"(scope {cfg.active.scope}, {len(labeled_ids)} labelled)")
    all_candidates = len(ids)
    ids = candidate_subset(ids, m=m, k=cfg.active.k, seed=subset_seed(cfg, cycle))
    if len(ids) < all_candidates:
        log.info("score: a random subset of %d of %d candidates (active.candidate_subset %d x k "
                 "%d, seed %d)", len(ids), all_candidates, m, cfg.active.k, subset_seed(cfg, cycle))
    tracking.setup(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        net = load_checkpoint(tracking.download_checkpoint(model.uri, Path(tmp)),
                              device=resolve_device(cfg.runtime.device))
    net, scorer = tracking.exported_or_torch(model.uri, net, runtime=cfg.export.runtime,
                                             use=cfg.export.use)
    scores = predict_with_probs_and_features(net, pool_ds.subset(ids),
                                             batch_size=cfg.active.batch_size, progress=progress)
    save_scores(out, scores, scorer=scorer, candidates=all_candidates)
    log.info("score: %d images, %d detections (%s)", len(scores),
             sum(len(s.scores) for s in scores), scorer)
    return out
