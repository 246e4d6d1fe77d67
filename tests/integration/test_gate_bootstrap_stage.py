"""The gate stage with the paired bootstrap, against the embedded MLflow registry.

Per-image validation predictions are what the training stage caches; here they are written
directly, so no model is trained. A champion evaluated on another validation-set version is
re-evaluated on the current one before any comparison.
"""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from synthloop.config import load_config
from synthloop.detection.evaluation import evaluate_predictions
from synthloop.gating.predictions import predictions_path
from synthloop.stages import gate
from synthloop.versioning.dvc_repo import dataset_md5
from tests_support import DEMO_CONFIG
from gate_support import detections, register, val_set


@pytest.fixture()
def setup(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              "gate.bootstrap_resamples=40"])
    ds, boxes = val_set(n=24)
    val_dir = cfg.workspace / "data" / "val"
    ds.with_image_root(val_dir / "images").save(val_dir / "annotations.json")
    return cfg, ds, boxes, dataset_md5(val_dir)


def champion(cfg) -> str:
    return str(MlflowClient().get_model_version_by_alias(cfg.registered_model_name,
                                                         "champion").version)


def test_bootstrap_decides_and_the_record_carries_the_interval(setup):
    cfg, ds, boxes, md5 = setup
    weak = detections(ds, boxes, jitter=6.0, seed=2, misses=0.3)
    strong = detections(ds, boxes, jitter=1.0, seed=1)
    m0 = register(cfg, ds, weak, md5)
    assert gate.run(cfg, cycle=0, candidate=m0[0], candidate_eval=m0[1])["interval"] is None
    m1 = register(cfg, ds, strong, md5)
    rec = gate.run(cfg, cycle=1, candidate=m1[0], candidate_eval=m1[1])
    assert rec["promote"] and champion(cfg) == m1[0].version
    ci = rec["interval"]
    assert ci["resamples"] == 40 and 0 < ci["lower"] <= ci["improvement"] <= ci["upper"]
    assert "interval of the gain" in rec["reason"]
    # the same model again: a tie, interval [0, 0]: kept
    m2 = register(cfg, ds, strong, md5)
    rec2 = gate.run(cfg, cycle=2, candidate=m2[0], candidate_eval=m2[1])
    assert not rec2["promote"] and rec2["interval"]["upper"] == 0.0
    assert champion(cfg) == m1[0].version
    # the gate's MLflow run: nested params/metrics, decision and the PR/bootstrap figure
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    g = runs["gate-cycle-1"]
    assert g.data.params["gate.bootstrap_resamples"] == "40"
    assert g.data.metrics["gate_ci_lower"] == pytest.approx(ci["lower"])
    files = {a.path for a in client.list_artifacts(g.info.run_id)}
    assert {"gate_decision.json", "gate_reason.txt", "gate_report.png"} <= files
    stored = json.loads((cfg.workspace / "state" / "cycle_1" / "gate.json").read_text())
    assert stored["interval"]["lower"] == ci["lower"]


def test_a_champion_from_another_val_version_is_reevaluated_first(setup, monkeypatch):
    cfg, ds, boxes, md5 = setup
    old = detections(ds, boxes, jitter=1.0, seed=1)
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
    cand = register(cfg, ds, detections(ds, boxes, jitter=1.5, seed=5), md5)
    rec = gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    assert (champ_ref.run_id, md5) in calls  # re-evaluated on the CURRENT val set
    true_ap = evaluate_predictions(ds, old)["AP"]
    assert rec["champion_value"] == pytest.approx(true_ap)  # not the recorded 0.99
    assert rec["champion_value"] != pytest.approx(0.99)


def test_missing_predictions_fall_back_to_points_and_say_so(setup):
    cfg, ds, boxes, md5 = setup
    m0 = register(cfg, ds, detections(ds, boxes, jitter=6.0, seed=2, misses=0.3), md5)
    gate.run(cfg, cycle=0, candidate=m0[0], candidate_eval=m0[1])
    m1 = register(cfg, ds, detections(ds, boxes, jitter=1.0, seed=1), md5)
    predictions_path(cfg.workspace, m1[0].run_id, md5).unlink()  # and no model to recompute
    rec = gate.run(cfg, cycle=1, candidate=m1[0], candidate_eval=m1[1])
    assert rec["interval"] is None and "bootstrap unavailable" in rec["reason"]
    assert rec["promote"]  # the point rule decided
