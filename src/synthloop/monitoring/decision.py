"""Pure decisions of the monitor: did the data drift, and should a cycle start?

``decide_drift`` turns measured scores and thresholds into a ``DriftDecision``;
``decide_trigger`` turns pool growth, drift and the champion's monitored metric into a
``TriggerDecision`` (the event the monitor flow emits). Neither touches files or services.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from synthloop.config import TriggerConfig

Direction = Literal["above", "below"]


@dataclass(frozen=True)
class DriftCheck:
    """One check: drifted iff ``score`` is above (or below, for p-values) ``threshold``."""

    # embedding | confidence | brightness | contrast | sharpness | width | height | objects
    name: str
    method: str  # mmd | model | ks
    # A non-finite score means "not computed" (e.g. too few detections for the object
    # statistics): never drift, and the decision's reason names it.
    score: float
    threshold: float
    direction: Direction

    @property
    def drifted(self) -> bool:
        if not math.isfinite(self.score):
            return False
        return self.score > self.threshold if self.direction == "above" else self.score < self.threshold


@dataclass(frozen=True)
class DriftDecision:
    drifted: bool
    reason: str
    checks: tuple[DriftCheck, ...]
    n_reference: int
    n_current: int

    @property
    def drifted_checks(self) -> list[str]:
        return [c.name for c in self.checks if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [{**asdict(c), "drifted": c.drifted} for c in self.checks]
        return d


def decide_drift(checks: tuple[DriftCheck, ...] | list[DriftCheck], *, n_reference: int,
                 n_current: int, min_current: int) -> DriftDecision:
    """Drift iff at least ``min_current`` new images and any check crosses its threshold.

    Image-level checks (embedding, confidence, image statistics) and the object-level one
    (colour and size inside the champion's boxes) count alike: any one of them is drift.
    """
    checks = tuple(checks)
    if n_current < min_current:
        return DriftDecision(False, f"only {n_current} new images (< {min_current}): no decision "
                                    "yet", checks, n_reference, n_current)
    skipped = [c.name for c in checks if not math.isfinite(c.score)]
    note = f"; not computed: {', '.join(skipped)}" if skipped else ""
    fired = [c for c in checks if c.drifted]
    if not fired:
        return DriftDecision(False, f"no drift in {len(checks) - len(skipped)} checks "
                                    f"({n_current} new vs {n_reference} reference images){note}",
                             checks, n_reference, n_current)
    parts = [f"{c.name} {c.method} {c.score:.4g} {'>' if c.direction == 'above' else '<'} "
             f"{c.threshold:.4g}" for c in fired]
    return DriftDecision(True, "drift: " + "; ".join(parts) + note, checks, n_reference,
                         n_current)


EVENT_POOL = "synthloop.pool.grew"
EVENT_DRIFT = "synthloop.drift.detected"
EVENT_METRIC = "synthloop.champion.degraded"
EVENT_CAD = "synthloop.cad.changed"


@dataclass(frozen=True)
class TriggerDecision:
    """Whether the monitor asks for a cycle; ``event`` names the strongest reason."""

    fire: bool
    event: str | None
    trigger: str | None  # short name recorded by the cycle lock: drift | metric-drop | pool-grew
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_trigger(*, pool_growth: int, drift: DriftDecision | None,
                   champion_confidence: float | None, reference_confidence: float | None,
                   cfg: TriggerConfig) -> TriggerDecision:
    """Drift beats a metric drop beats pool growth (the event carries the strongest reason)."""
    fired: list[tuple[str, str, str]] = []
    if cfg.on_drift and drift is not None and drift.drifted:
        fired.append((EVENT_DRIFT, "drift", drift.reason))
    if champion_confidence is not None and reference_confidence is not None:
        drop = reference_confidence - champion_confidence
        if drop >= cfg.confidence_drop:
            fired.append((EVENT_METRIC, "metric-drop",
                          f"champion mean top score fell {reference_confidence:.3f} -> "
                          f"{champion_confidence:.3f} (drop {drop:.3f} >= {cfg.confidence_drop})"))
    if pool_growth >= cfg.pool_growth_min:
        fired.append((EVENT_POOL, "pool-grew", f"pool grew by {pool_growth} images "
                                               f"(>= {cfg.pool_growth_min})"))
    if not fired:
        return TriggerDecision(False, None, None,
                               (f"pool grew by {pool_growth} (< {cfg.pool_growth_min}), "
                                "no drift, no metric drop",))
    return TriggerDecision(True, fired[0][0], fired[0][1], tuple(r for _, _, r in fired))

