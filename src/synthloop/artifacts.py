"""Small frozen records passed between stages (never bare paths or big objects)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DatasetRef:
    """A COCO dataset on disk: ``annotations`` json, its ``image_root``, and its DVC/content md5."""

    name: str
    annotations: Path
    image_root: Path
    md5: str
    num_images: int
    num_annotations: int


@dataclass(frozen=True)
class ModelRef:
    """A trained detector: the MLflow run that made it and where its weights are."""

    run_id: str
    uri: str  # runs:/<run_id>/model
    version: str | None = None  # registry version, when registered
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryBatch:
    """The images a query strategy chose, with everything needed to reproduce the choice."""

    strategy: str
    params: dict[str, Any]
    seed: int
    model_version: str
    pool_md5: str
    image_ids: tuple[int, ...]
    scores: tuple[float, ...]
    new_label_ids: tuple[int, ...]  # chosen ids not labeled before (these cost a label)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_ids"], d["scores"] = list(self.image_ids), list(self.scores)
        d["new_label_ids"] = list(self.new_label_ids)
        return d


@dataclass(frozen=True)
class EvalResult:
    """COCO metrics on one dataset version."""

    metrics: dict[str, float]  # AP, AP50, AP75, AP_<class>
    dataset_md5: str
    num_images: int


@dataclass(frozen=True)
class ImprovementInterval:
    """Paired bootstrap of ``metric`` over the validation images (gating/bootstrap.py).

    ``candidate``/``champion``/``improvement`` are the full-set values; ``lower``/``upper`` the
    percentile interval of (candidate - champion) at ``confidence`` (two-sided) over
    ``resamples`` resamples of the images with replacement, the same resample for both models.
    """

    metric: str
    candidate: float
    champion: float
    improvement: float
    lower: float
    upper: float
    confidence: float
    resamples: int
    num_images: int
    seed: int
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate model replaces the champion, and why (``decide_promotion``'s output).

    ``champion_value`` and ``improvement`` are None when there is nothing to compare with;
    ``interval`` is the bootstrap interval the decision used, None for a point comparison.
    """

    promote: bool
    reason: str
    metric: str
    candidate_value: float | None
    champion_value: float | None
    improvement: float | None
    interval: ImprovementInterval | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
