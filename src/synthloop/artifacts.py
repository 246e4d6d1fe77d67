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
    # Unlabelled candidates left out because no configured oracle can label them (the
    # simulated oracle has no ground truth for them); stages/label_routing.py.
    excluded: int = 0
    # oracle name -> the new_label_ids it labels; {} (records written before routing): all
    # go to labeling.oracle.
    routes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_ids"], d["scores"] = list(self.image_ids), list(self.scores)
        d["new_label_ids"] = list(self.new_label_ids)
        d["routes"] = {k: list(v) for k, v in self.routes.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QueryBatch":
        """The inverse of ``to_dict`` (a record read back from json)."""
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        d["routes"] = {k: tuple(v) for k, v in (d.get("routes") or {}).items()}
        return cls(**d)


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
    # class name -> (lower, upper) interval of its AP DROP (champion - candidate AP_<class>)
    # over the same resamples (those holding a box of the class); gating/bootstrap.py
    class_drops: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClassDrop:
    """One class's AP (``AP_<class>``, IoU .50:.95), champion vs candidate on the same val set.

    ``drop`` = champion - candidate (positive: the candidate is worse); ``lower``/``upper``: the
    bootstrap interval of that drop, None without a bootstrap; ``regressed``: drop exceeds
    ``gate.max_class_drop``.
    """

    name: str
    candidate: float
    champion: float
    drop: float
    regressed: bool
    lower: float | None = None
    upper: float | None = None


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate model replaces the champion, and why (``decide_promotion``'s output).

    ``champion_value`` and ``improvement`` are None when there is nothing to compare with;
    ``interval`` is the bootstrap interval the decision used, None for a point comparison.
    ``rule``: which evidence decided (gating/decision.py RULES: "bootstrap", "point", "point
    (allowed by config)", "no champion", "refused: could not evaluate"); ``class_drops``: the
    per-class non-regression check, one entry per class with ground truth in both evaluations.
    """

    promote: bool
    reason: str
    metric: str
    candidate_value: float | None
    champion_value: float | None
    improvement: float | None
    interval: ImprovementInterval | None = None
    rule: str = "point"
    class_drops: tuple[ClassDrop, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
