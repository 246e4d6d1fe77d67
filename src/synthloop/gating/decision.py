"""The promotion gate: a pure function of two evaluations and the gate settings.

Moving MLflow aliases is someone else's job; this module only decides.
"""

from __future__ import annotations

import math

from synthloop.artifacts import EvalResult, GateDecision, ImprovementInterval
from synthloop.config import GateConfig


def _metric(result: EvalResult, name: str) -> float | None:
    """The metric as a finite float, or None when it is missing, not a number, NaN or inf."""
    value = result.metrics.get(name)
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def decide_promotion(candidate: EvalResult, champion: EvalResult | None,
                     gate: GateConfig, *, interval: ImprovementInterval | None = None
                     ) -> GateDecision:
    """Promote the candidate iff its ``gate.metric`` strictly beats the champion's by more than
    ``gate.min_improvement``, both measured on the same validation set.

    ``interval`` (optional): the paired bootstrap interval of (candidate - champion) on that
    validation set. Given, the bar is on its LOWER bound instead of the point difference, so
    a gain that the validation images cannot tell from noise never promotes.

    Rules, first match wins:
    1. candidate metric missing or not finite -> keep (nothing to trust);
    2. no champion -> promote;
    3. ``require_same_val`` and the val-set md5s differ -> keep; the champion must be
       re-evaluated on the new val set before the two can be compared;
    4. champion metric missing or not finite -> keep; re-evaluate the champion;
    5. an interval of another metric -> keep (it does not measure what the gate asks);
    6. with an interval: promote iff its lower bound > min_improvement;
       without: promote iff candidate - champion > min_improvement (a tie never promotes).
    """
    name = gate.metric
    cand = _metric(candidate, name)

    def decision(promote: bool, reason: str, champ: float | None = None) -> GateDecision:
        improvement = cand - champ if cand is not None and champ is not None else None
        return GateDecision(promote, reason, name, cand, champ, improvement, interval)

    if cand is None:
        return decision(False, f"candidate has no valid {name} "
                               f"(got {candidate.metrics.get(name)!r}); keeping the champion")
    if champion is None:
        return decision(True, f"no champion yet; candidate {name} = {cand:.4f}")
    if gate.require_same_val and candidate.dataset_md5 != champion.dataset_md5:
        return decision(False, f"validation set changed (champion evaluated on "
                               f"{champion.dataset_md5}, candidate on {candidate.dataset_md5}): "
                               f"the champion must be re-evaluated on the new val set")
    champ = _metric(champion, name)
    if champ is None:
        return decision(False, f"champion has no valid {name}; re-evaluate the champion "
                               f"on val set {candidate.dataset_md5}")
    gain = cand - champ
    if interval is not None:
        return _decide_on_interval(interval, gate, decision, cand, champ)
    if gain > gate.min_improvement:
        return decision(True, f"candidate {name} {cand:.4f} beats champion {champ:.4f} by "
                              f"{gain:+.4f} (> {gate.min_improvement})", champ)
    return decision(False, f"candidate {name} {cand:.4f} does not beat champion {champ:.4f} "
                           f"by more than {gate.min_improvement} ({gain:+.4f})", champ)


def _decide_on_interval(ci: ImprovementInterval, gate: GateConfig, decision, cand: float,
                        champ: float) -> GateDecision:
    name = gate.metric
    if ci.metric != name:
        return decision(False, f"bootstrap interval is of {ci.metric}, the gate compares {name}: "
                               "recompute it", champ)
    lower, upper = _finite(ci.lower), _finite(ci.upper)
    if lower is None or upper is None:
        return decision(False, f"bootstrap interval is not finite ({ci.lower}, {ci.upper})", champ)
    span = (f"{ci.confidence:.0%} interval of the gain [{lower:+.4f}, {upper:+.4f}] over "
            f"{ci.resamples} paired resamples of {ci.num_images} images")
    if lower > gate.min_improvement:
        return decision(True, f"candidate {name} {cand:.4f} beats champion {champ:.4f} by "
                              f"{cand - champ:+.4f}; {span} lies above {gate.min_improvement}",
                        champ)
    return decision(False, f"candidate {name} {cand:.4f} vs champion {champ:.4f} "
                           f"({cand - champ:+.4f}): {span} does not lie above "
                           f"{gate.min_improvement} - not a reliable improvement", champ)


def _finite(value: float) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
