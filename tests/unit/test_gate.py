"""The promotion gate's truth table: the outcome AND the rule that decided it."""

from __future__ import annotations

import dataclasses

import pytest

from synthloop.artifacts import ClassDrop, EvalResult, GateDecision, ImprovementInterval
from synthloop.config import GateConfig
from synthloop.gating.decision import (RULE_BOOTSTRAP, RULE_NO_CHAMPION, RULE_POINT,
                                       RULE_POINT_ON_ERROR, RULE_REFUSED, decide_promotion)

VAL = "a" * 32
REFUSED = "refused: gate could not evaluate ("


def ev(ap: float | None = None, *, md5: str = VAL, **metrics: float) -> EvalResult:
    if ap is not None:
        metrics["AP"] = ap
    return EvalResult(metrics=metrics, dataset_md5=md5, num_images=10)


@pytest.mark.parametrize("cand, champ, gate, promote, rule, reason", [
    # no champion
    (ev(0.3), None, GateConfig(), True, RULE_NO_CHAMPION, "no champion yet"),
    (ev(0.0), None, GateConfig(min_improvement=0.5), True, RULE_NO_CHAMPION, "no champion yet"),
    # strict improvement
    (ev(0.6), ev(0.5), GateConfig(), True, RULE_POINT, "beats"),
    (ev(0.5), ev(0.5), GateConfig(), False, RULE_POINT, "does not beat"),
    (ev(0.4), ev(0.5), GateConfig(), False, RULE_POINT, "does not beat"),
    # margin
    (ev(0.55), ev(0.5), GateConfig(min_improvement=0.1), False, RULE_POINT, "does not beat"),
    (ev(0.65), ev(0.5), GateConfig(min_improvement=0.1), True, RULE_POINT, "beats"),
    (ev(0.49), ev(0.5), GateConfig(min_improvement=-0.02), True, RULE_POINT, "beats"),
    # validation set
    (ev(0.9), ev(0.5, md5="b" * 32), GateConfig(), False, RULE_REFUSED,
     "re-evaluated on the new val set"),
    (ev(0.9), ev(0.5, md5="b" * 32), GateConfig(require_same_val=False), True, RULE_POINT,
     "beats"),
    # missing / non-finite metrics: nothing to compare - refused, never kept quietly
    (ev(), ev(0.5), GateConfig(), False, RULE_REFUSED, "candidate has no valid AP"),
    (ev(float("nan")), ev(0.5), GateConfig(), False, RULE_REFUSED, "candidate has no valid AP"),
    (ev(float("nan")), None, GateConfig(), False, RULE_REFUSED, "candidate has no valid AP"),
    (ev(float("inf")), ev(0.5), GateConfig(), False, RULE_REFUSED, "candidate has no valid AP"),
    (ev(0.6), ev(float("nan")), GateConfig(), False, RULE_REFUSED, "champion has no valid AP"),
    (ev(0.6), ev(), GateConfig(), False, RULE_REFUSED, "champion has no valid AP"),
])
def test_truth_table(cand, champ, gate, promote, rule, reason):
    d = decide_promotion(cand, champ, gate)
    assert (d.promote, d.rule) == (promote, rule)
    assert reason in d.reason
    assert d.reason.startswith(REFUSED) is (rule == RULE_REFUSED)


def test_metric_is_chosen_by_the_gate():
    cand, champ = ev(0.4, AP50=0.9), ev(0.5, AP50=0.8)
    assert not decide_promotion(cand, champ, GateConfig(metric="AP")).promote
    d = decide_promotion(cand, champ, GateConfig(metric="AP50"))
    assert d.promote and d.metric == "AP50" and d.rule == RULE_POINT
    assert d.candidate_value == 0.9 and d.champion_value == 0.8
    assert d.improvement == pytest.approx(0.1)
    missing = decide_promotion(cand, champ, GateConfig(metric="AP75"))
    assert not missing.promote and missing.rule == RULE_REFUSED and "AP75" in missing.reason


def test_decision_record_is_frozen_and_serialisable():
    d = decide_promotion(ev(0.6), None, GateConfig())
    assert d == GateDecision(True, d.reason, "AP", 0.6, None, None, rule=RULE_NO_CHAMPION)
    assert d.to_dict()["promote"] is True and d.to_dict()["rule"] == RULE_NO_CHAMPION
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.promote = False  # type: ignore[misc]


def test_inputs_are_not_modified():
    cand, champ = ev(0.6), ev(0.5)
    before = (dict(cand.metrics), dict(champ.metrics))
    decide_promotion(cand, champ, GateConfig())
    assert (cand.metrics, champ.metrics) == before


# ------------------------------------------------------------------ evidence that cannot be had
ERROR = "bootstrap failed: FileNotFoundError: data/val/annotations.json"


def test_an_evaluation_error_refuses_even_a_clear_winner():
    d = decide_promotion(ev(0.9), ev(0.1), GateConfig(), evaluation_error=ERROR)
    assert not d.promote and d.rule == RULE_REFUSED
    assert d.reason == f"refused: gate could not evaluate ({ERROR})"


