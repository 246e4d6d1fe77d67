"""Pure monitor decisions: drift checks and the cycle trigger."""

from __future__ import annotations

import math

import pytest

from synthloop.config import TriggerConfig
from synthloop.monitoring.decision import (EVENT_DRIFT, EVENT_METRIC, EVENT_POOL, DriftCheck,
                                           decide_drift, decide_trigger)


def checks(**scores: float) -> list[DriftCheck]:
    out = []
    for name, score in scores.items():
        if name == "embedding":
            out.append(DriftCheck(name, "mmd", score, 0.02, "above"))
        else:
            out.append(DriftCheck(name, "ks", score, 0.01, "below"))
    return out


@pytest.mark.parametrize("check, drifted", [
    (DriftCheck("embedding", "mmd", 0.03, 0.02, "above"), True),
    (DriftCheck("embedding", "mmd", 0.02, 0.02, "above"), False),  # at the threshold: no
    (DriftCheck("brightness", "ks", 0.001, 0.01, "below"), True),
    (DriftCheck("brightness", "ks", 0.01, 0.01, "below"), False),
    (DriftCheck("brightness", "ks", 0.5, 0.01, "below"), False),
    (DriftCheck("embedding", "mmd", math.nan, 0.02, "above"), False),
])
def test_check_direction(check, drifted):
    assert check.drifted is drifted


def test_no_drift_when_every_check_is_quiet():
    d = decide_drift(checks(embedding=0.001, brightness=0.4, contrast=0.9), n_reference=100,
                     n_current=40, min_current=20)
    assert not d.drifted and "no drift in 3 checks" in d.reason and d.drifted_checks == []


def test_one_check_is_enough_and_the_reason_names_it():
    d = decide_drift(checks(embedding=0.001, brightness=1e-6, contrast=0.9), n_reference=100,
                     n_current=40, min_current=20)
    assert d.drifted and d.drifted_checks == ["brightness"]
    assert "brightness ks 1e-06 < 0.01" in d.reason
    assert d.to_dict()["checks"][1]["drifted"] is True


def test_an_object_check_alone_is_drift_and_uncomputed_checks_are_named():
    obj = [DriftCheck("object_b", "ks", 1e-5, 0.002, "below"),
           DriftCheck("object_area", "ks", math.nan, 0.002, "below")]
    d = decide_drift(checks(embedding=0.001, brightness=0.4) + obj, n_reference=100,
                     n_current=40, min_current=20)
    assert d.drifted and d.drifted_checks == ["object_b"]
    assert "object_b ks 1e-05 < 0.002" in d.reason and "not computed: object_area" in d.reason
    quiet = decide_drift(checks(embedding=0.001) + obj[1:], n_reference=100, n_current=40,
                         min_current=20)
    assert not quiet.drifted and "no drift in 1 checks" in quiet.reason
    assert "not computed: object_area" in quiet.reason


def test_too_few_new_images_decide_nothing():
    d = decide_drift(checks(embedding=0.9), n_reference=100, n_current=5, min_current=20)
    assert not d.drifted and "only 5 new images" in d.reason


def drift(on: bool):
    return decide_drift(checks(embedding=0.9 if on else 0.0), n_reference=100, n_current=40,
                        min_current=20)


@pytest.mark.parametrize("growth, drifted, conf, fire, event, trigger", [
    (0, False, (0.8, 0.8), False, None, None),
    (49, False, (0.8, 0.8), False, None, None),
    (50, False, (0.8, 0.8), True, EVENT_POOL, "pool-grew"),
    (10, True, (0.8, 0.8), True, EVENT_DRIFT, "drift"),
    (10, False, (0.8, 0.65), True, EVENT_METRIC, "metric-drop"),
    (10, False, (0.8, 0.75), False, None, None),
    (80, True, (0.8, 0.5), True, EVENT_DRIFT, "drift"),  # strongest reason names the event
    (80, False, (0.8, 0.5), True, EVENT_METRIC, "metric-drop"),
])
def test_trigger_truth_table(growth, drifted, conf, fire, event, trigger):
    d = decide_trigger(pool_growth=growth, drift=drift(drifted), reference_confidence=conf[0],
                       champion_confidence=conf[1], cfg=TriggerConfig())
    assert (d.fire, d.event, d.trigger) == (fire, event, trigger)
    if fire:
        assert len(d.reasons) >= 1


def test_drift_can_be_ignored_and_no_drift_result_is_fine():
    cfg = TriggerConfig(on_drift=False)
    assert not decide_trigger(pool_growth=1, drift=drift(True), reference_confidence=None,
                              champion_confidence=None, cfg=cfg).fire
    d = decide_trigger(pool_growth=3, drift=None, reference_confidence=None,
                       champion_confidence=None, cfg=TriggerConfig(pool_growth_min=3))
    assert d.fire and d.event == EVENT_POOL
