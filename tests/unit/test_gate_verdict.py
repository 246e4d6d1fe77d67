"""The gate's verdict in words (gating/verdict.py): what the version and model pages say."""

from __future__ import annotations

from synthloop.gating.decision import RULE_BOOTSTRAP, RULE_NO_CHAMPION, RULE_POINT, RULE_REFUSED
from synthloop.gating.verdict import serving_description, version_description, version_verdict


def record(promote: bool, improvement: float | None, lower: float | None = None,
           upper: float | None = None, *, rule: str = RULE_BOOTSTRAP, drops=()) -> dict:
    interval = None if lower is None else {
        "metric": "AP", "lower": lower, "upper": upper, "confidence": 0.9, "resamples": 200,
        "num_images": 60, "seconds": 1.0, "class_drops": {}}
    return {"promote": promote, "reason": "the decision's own sentence", "metric": "AP",
            "candidate_value": 0.4, "champion_value": None if improvement is None else
            0.4 - improvement, "improvement": improvement, "interval": interval, "rule": rule,
            "class_drops": list(drops), "cycle": 2, "candidate_version": "5",
            "champion_version_before": "3"}


def drop(name: str, value: float, regressed: bool) -> dict:
    return {"name": name, "candidate": 0.5 - value, "champion": 0.5, "drop": value,
            "regressed": regressed, "lower": None, "upper": None}


def test_a_promotion_says_gain_interval_resamples_and_the_class_check():
    rec = record(True, 0.034, 0.012, 0.051, drops=[drop("bolt", 0.01, False)])
    assert version_verdict(rec, min_improvement=0.0) == (
        "promoted: AP +0.034, 90% interval [+0.012, +0.051] over 200 resamples; per-class ok")


def test_a_refusal_says_which_bar_the_interval_missed():
    rec = record(False, 0.004, -0.010, 0.020, drops=[drop("bolt", 0.0, False)])
    assert version_verdict(rec, min_improvement=0.01) == (
        "refused: AP +0.004, 90% interval [-0.010, +0.020] over 200 resamples, needs > +0.010; "
        "per-class ok")


def test_a_class_that_regressed_is_named():
    rec = record(False, 0.05, 0.02, 0.08, drops=[drop("nut", 0.12, True), drop("bolt", 0, False)])
    text = version_verdict(rec, min_improvement=0.0)
    assert text.startswith("refused: AP +0.050, 90% interval [+0.020, +0.080]")
    assert text.endswith("class 'nut' AP -0.120 (0.500 -> 0.380)")
    assert "needs" not in text  # the overall gain cleared its bar; the class did not


def test_point_rule_first_champion_and_could_not_evaluate():
    assert version_verdict(record(True, 0.02, rule=RULE_POINT), min_improvement=0.0) == (
        "promoted: AP +0.020 (point estimates, no interval)")
    first = record(True, None, rule=RULE_NO_CHAMPION)
    assert version_verdict(first) == "promoted: first champion (no champion to beat); AP 0.400"
    refused = {**record(False, None, rule=RULE_REFUSED),
               "reason": "refused: gate could not evaluate (bootstrap failed: OSError: gone)"}
    assert version_verdict(refused) == refused["reason"]


def test_descriptions_carry_the_full_reason_and_the_serving_version():
    rec = record(True, 0.034, 0.012, 0.051)
    text = version_description(rec, min_improvement=0.0, when="2026-12-02 02:14 UTC")
    first, _, rest = text.partition("\n\n")
    assert first.startswith("promoted: AP +0.034")
    assert "cycle 2" in rest and "champion before: v3" in rest
    assert rest.endswith("the decision's own sentence")
    model = serving_description(pipeline="demo", version="5", since="2026-12-02 02:14 UTC",
                                cycle=2, verdict=first)
    assert model.startswith("Serving: v5 (alias 'champion') since 2026-12-02 02:14 UTC, "
                            "promoted by the gate of cycle 2: promoted: AP +0.034")


def test_a_gain_too_small_for_three_decimals_keeps_its_sign_and_size():
    rec = record(False, 0.0002, 0.0, 0.0008)
    assert version_verdict(rec, min_improvement=0.0) == (
        "refused: AP +0.0002, 90% interval [+0.000, +0.001] over 200 resamples, needs > +0.000")