def test_the_config_switch_lets_the_point_rule_decide_and_says_so():
    gate = GateConfig(allow_point_rule_on_error=True)
    d = decide_promotion(ev(0.6), ev(0.5), gate, evaluation_error=ERROR)
    assert d.promote and d.rule == RULE_POINT_ON_ERROR and d.interval is None
    assert "beats" in d.reason and ERROR in d.reason
    assert "allow_point_rule_on_error" in d.reason
    kept = decide_promotion(ev(0.5), ev(0.6), gate, evaluation_error=ERROR)
    assert not kept.promote and kept.rule == RULE_POINT_ON_ERROR


def test_the_switch_never_compares_what_is_not_comparable():
    gate = GateConfig(allow_point_rule_on_error=True)
    d = decide_promotion(ev(0.9), ev(0.1, md5="b" * 32), gate, evaluation_error=ERROR)
    assert not d.promote and d.rule == RULE_REFUSED and ERROR in d.reason
    d = decide_promotion(ev(float("nan")), ev(0.1), gate, evaluation_error=ERROR)
    assert not d.promote and d.rule == RULE_REFUSED


def test_no_champion_needs_no_comparison_evidence():
    d = decide_promotion(ev(0.3), None, GateConfig(), evaluation_error=ERROR)
    assert d.promote and d.rule == RULE_NO_CHAMPION


# ------------------------------------------------------------------ per-class non-regression
def interval(lower: float, upper: float, **class_drops: tuple[float, float]
             ) -> ImprovementInterval:
    return ImprovementInterval(metric="AP", candidate=0.6, champion=0.5, improvement=0.1,
                               lower=lower, upper=upper, confidence=0.9, resamples=200,
                               num_images=60, seed=0, class_drops=dict(class_drops))


def test_a_better_model_with_one_class_dropping_by_0_1_is_refused_naming_the_class():
    champ = ev(0.50, AP_bolt=0.60, AP_nut=0.70, AP_washer=0.20)
    cand = ev(0.60, AP_bolt=0.80, AP_nut=0.60, AP_washer=0.40)
    d = decide_promotion(cand, champ, GateConfig())
    assert not d.promote and d.rule == RULE_POINT
    assert "beats" in d.reason and "class 'nut' AP drops by 0.1000" in d.reason
    assert "'bolt'" not in d.reason and "'washer'" not in d.reason
    assert [(c.name, c.regressed) for c in d.class_drops] == [
        ("bolt", False), ("nut", True), ("washer", False)]
    nut = d.class_drops[1]
    assert (nut.champion, nut.candidate, nut.drop) == (0.70, 0.60, pytest.approx(0.1))
    assert (nut.lower, nut.upper) == (None, None)  # no bootstrap: no interval of the drop
    # the same drop within the allowance promotes
    assert decide_promotion(cand, champ, GateConfig(max_class_drop=0.15)).promote


def test_the_class_check_uses_the_bootstrap_interval_of_the_drop_where_there_is_one():
    champ = ev(0.50, AP_bolt=0.60, AP_nut=0.70)
    cand = ev(0.60, AP_bolt=0.80, AP_nut=0.60)
    ci = interval(0.05, 0.15, nut=(0.02, 0.19), bolt=(-0.3, -0.1))
    d = decide_promotion(cand, champ, GateConfig(), interval=ci)
    assert not d.promote and d.rule == RULE_BOOTSTRAP
    assert "lies above 0.0" in d.reason and "class 'nut'" in d.reason
    assert "90% interval of the drop [+0.0200, +0.1900]" in d.reason
    assert d.class_drops[1] == ClassDrop("nut", 0.60, 0.70, pytest.approx(0.1), True, 0.02, 0.19)
    assert d.to_dict()["class_drops"][1]["upper"] == 0.19  # the record carries it
    ok = decide_promotion(cand, ev(0.50, AP_bolt=0.60, AP_nut=0.62), GateConfig(), interval=ci)
    assert ok.promote and ok.rule == RULE_BOOTSTRAP and not any(c.regressed for c in ok.class_drops)


def test_a_class_without_ground_truth_is_not_compared():
    d = decide_promotion(ev(0.6, AP_nut=-1.0), ev(0.5, AP_nut=-1.0), GateConfig())
    assert d.promote and d.class_drops == ()


@pytest.mark.parametrize("cand_nut", [None, float("nan"), -1.0])
def test_a_class_the_champion_was_measured_on_but_the_candidate_was_not_refuses(cand_nut):
    cand = ev(0.6) if cand_nut is None else ev(0.6, AP_nut=cand_nut)
    d = decide_promotion(cand, ev(0.5, AP_nut=0.7), GateConfig())
    assert not d.promote and d.rule == RULE_REFUSED and "['nut']" in d.reason


def test_when_both_fail_the_reason_names_the_gain_and_the_class():
    d = decide_promotion(ev(0.4, AP_nut=0.5), ev(0.5, AP_nut=0.7), GateConfig())
    assert not d.promote and "does not beat" in d.reason and "also class 'nut'" in d.reason
