"""The promotion gate: a pure function of two evaluations and the gate settings.

Moving MLflow aliases is someone else's job; this module only decides. Every decision names
the rule that made it (``GateDecision.rule``, one of ``RULES``), so a record never leaves a
reader guessing whether a bootstrap interval or two point estimates promoted a model. When the
evidence cannot be computed the gate fails closed: rule ``RULE_REFUSED``, never a promotion.
"""

from __future__ import annotations

import math
from typing import Any

from synthloop.artifacts import ClassDrop, EvalResult, GateDecision, ImprovementInterval
from synthloop.config import GateConfig

RULE_NO_CHAMPION = "no champion"
RULE_BOOTSTRAP = "bootstrap"
RULE_POINT = "point"  # gate.bootstrap_resamples = 0: the point estimates are the configured rule
RULE_POINT_ON_ERROR = "point (allowed by config)"  # bootstrap failed, allow_point_rule_on_error
RULE_REFUSED = "refused: could not evaluate"
RULE_RESUMED = "already champion"  # the stage's resume after a crash, never decide_promotion's
RULES = (RULE_NO_CHAMPION, RULE_BOOTSTRAP, RULE_POINT, RULE_POINT_ON_ERROR, RULE_REFUSED,
         RULE_RESUMED)
REFUSED = "refused: gate could not evaluate"


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is missing, not a number, NaN or inf."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def refusal(why: str) -> str:
    """The reason of a refused decision: ``refused: gate could not evaluate (<why>)``."""
    return f"{REFUSED} ({why})"


def decide_promotion(candidate: EvalResult, champion: EvalResult | None, gate: GateConfig, *,
                     interval: ImprovementInterval | None = None,
                     evaluation_error: str | None = None) -> GateDecision:
    """Promote the candidate iff its ``gate.metric`` beats the champion's by more than
    ``gate.min_improvement`` and no class's AP drops by more than ``gate.max_class_drop``, both
    models measured on the same validation set.

    ``interval`` (optional): the paired bootstrap interval of (candidate - champion) on that
    validation set. Given, the bar is on its LOWER bound instead of the point difference, so a
    gain the validation images cannot tell from noise never promotes. ``evaluation_error``: why
    the bootstrap could not be computed (the caller tried and failed).

    Rules, first match wins:
    1. candidate metric missing or not finite -> refused (nothing to trust);
    2. no champion -> promote (rule "no champion");
    3. ``evaluation_error``, or an unusable interval (another metric, not finite) -> refused;
       with ``gate.allow_point_rule_on_error`` the rules below decide without the interval
       and the reason says why;
    4. ``require_same_val`` and the val-set md5s differ -> refused; the champion must be
       re-evaluated on the new val set before the two can be compared;
    5. champion metric missing or not finite -> refused; re-evaluate the champion;
    6. a class the champion has ground truth for (``AP_<class>`` >= 0) without a valid AP in
       the candidate's evaluation -> refused;
    7. the gain: with an interval (rule "bootstrap") it passes iff the interval's lower bound >
       min_improvement; without (rule "point", or "point (allowed by config)" after 3) iff
       candidate - champion > min_improvement (a tie never promotes);
    8. promote iff 7 passes and no class's AP drop (champion - candidate) > max_class_drop.
       The bar is on the point drop: a per-class AP over a few dozen images has an interval
       too wide to gate on its upper end; the interval is recorded beside it.
    """
    name = gate.metric
    cand = _finite(candidate.metrics.get(name))
    champ = None if champion is None else _finite(champion.metrics.get(name))
    problem = evaluation_error or _interval_problem(interval, name)
    if problem and gate.allow_point_rule_on_error:
        interval = None

    def decision(promote: bool, reason: str, rule: str, drops: tuple[ClassDrop, ...] = ()
                 ) -> GateDecision:
        improvement = cand - champ if cand is not None and champ is not None else None
        if problem and gate.allow_point_rule_on_error and rule != RULE_NO_CHAMPION:
            reason += (f" [no bootstrap: {problem}; " + (
                "point estimates compared because gate.allow_point_rule_on_error is true]"
                if rule == RULE_POINT_ON_ERROR else "nor could the point estimates be compared]"))
        return GateDecision(promote, reason, name, cand, champ, improvement, interval, rule,
                            drops)

    if cand is None:
        return decision(False, refusal(f"candidate has no valid {name}, got "
                                       f"{candidate.metrics.get(name)!r}"), RULE_REFUSED)
    if champion is None:
        return decision(True, f"no champion yet; candidate {name} = {cand:.4f}", RULE_NO_CHAMPION)
    why = _not_comparable(candidate, champion, gate, champ,
                          None if gate.allow_point_rule_on_error else problem)
    if why:
        return decision(False, refusal(why), RULE_REFUSED)
    drops, missing = class_drops(candidate, champion, gate, interval)
    if missing:
        return decision(False, refusal(f"no valid candidate AP for class(es) {missing} that the "
                                       "champion was evaluated on"), RULE_REFUSED, drops)
    assert champ is not None  # _not_comparable said so
    passed, reason = _overall(gate, cand, champ, interval)
    regressed = [d for d in drops if d.regressed]
    if regressed:
        reason += ("; but " if passed else "; also ") + "; ".join(
            _drop_text(d, gate, interval) for d in regressed)
        reason += " - keeping the champion" if passed else ""
    rule = (RULE_POINT_ON_ERROR if problem else
            RULE_BOOTSTRAP if interval is not None else RULE_POINT)
    return decision(passed and not regressed, reason, rule, drops)


