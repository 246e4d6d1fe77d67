"""Query strategy base classes: input checks, box->image aggregation, top-k ranking.

Inputs, for a pool of ``n`` candidate images (unlabeled, or unlabeled + labeled: the caller
decides the scope by what it passes):

- ``image_ids``: (n,) distinct ints (COCO image ids).
- ``probs``: list of n arrays, ``probs[i]`` is (d_i, C+1) float: the class probabilities of the
  d_i detections of image i, background in column 0 (torchvision order; d_i may be 0).
- ``features``: (n, D) float, one vector per image (D = 256: global average pool of FPN P2).

Ranking rule, used everywhere: a higher score ranks first; equal scores keep input order
(the lower index wins a tie), so a selection is a pure function of its inputs and seed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

Aggregation = Literal["sum", "max", "mean"]
AGGREGATIONS: tuple[str, ...] = ("sum", "max", "mean")


@dataclass(frozen=True)
class Selection:
    """The chosen images, best first, with the score each was chosen by."""

    image_ids: tuple[int, ...]
    scores: tuple[float, ...]

    def new_label_ids(self, labeled_ids: Iterable[int] = ()) -> tuple[int, ...]:
        """Chosen ids that are not labeled yet: only these cost the oracle a label."""
        return new_label_ids(self, labeled_ids)


def new_label_ids(selection: Selection, labeled_ids: Iterable[int] = ()) -> tuple[int, ...]:
    """Chosen ids not in ``labeled_ids``, in selection order (scope U+L re-picks cost nothing)."""
    labeled = frozenset(labeled_ids)
    return tuple(i for i in selection.image_ids if i not in labeled)


def rank_desc(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` high to low; ties keep the lower index first (stable)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def _check_ids(image_ids: Sequence[int]) -> np.ndarray:
    ids = np.asarray(image_ids)
    if ids.ndim != 1:
        raise ValueError(f"image_ids must be 1-D, got shape {ids.shape}")
    if len(ids) and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"image_ids must be integers, got dtype {ids.dtype}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("image_ids contains duplicates")
    return ids


def _check_probs(probs: Sequence[np.ndarray] | None, n: int) -> list[np.ndarray]:
    if probs is None:
        raise ValueError("this strategy needs per-detection class probabilities (probs)")
    if len(probs) != n:
        raise ValueError(f"probs has {len(probs)} entries for {n} images")
    out: list[np.ndarray] = []
    width: int | None = None
    for i, p in enumerate(probs):
        arr = np.asarray(p, dtype=np.float64)
        if arr.size == 0:
            arr = arr.reshape(0, arr.shape[-1] if arr.ndim == 2 else (width or 2))
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise ValueError(f"probs[{i}] must be (d, C+1) with C >= 1, got shape {arr.shape}")
        if arr.shape[0]:
            if width is not None and arr.shape[1] != width:
                raise ValueError(f"probs[{i}] has {arr.shape[1]} columns, earlier ones {width}")
            width = arr.shape[1]
            if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
                raise ValueError(f"probs[{i}] must hold finite probabilities in [0, 1]")
        out.append(arr)
    return out


def _check_features(features: np.ndarray | None, n: int) -> np.ndarray:
    if features is None:
        raise ValueError("this strategy needs per-image feature vectors (features)")
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] != n:
        raise ValueError(f"features must be (n={n}, D), got shape {feats.shape}")
    if not np.all(np.isfinite(feats)):
        raise ValueError("features contain NaN or inf")
    return feats


class NoParams(BaseModel):
    """A strategy's parameters: its constructor's keyword arguments, checked by pydantic.
    Subclass it to declare some; unknown keys are errors (config validation uses the same)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AggregationParams(NoParams):
    aggregation: Aggregation = "sum"  # box -> image: sum (paper eq. 2), max or mean


