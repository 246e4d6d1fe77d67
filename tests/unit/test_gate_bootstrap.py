"""Paired bootstrap of COCO AP over validation images, and the gate's decision on its interval."""

from __future__ import annotations

import numpy as np
import pytest

from synthloop.artifacts import EvalResult, ImprovementInterval
from synthloop.config import GateConfig
from synthloop.gating.bootstrap import paired_bootstrap, resample_indices
from synthloop.gating.decision import RULE_BOOTSTRAP, RULE_REFUSED, decide_promotion
from synthloop.gating.predictions import (ImageDetections, load_predictions, predictions_path,
                                          save_predictions)
from gate_support import detections, exact_detections, exact_set, hand_ap, val_set

VAL = "v" * 32


@pytest.fixture(scope="module")
def data():
    ds, boxes = val_set()
    good = detections(ds, boxes, jitter=1.0, seed=1)
    bad = detections(ds, boxes, jitter=6.0, seed=2, misses=0.3)
    return ds, good, bad


# Expectations below are COCO AP by hand (gate_support.hand_ap), not the evaluation code: with
# 7 images of one box each and detections that are exact copies of some boxes, a resample that
# draws k of the detected images has AP (100k // 7 + 1) / 101 (k > 0), whatever the IoU.
HIT = {1, 2, 3, 4}  # the images (ids) whose box the weaker model finds


def drawn_hits(picks: np.ndarray, hit: set[int]) -> int:
    """How many of the drawn images (0-based indices; image id = index + 1) are in ``hit``."""
    return int(sum(int(k) + 1 in hit for k in picks))


def test_full_set_values_are_hand_computed():
    ds = exact_set(7)
    ci, samples = paired_bootstrap(ds, exact_detections(ds, {1: set(range(1, 8))}),
                                   exact_detections(ds, {1: HIT}), resamples=20, seed=0)
    assert ci.candidate == pytest.approx(1.0, abs=1e-12)
    assert ci.champion == pytest.approx(58 / 101, abs=1e-12)  # recall 4/7: points 0..0.57
    assert ci.improvement == pytest.approx(43 / 101, abs=1e-12)
    assert samples.shape == (20, 2) and ci.resamples == 20 and ci.num_images == 7


def test_a_false_positive_ranked_first_caps_the_precision_by_hand():
    """Champion: a stray box scored above its 7 exact ones. Precision after j hits is j/(j+1),
    so every recall point's interpolated precision is 7/8: AP 0.875."""
    ds = exact_set(7)
    exact = exact_detections(ds, {1: set(range(1, 8))})
    first = exact[0]
    stray = ImageDetections(first.image_id, np.vstack([first.boxes, [[60, 60, 90, 90]]]),
                            np.array([1, 1]), np.array([0.9, 0.95], np.float32))
    ci, _ = paired_bootstrap(ds, exact, [stray, *exact[1:]], resamples=5, seed=0)
    assert ci.champion == pytest.approx(0.875, abs=1e-12)
    assert ci.improvement == pytest.approx(0.125, abs=1e-12)


def test_every_resample_and_the_interval_are_hand_computed():
    ds = exact_set(7)
    ci, samples = paired_bootstrap(ds, exact_detections(ds, {1: set(range(1, 8))}),
                                   exact_detections(ds, {1: HIT}), resamples=50,
                                   confidence=0.8, seed=4)
    picks = np.random.default_rng(4).integers(0, 7, size=(50, 7))  # the documented resampling
    expected = np.array([hand_ap(drawn_hits(row, HIT), 7) for row in picks])
    assert np.allclose(samples[:, 0], 1.0, atol=1e-12)
    assert np.allclose(samples[:, 1], expected, atol=1e-12)
    lower, upper = np.percentile(1.0 - expected, [10.0, 90.0])
    assert (ci.lower, ci.upper) == (pytest.approx(lower, abs=1e-12), pytest.approx(upper, abs=1e-12))
    assert ci.lower > 0.0


def test_the_interval_of_each_class_drop_is_hand_computed():
    """Two classes on every image; the candidate finds every bolt but the nuts of 4 images only,
    the champion finds everything: the nut AP drops, the bolt AP does not."""
    ds = exact_set(7, ("bolt", "nut"))
    every = set(range(1, 8))
    ci, samples = paired_bootstrap(ds, exact_detections(ds, {1: every, 2: HIT}),
                                   exact_detections(ds, {1: every, 2: every}), resamples=40,
                                   confidence=0.9, seed=2)
    picks = np.random.default_rng(2).integers(0, 7, size=(40, 7))
    nut = np.array([hand_ap(drawn_hits(row, HIT), 7) for row in picks])
    assert np.allclose(samples[:, 0], (1.0 + nut) / 2, atol=1e-12)  # AP: mean over classes
    lo, hi = np.percentile(1.0 - nut, [5.0, 95.0])
    assert ci.class_drops["nut"] == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert ci.class_drops["bolt"] == (0.0, 0.0)
    assert ci.candidate == pytest.approx((1 + 58 / 101) / 2, abs=1e-12)


def test_a_clearly_better_model_has_an_interval_above_zero(data):
    ds, good, bad = data
    ci, _ = paired_bootstrap(ds, good, bad, resamples=60, confidence=0.9, seed=3)
    assert 0.0 < ci.lower <= ci.improvement <= ci.upper
    d = decide_promotion(EvalResult({"AP": ci.candidate}, VAL, 30),
                         EvalResult({"AP": ci.champion}, VAL, 30), GateConfig(), interval=ci)
    assert d.promote and "interval" in d.reason and d.interval == ci