def _not_comparable(candidate: EvalResult, champion: EvalResult, gate: GateConfig,
                    champ: float | None, problem: str | None) -> str | None:
    """Why candidate and champion cannot be compared (rules 3-5), or None."""
    if problem:
        return problem
    if gate.require_same_val and candidate.dataset_md5 != champion.dataset_md5:
        return (f"validation set changed: champion evaluated on {champion.dataset_md5}, "
                f"candidate on {candidate.dataset_md5}; the champion must be re-evaluated on "
                "the new val set")
    if champ is None:
        return (f"champion has no valid {gate.metric}; re-evaluate the champion on val set "
                f"{candidate.dataset_md5}")
    return None


def class_drops(candidate: EvalResult, champion: EvalResult, gate: GateConfig,
                interval: ImprovementInterval | None
                ) -> tuple[tuple[ClassDrop, ...], list[str]]:
    """Per-class AP drops (champion - candidate) over the classes the champion's evaluation
    has ground truth for (``AP_<class>`` >= 0; -1 means none, as COCO reports), sorted by name,
    and the classes among them whose candidate (or champion) AP is missing or not finite."""
    drops, missing = [], []
    by_class = interval.class_drops if interval is not None else {}
    for key in sorted(k for k in champion.metrics if k.startswith("AP_")):
        cls = key[len("AP_"):]
        champ_ap, cand_ap = _finite(champion.metrics[key]), _finite(candidate.metrics.get(key))
        if champ_ap is not None and champ_ap < 0:
            continue
        if champ_ap is None or cand_ap is None or cand_ap < 0:
            missing.append(cls)
            continue
        lower, upper = by_class.get(cls, (None, None))
        drop = champ_ap - cand_ap
        drops.append(ClassDrop(cls, cand_ap, champ_ap, drop, drop > gate.max_class_drop,
                               _finite(lower), _finite(upper)))
    return tuple(drops), missing


def _interval_problem(ci: ImprovementInterval | None, name: str) -> str | None:
    if ci is None:
        return None
    if ci.metric != name:
        return f"bootstrap interval is of {ci.metric}, the gate compares {name}: recompute it"
    if _finite(ci.lower) is None or _finite(ci.upper) is None:
        return f"bootstrap interval is not finite ({ci.lower}, {ci.upper})"
    return None


def _overall(gate: GateConfig, cand: float, champ: float, ci: ImprovementInterval | None
             ) -> tuple[bool, str]:
    """Whether the overall gain clears ``min_improvement`` (on the interval's lower bound when
    there is one), and the sentence saying so."""
    name, bar, gain = gate.metric, gate.min_improvement, cand - champ
    if ci is None:
        if gain > bar:
            return True, (f"candidate {name} {cand:.4f} beats champion {champ:.4f} by "
                          f"{gain:+.4f} (> {bar})")
        return False, (f"candidate {name} {cand:.4f} does not beat champion {champ:.4f} by more "
                       f"than {bar} ({gain:+.4f})")
    span = (f"{ci.confidence:.0%} interval of the gain [{ci.lower:+.4f}, {ci.upper:+.4f}] over "
            f"{ci.resamples} paired resamples of {ci.num_images} images")
    if ci.lower > bar:
        return True, (f"candidate {name} {cand:.4f} beats champion {champ:.4f} by {gain:+.4f}; "
                      f"{span} lies above {bar}")
    return False, (f"candidate {name} {cand:.4f} vs champion {champ:.4f} ({gain:+.4f}): {span} "
                   f"does not lie above {bar} - not a reliable improvement")


def _drop_text(d: ClassDrop, gate: GateConfig, ci: ImprovementInterval | None) -> str:
    span = ""
    if d.lower is not None and d.upper is not None and ci is not None:
        span = f", {ci.confidence:.0%} interval of the drop [{d.lower:+.4f}, {d.upper:+.4f}]"
    return (f"class {d.name!r} AP drops by {d.drop:.4f} ({d.champion:.4f} -> {d.candidate:.4f}"
            f"{span}) > gate.max_class_drop {gate.max_class_drop}")
