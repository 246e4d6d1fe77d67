"""Validation-set rotation for the experiment grid, built in memory from the workspace's sets.

The workspace holds one pool (its ground truth in ``oracle/pool.json``) and one validation
set, imported or rendered by ``prepare_data``; the cycle stages depend on that layout, so the
rotation does not touch it. With ``folds`` > 1 the harness joins the two sets into one
``CocoDataset`` (``union_dataset``: file names relative to the folder both image roots share,
ids renumbered 1..N, pool images first), splits it with ``fold_split`` and runs every cell once
per fold, the fold as the validation set and the rest as the pool.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from synthloop.data.coco import CocoDataset, union


@dataclass(frozen=True)
class Fold:
    """One pool/validation split. ``index`` 0: the pipeline's own split (no rotation);
    1..n: rotation folds. ``tag``: a digest of which images are where (keys finished runs)."""

    index: int
    pool: CocoDataset
    val: CocoDataset

    @property
    def tag(self) -> str:
        return names_digest(self.pool, self.val)


def names_digest(*datasets: CocoDataset) -> str:
    """A short digest of which image files each dataset holds (order within one ignored)."""
    names = [sorted(im.file_name for im in ds.images) for ds in datasets]
    return hashlib.sha256(repr(names).encode()).hexdigest()[:12]


def fold_split(names: list[str], *, folds: int, seed: int) -> list[list[int]]:
    """Split the images called ``names`` into ``folds`` disjoint parts covering them all,
    sizes differing by at most one. Returns indices into ``names``, each part sorted.

    The split depends on the set of names and ``seed`` only, not on their order.
    """
    if not 1 <= folds <= len(names):
        raise ValueError(f"cannot split {len(names)} images into {folds} folds")
    if len(set(names)) != len(names):
        raise ValueError("image names repeat; a fold split needs unique names")
    by_name = sorted(range(len(names)), key=lambda i: names[i])
    order = np.random.default_rng(seed).permutation(len(names))
    return [sorted(by_name[j] for j in part) for part in np.array_split(order, folds)]


def union_dataset(pool: CocoDataset, val: CocoDataset) -> CocoDataset:
    """Pool and validation images in one dataset (pool first, ids renumbered from 1)."""
    return union([pool, val])


def rotation_folds(pool: CocoDataset, val: CocoDataset, *, folds: int, seed: int) -> list[Fold]:
    """``folds`` == 1: the sets as given (fold 0). Else ``folds`` folds of their union."""
    if folds == 1:
        return [Fold(0, pool, val)]
    union = union_dataset(pool, val)
    ids = [im.id for im in union.images]
    parts = fold_split([im.file_name for im in union.images], folds=folds, seed=seed)
    out = []
    for n, part in enumerate(parts, 1):
        val_ids = {ids[i] for i in part}
        out.append(Fold(n, union.subset([i for i in ids if i not in val_ids]),
                        union.subset([i for i in ids if i in val_ids])))
    return out


__all__ = ["Fold", "fold_split", "names_digest", "rotation_folds", "union_dataset"]
