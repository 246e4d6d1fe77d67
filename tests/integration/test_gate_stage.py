"""The gate stage against a real (embedded SQLite) MLflow registry: alias moves only on a win.

Every decision here is made by the paired bootstrap (the record's ``rule`` says so): the val set
is on disk and each version's per-image predictions are cached as the training stage caches
them. Expected values are COCO AP by hand (gate_support.hand_ap): 14 images, one box each, and
detections that are exact copies of the boxes of some images.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from gate_support import exact_detections, exact_set, hand_ap, register, save_val_set
from synthloop.config import load_config
from synthloop.gating.decision import RULE_BOOTSTRAP, RULE_NO_CHAMPION
from synthloop.stages import gate
from tests_support import DEMO_CONFIG

N = 14


@pytest.fixture()
def setup(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              "gate.bootstrap_resamples=40"])
    ds = exact_set(N)
    return cfg, ds, save_val_set(cfg, ds)


def model(setup, found: int):
    """A registered version whose detections find the boxes of images 1..found."""
    cfg, ds, md5 = setup
    return register(cfg, ds, exact_detections(ds, {1: set(range(1, found + 1))}), md5)


def champion(cfg) -> str:
    return str(MlflowClient().get_model_version_by_alias(cfg.registered_model_name, "champion").version)


def test_champion_moves_only_when_the_candidate_beats_it(setup):
    cfg = setup[0]
    first = gate.run(cfg, cycle=0, candidate=(m := model(setup, 10))[0], candidate_eval=m[1])
    assert first["promote"] and first["rule"] == RULE_NO_CHAMPION and champion(cfg) == "1"
    assert first["candidate_value"] == pytest.approx(hand_ap(10, N), abs=1e-12)

    worse = model(setup, 6)
    rec = gate.run(cfg, cycle=1, candidate=worse[0], candidate_eval=worse[1])
    assert not rec["promote"] and rec["rule"] == RULE_BOOTSTRAP and champion(cfg) == "1"
    assert rec["interval"]["resamples"] == 40 and rec["interval"]["upper"] <= 0.0
    assert rec["champion_version_before"] == "1"
    challenger = MlflowClient().get_model_version_by_alias(cfg.registered_model_name, "challenger")
    assert str(challenger.version) == "2"
    tags = MlflowClient().get_run(worse[0].run_id).data.tags
    assert (tags["gate.promote"], tags["gate.rule"]) == ("False", RULE_BOOTSTRAP)

    equal = model(setup, 10)  # the same detections: paired resamples differ by exactly 0
    rec = gate.run(cfg, cycle=2, candidate=equal[0], candidate_eval=equal[1])
    assert not rec["promote"] and rec["rule"] == RULE_BOOTSTRAP
    assert rec["interval"]["lower"] == rec["interval"]["upper"] == 0.0

    better = model(setup, N)
    rec = gate.run(cfg, cycle=3, candidate=better[0], candidate_eval=better[1])
    assert rec["promote"] and rec["rule"] == RULE_BOOTSTRAP and champion(cfg) == "4"
    assert rec["improvement"] == pytest.approx(1.0 - hand_ap(10, N), abs=1e-12)
    assert rec["interval"]["lower"] > 0.0
    assert [(d["name"], d["regressed"]) for d in rec["class_drops"]] == [("part", False)]


def test_a_rerun_returns_the_recorded_decision_and_moves_nothing(setup):
    cfg = setup[0]
    m = model(setup, 10)
    gate.run(cfg, cycle=0, candidate=m[0], candidate_eval=m[1])
    worse = model(setup, 3)
    rec = gate.run(cfg, cycle=1, candidate=worse[0], candidate_eval=worse[1])
    assert rec["rule"] == RULE_BOOTSTRAP
    again = gate.run(cfg, cycle=1, candidate=worse[0], candidate_eval=worse[1])
    assert again == rec and champion(cfg) == "1"


def test_resume_after_the_alias_moved_but_before_the_record_was_written(setup):
    cfg = setup[0]
    m = model(setup, 6)
    gate.run(cfg, cycle=0, candidate=m[0], candidate_eval=m[1])
    better = model(setup, N)
    assert gate.run(cfg, cycle=1, candidate=better[0], candidate_eval=better[1])["promote"]
    (cfg.workspace / "state" / "cycle_1" / "gate.json").unlink()  # the crash lost the record
    rec = gate.run(cfg, cycle=1, candidate=better[0], candidate_eval=better[1])
    assert rec["promote"] and rec["rule"] == "already champion" and champion(cfg) == "2"