def test_identical_models_give_a_zero_width_interval_paired(data):
    """Paired resampling: the same model against itself differs by exactly 0 in every resample."""
    ds, good, _ = data
    ci, samples = paired_bootstrap(ds, good, good, resamples=30, seed=0)
    assert np.all(samples[:, 0] == samples[:, 1])
    assert ci.lower == ci.upper == 0.0
    d = decide_promotion(EvalResult({"AP": ci.candidate}, VAL, 30),
                         EvalResult({"AP": ci.champion}, VAL, 30), GateConfig(), interval=ci)
    assert not d.promote


def test_a_small_noisy_gain_does_not_promote(data):
    ds, good, _ = data
    _, boxes = val_set()
    a = detections(ds, boxes, jitter=3.0, seed=10, misses=0.1)
    b = detections(ds, boxes, jitter=3.0, seed=11, misses=0.1)
    ci, _ = paired_bootstrap(ds, a, b, resamples=60, seed=0)
    assert ci.lower < 0.0 < ci.upper  # the val set cannot tell these apart
    cand, champ = (a, b) if ci.improvement > 0 else (b, a)
    ci, _ = paired_bootstrap(ds, cand, champ, resamples=60, seed=0)
    assert ci.improvement > 0
    d = decide_promotion(EvalResult({"AP": ci.candidate}, VAL, 30),
                         EvalResult({"AP": ci.champion}, VAL, 30), GateConfig(), interval=ci)
    assert not d.promote and "not a reliable improvement" in d.reason
    # the point rule alone would have promoted it
    assert decide_promotion(EvalResult({"AP": ci.candidate}, VAL, 30),
                            EvalResult({"AP": ci.champion}, VAL, 30), GateConfig()).promote


def test_resamples_are_seeded_and_with_replacement():
    a = resample_indices(10, resamples=50, seed=7)
    assert np.array_equal(a, resample_indices(10, resamples=50, seed=7))
    assert not np.array_equal(a, resample_indices(10, resamples=50, seed=8))
    assert a.min() >= 0 and a.max() < 10
    assert any(len(set(row)) < 10 for row in a)  # some image drawn twice
    with pytest.raises(ValueError):
        resample_indices(0, resamples=5, seed=0)


def test_predictions_for_unknown_images_are_refused(data):
    ds, good, _ = data
    stray = [*good, ImageDetections(999, np.zeros((1, 4), np.float32), np.ones(1, np.int64),
                                    np.ones(1, np.float32))]
    with pytest.raises(ValueError, match="not in the validation set"):
        paired_bootstrap(ds, stray, good, resamples=2)


def test_predictions_round_trip(tmp_path, data):
    _, good, _ = data
    empty = ImageDetections(77, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                            np.zeros(0, np.float32))
    path = save_predictions(predictions_path(tmp_path, "run1", VAL), [*good[:3], empty])
    back = load_predictions(path)
    assert [p.image_id for p in back] == [p.image_id for p in good[:3]] + [77]
    assert np.allclose(back[0].boxes, good[0].boxes) and len(back[3].scores) == 0


def interval(lower: float, upper: float, *, metric: str = "AP") -> ImprovementInterval:
    return ImprovementInterval(metric=metric, candidate=0.6, champion=0.5, improvement=0.1,
                               lower=lower, upper=upper, confidence=0.9, resamples=200,
                               num_images=60, seed=0)


@pytest.mark.parametrize("ci, gate, promote, rule, reason", [
    (interval(0.02, 0.2), GateConfig(), True, RULE_BOOTSTRAP, "lies above 0.0"),
    (interval(0.0, 0.2), GateConfig(), False, RULE_BOOTSTRAP, "not a reliable improvement"),
    (interval(-0.05, 0.2), GateConfig(), False, RULE_BOOTSTRAP, "not a reliable improvement"),
    (interval(0.02, 0.2), GateConfig(min_improvement=0.05), False, RULE_BOOTSTRAP,
     "not a reliable"),
    (interval(0.06, 0.2), GateConfig(min_improvement=0.05), True, RULE_BOOTSTRAP,
     "lies above 0.05"),
    # an interval that cannot be used is missing evidence: refused, never a point comparison
    (interval(0.02, 0.2, metric="AP50"), GateConfig(), False, RULE_REFUSED,
     "the gate compares AP"),
    (interval(float("nan"), 0.2), GateConfig(), False, RULE_REFUSED, "not finite"),
])
def test_truth_table_with_an_interval(ci, gate, promote, rule, reason):
    d = decide_promotion(EvalResult({"AP": 0.6}, VAL, 60), EvalResult({"AP": 0.5}, VAL, 60),
                         gate, interval=ci)
    assert (d.promote, d.rule) == (promote, rule) and reason in d.reason
    assert d.interval is ci
    assert d.to_dict()["interval"]["upper"] == ci.upper  # the record carries the interval


def test_an_interval_never_overrides_the_earlier_rules():
    ci = interval(0.3, 0.5)
    other_val = EvalResult({"AP": 0.5}, "w" * 32, 60)
    d = decide_promotion(EvalResult({"AP": 0.9}, VAL, 60), other_val, GateConfig(), interval=ci)
    assert not d.promote and d.rule == RULE_REFUSED
    assert "re-evaluated on the new val set" in d.reason
    d = decide_promotion(EvalResult({"AP": float("nan")}, VAL, 60), None, GateConfig(), interval=ci)
    assert not d.promote and d.rule == RULE_REFUSED
    d = decide_promotion(EvalResult({"AP": 0.2}, VAL, 60), None, GateConfig(), interval=ci)
    assert d.promote and "no champion" in d.reason
