"""The promotion gate's truth table."""

from __future__ import annotations

import dataclasses

import pytest

from synthloop.artifacts import EvalResult, GateDecision
from synthloop.config import GateConfig
from synthloop.gating.decision import decide_promotion

VAL = "a" * 32


def ev(ap: float | None = None, *, md5: str = VAL, **metrics: float) -> EvalResult:
    if ap is not None:
        metrics["AP"] = ap
    return EvalResult(metrics=metrics, dataset_md5=md5, num_images=10)


@pytest.mark.parametrize("cand, champ, gate, promote, reason", [
    # no champion
    (ev(0.3), None, GateConfig(), True, "no champion yet"),
    (ev(0.0), None, GateConfig(min_improvement=0.5), True, "no champion yet"),
    # strict improvement
    (ev(0.6), ev(0.5), GateConfig(), True, "beats"),
    (ev(0.5), ev(0.5), GateConfig(), False, "does not beat"),
    (ev(0.4), ev(0.5), GateConfig(), False, "does not beat"),
    # margin
    (ev(0.55), ev(0.5), GateConfig(min_improvement=0.1), False, "does not beat"),
    (ev(0.65), ev(0.5), GateConfig(min_improvement=0.1), True, "beats"),
    (ev(0.49), ev(0.5), GateConfig(min_improvement=-0.02), True, "beats"),
    # validation set
    (ev(0.9), ev(0.5, md5="b" * 32), GateConfig(), False, "re-evaluated on the new val set"),
    (ev(0.9), ev(0.5, md5="b" * 32), GateConfig(require_same_val=False), True, "beats"),
    # missing / non-finite metrics
    (ev(), ev(0.5), GateConfig(), False, "candidate has no valid AP"),
    (ev(float("nan")), ev(0.5), GateConfig(), False, "candidate has no valid AP"),
    (ev(float("nan")), None, GateConfig(), False, "candidate has no valid AP"),
    (ev(float("inf")), ev(0.5), GateConfig(), False, "candidate has no valid AP"),
    (ev(0.6), ev(float("nan")), GateConfig(), False, "champion has no valid AP"),
    (ev(0.6), ev(), GateConfig(), False, "champion has no valid AP"),
])
def test_truth_table(cand, champ, gate, promote, reason):
    d = decide_promotion(cand, champ, gate)
    assert d.promote is promote
    assert reason in d.reason


def test_metric_is_chosen_by_the_gate():
    cand, champ = ev(0.4, AP50=0.9), ev(0.5, AP50=0.8)
    assert not decide_promotion(cand, champ, GateConfig(metric="AP")).promote
    d = decide_promotion(cand, champ, GateConfig(metric="AP50"))
    assert d.promote and d.metric == "AP50"
    assert d.candidate_value == 0.9 and d.champion_value == 0.8
    assert d.improvement == pytest.approx(0.1)
    missing = decide_promotion(cand, champ, GateConfig(metric="AP75"))
    assert not missing.promote and "AP75" in missing.reason


def test_decision_record_is_frozen_and_serialisable():
    d = decide_promotion(ev(0.6), None, GateConfig())
    assert d == GateDecision(True, d.reason, "AP", 0.6, None, None)
    assert d.to_dict()["promote"] is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.promote = False  # type: ignore[misc]


def test_inputs_are_not_modified():
    cand, champ = ev(0.6), ev(0.5)
    before = (dict(cand.metrics), dict(champ.metrics))
    decide_promotion(cand, champ, GateConfig())
    assert (cand.metrics, champ.metrics) == before
