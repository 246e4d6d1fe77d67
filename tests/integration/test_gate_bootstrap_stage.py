"""The gate stage with the paired bootstrap, against the embedded MLflow registry.

Per-image validation predictions are what the training stage caches; here they are written
directly, so no model is trained. A champion evaluated on another validation-set version is
re-evaluated on the current one before any comparison. Where a test expects an AP value it is
computed by hand (gate_support.hand_ap), not by the evaluation code under test.
"""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from synthloop.config import load_config
from synthloop.gating.decision import RULE_BOOTSTRAP, RULE_NO_CHAMPION
from synthloop.stages import gate
from tests_support import DEMO_CONFIG
from gate_support import (detections, exact_detections, exact_set, hand_ap, register,
                          save_val_set, val_set)


@pytest.fixture()
def setup(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              "gate.bootstrap_resamples=40"])
    ds, boxes = val_set(n=24)
    return cfg, ds, boxes, save_val_set(cfg, ds)


def champion(cfg) -> str:
    return str(MlflowClient().get_model_version_by_alias(cfg.registered_model_name,
                                                         "champion").version)


def test_bootstrap_decides_and_the_record_carries_the_interval(setup):
    cfg, ds, boxes, md5 = setup
    weak = detections(ds, boxes, jitter=6.0, seed=2, misses=0.3)
    strong = detections(ds, boxes, jitter=1.0, seed=1)
    m0 = register(cfg, ds, weak, md5)
    first = gate.run(cfg, cycle=0, candidate=m0[0], candidate_eval=m0[1])
    assert first["interval"] is None and first["rule"] == RULE_NO_CHAMPION
    m1 = register(cfg, ds, strong, md5)
    rec = gate.run(cfg, cycle=1, candidate=m1[0], candidate_eval=m1[1])
    assert rec["promote"] and rec["rule"] == RULE_BOOTSTRAP and champion(cfg) == m1[0].version
    ci = rec["interval"]
    assert ci["resamples"] == 40 and 0 < ci["lower"] <= ci["improvement"] <= ci["upper"]
    assert "interval of the gain" in rec["reason"]
    # the same model again: a tie, interval [0, 0]: kept
    m2 = register(cfg, ds, strong, md5)
    rec2 = gate.run(cfg, cycle=2, candidate=m2[0], candidate_eval=m2[1])
    assert not rec2["promote"] and rec2["rule"] == RULE_BOOTSTRAP
    assert rec2["interval"]["upper"] == 0.0
    assert champion(cfg) == m1[0].version
    # the gate's MLflow run: nested params/metrics, decision and the PR/bootstrap figure
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    g = runs["gate-cycle-1"]
    assert g.data.params["gate.bootstrap_resamples"] == "40"
    assert g.data.tags["gate.rule"] == RULE_BOOTSTRAP and g.info.status == "FINISHED"
    assert g.data.metrics["gate_ci_lower"] == pytest.approx(ci["lower"])
    files = {a.path for a in client.list_artifacts(g.info.run_id)}
    assert {"gate_decision.json", "gate_reason.txt", "gate_report.png"} <= files
    stored = json.loads((cfg.workspace / "state" / "cycle_1" / "gate.json").read_text())
    assert stored["interval"]["lower"] == ci["lower"]


def test_a_champion_from_another_val_version_is_reevaluated_first(tmp_path, monkeypatch):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              "gate.bootstrap_resamples=20"])
    ds = exact_set(14)
    md5 = save_val_set(cfg, ds)
    old = exact_detections(ds, {1: set(range(1, 11))})  # finds the boxes of 10 of 14 images
    # the champion's run says AP 0.99 - but on an OLD validation set ("v-old")
    champ_ref, _ = register(cfg, ds, old, md5, recorded_md5="v-old")
    MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion",
                                              champ_ref.version)
    calls = []
    real = gate.val_predictions

    def spy(cfg_, run_id, uri, val_md5):
        calls.append((run_id, val_md5))
        return real(cfg_, run_id, uri, val_md5)

    monkeypatch.setattr(gate, "val_predictions", spy)
    cand = register(cfg, ds, exact_detections(ds, {1: set(range(1, 15))}), md5)
    rec = gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    assert (champ_ref.run_id, md5) in calls  # re-evaluated on the CURRENT val set
    assert rec["champion_value"] == pytest.approx(hand_ap(10, 14), abs=1e-12)  # not 0.99
    assert rec["rule"] == RULE_BOOTSTRAP and rec["promote"]


def test_a_better_model_with_one_class_dropping_is_kept_and_the_class_named(tmp_path):
    """bolt: the champion finds 1 of 7, the candidate all 7; nut: the champion finds all 7, the
    candidate 6. Overall AP (the mean over both classes) rises by (86 - 15) / 202 = 0.35; the
    nut AP falls by 15 / 101 = 0.149 > gate.max_class_drop 0.05."""
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              "gate.bootstrap_resamples=40"])
    ds = exact_set(7, ("bolt", "nut"))
    md5 = save_val_set(cfg, ds)
    every = set(range(1, 8))
    champ = register(cfg, ds, exact_detections(ds, {1: {1}, 2: every}), md5)
    gate.run(cfg, cycle=0, candidate=champ[0], candidate_eval=champ[1])
    cand = register(cfg, ds, exact_detections(ds, {1: every, 2: set(range(1, 7))}), md5)
    rec = gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    assert rec["improvement"] == pytest.approx((hand_ap(7, 7) + hand_ap(6, 7)) / 2
                                               - (hand_ap(1, 7) + hand_ap(7, 7)) / 2, abs=1e-12)
    assert rec["interval"]["lower"] > 0.0  # the overall gain alone would promote
    assert not rec["promote"] and rec["rule"] == RULE_BOOTSTRAP
    assert champion(cfg) == champ[0].version
    assert "class 'nut' AP drops by 0.1485" in rec["reason"] and "'bolt'" not in rec["reason"]
    drops = {d["name"]: d for d in rec["class_drops"]}
    assert drops["nut"]["regressed"] and not drops["bolt"]["regressed"]
    assert drops["nut"]["drop"] == pytest.approx(1.0 - hand_ap(6, 7), abs=1e-12)
    assert drops["bolt"]["drop"] == pytest.approx(hand_ap(1, 7) - 1.0, abs=1e-12)
    assert drops["nut"]["lower"] <= drops["nut"]["drop"] <= drops["nut"]["upper"]
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    g = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}["gate-cycle-1"]
    assert g.data.metrics["gate_class_drop_nut"] == pytest.approx(drops["nut"]["drop"])
    assert g.data.metrics["gate_class_drop_nut_upper"] == pytest.approx(drops["nut"]["upper"])
    assert "gate_report.png" in {a.path for a in client.list_artifacts(g.info.run_id)}