class Strategy(ABC):
    """Choose k images from the candidates. Subclasses implement ``_choose`` on clean inputs,
    set ``name`` and, when the constructor takes parameters, ``Params`` (their pydantic model);
    ``@register_strategy`` (active/registry.py) makes the name known everywhere."""

    name: ClassVar[str]
    Params: ClassVar[type[NoParams]] = NoParams
    needs_probs: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False

    @classmethod
    def needs_model(cls) -> bool:
        """Whether choosing needs a detector's scores (an R run of the grid has none)."""
        return cls.needs_probs or cls.needs_features

    def params(self) -> dict[str, object]:
        """Constructor parameters, for the query record."""
        return {}

    def select(self, image_ids: Sequence[int], probs: Sequence[np.ndarray] | None,
               features: np.ndarray | None, *, k: int, rng_seed: int,
               labeled_ids: Iterable[int] = frozenset(),
               labeled_features: np.ndarray | None = None) -> Selection:
        """Pick ``min(k, n)`` distinct images, best first; k >= n returns every candidate.

        ``labeled_ids``: ids already labeled (some may be among the candidates, scope U+L).
        ``labeled_features``: (m, D) vectors of labeled images that are NOT candidates; only
        core-set uses them (as initial centres). Strategies that do not need ``probs`` or
        ``features`` accept None for them.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        ids = _check_ids(image_ids)
        n = len(ids)
        clean_probs = _check_probs(probs, n) if self.needs_probs else []
        feats = _check_features(features, n) if self.needs_features else None
        if n == 0:
            return Selection((), ())
        labeled = frozenset(int(i) for i in labeled_ids)
        labeled_mask = np.fromiter((int(i) in labeled for i in ids), dtype=bool, count=n)
        extra = None
        if labeled_features is not None and self.needs_features:
            extra = np.asarray(labeled_features, dtype=np.float64)
            if extra.ndim != 2 or (len(extra) and extra.shape[1] != feats.shape[1]):
                raise ValueError(f"labeled_features must be (m, {feats.shape[1]}), "
                                 f"got shape {extra.shape}")
        order, scores = self._choose(clean_probs, feats, k=min(int(k), n), rng_seed=rng_seed,
                                     labeled_mask=labeled_mask, labeled_features=extra)
        order = np.asarray(order, dtype=np.int64)
        return Selection(tuple(int(ids[i]) for i in order), tuple(float(s) for s in scores))

    @abstractmethod
    def _choose(self, probs: list[np.ndarray], features: np.ndarray | None, *, k: int,
                rng_seed: int, labeled_mask: np.ndarray,
                labeled_features: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Return (indices into the candidates, their scores), k distinct indices, best first."""


class ScoredStrategy(Strategy):
    """Uncertainty sampling: score each detection, aggregate per image, take the top k.

    Subclasses implement only ``detection_scores``; an image without detections scores 0
    under every aggregation (paper eq. 2: the empty sum).
    """

    needs_probs = True
    Params = AggregationParams

    def __init__(self, *, aggregation: Aggregation = "sum") -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; "
                             f"known: {', '.join(AGGREGATIONS)}")
        self.aggregation = aggregation

    def params(self) -> dict[str, object]:
        return {"aggregation": self.aggregation}

    @staticmethod
    @abstractmethod
    def detection_scores(probs: np.ndarray) -> np.ndarray:
        """(d, C+1) class probabilities -> (d,) informativeness, >= 0, higher = more useful."""

    def image_scores(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        """(n,) per-image scores: ``aggregation`` over each image's detection scores."""
        n = len(probs)
        counts = np.fromiter((len(p) for p in probs), dtype=np.int64, count=n)
        nonempty = [np.asarray(p, dtype=np.float64) for p in probs if len(p)]
        if not nonempty:
            return np.zeros(n)
        det = self.detection_scores(np.concatenate(nonempty, axis=0))
        owner = np.repeat(np.arange(n), counts)  # one concatenation: ~10x faster than a loop
        if self.aggregation == "max":
            out = np.zeros(n)
            np.maximum.at(out, owner, det)
            return out
        total = np.bincount(owner, weights=det, minlength=n)
        return total if self.aggregation == "sum" else total / np.maximum(counts, 1)

    def _choose(self, probs, features, *, k, rng_seed, labeled_mask, labeled_features):
        scores = self.image_scores(probs)
        order = rank_desc(scores)[:k]
        return order, scores[order]
