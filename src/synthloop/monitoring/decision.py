"""Pure decisions of the monitor: did the data drift, and should a cycle start?

``decide_drift`` turns measured scores and thresholds into a ``DriftDecision``;
``decide_trigger`` asks the registered triggers (monitoring/triggers.py: pool growth, drift,
the champion's monitored metric, ...) and gives a ``TriggerDecision`` (the event the monitor
flow emits). Neither touches files or services.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from synthloop.config import TriggerConfig
# the built-in events, re-exported for callers of the decision
from synthloop.monitoring.triggers import (EVENT_DRIFT, EVENT_METRIC, EVENT_POOL,  # noqa: F401
                                          Measurements, triggers)

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


EVENT_CAD = "synthloop.cad.changed"  # emitted by the monitor flow; starts cad-retrain, not a cycle


@dataclass(frozen=True)
class TriggerDecision:
    """Whether the monitor asks for a cycle; ``event`` names the strongest reason."""

    fire: bool
    event: str | None
    trigger: str | None  # the trigger's name, recorded by the cycle lock: drift | pool-grew | ...
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_trigger(*, pool_growth: int, drift: DriftDecision | None,
                   champion_confidence: float | None, reference_confidence: float | None,
                   cfg: TriggerConfig) -> TriggerDecision:
    """Ask every registered trigger (monitoring/triggers.py); the strongest that fires (drift
    beats a metric drop beats pool growth) names the event, all that fire give reasons."""
    measured = Measurements(pool_growth, drift, champion_confidence, reference_confidence)
    section = cfg.model_extra or {}
    verdicts = [(t, *t.check(measured, t.settings(section))) for t in triggers()]
    fired = [(t, why) for t, fires, why in verdicts if fires]
    if not fired:
        return TriggerDecision(False, None, None, (", ".join(why for _, _, why in verdicts),))
    return TriggerDecision(True, fired[0][0].event, fired[0][0].name,
                           tuple(why for _, why in fired))

