"""The gate stage against a real (embedded SQLite) MLflow registry: alias moves only on a win."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from synthloop.artifacts import EvalResult, ModelRef
from synthloop.config import load_config
from synthloop.gating.registry import register_version
from synthloop.stages import gate
from tests_support import DEMO_CONFIG


@pytest.fixture()
def cfg(tmp_path):
    return load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}"])


def candidate(cfg, ap: float, md5: str = "val-v1") -> tuple[ModelRef, EvalResult]:
    from synthloop import tracking

    tracking.setup(cfg)
    with mlflow.start_run() as run:
        mlflow.log_param("val.md5", md5)
        mlflow.log_metric("val_AP", ap)
    version = register_version(MlflowClient(), cfg.registered_model_name,
                               f"runs:/{run.info.run_id}/model", run.info.run_id, {"val_AP": ap})
    return (ModelRef(run_id=run.info.run_id, uri=f"runs:/{run.info.run_id}/model", version=version),
            EvalResult(metrics={"AP": ap}, dataset_md5=md5, num_images=10))


def champion(cfg) -> str:
    return str(MlflowClient().get_model_version_by_alias(cfg.registered_model_name, "champion").version)


def test_champion_moves_only_when_the_candidate_beats_it(cfg):
    first = gate.run(cfg, cycle=0, candidate=(m := candidate(cfg, 0.30))[0], candidate_eval=m[1])
    assert first["promote"] and "no champion" in first["reason"] and champion(cfg) == "1"

    worse = candidate(cfg, 0.25)
    rec = gate.run(cfg, cycle=1, candidate=worse[0], candidate_eval=worse[1])
    assert not rec["promote"] and champion(cfg) == "1"
    assert rec["champion_version_before"] == "1"
    challenger = MlflowClient().get_model_version_by_alias(cfg.registered_model_name, "challenger")
    assert str(challenger.version) == "2"
    assert MlflowClient().get_run(worse[0].run_id).data.tags["gate.promote"] == "False"

    equal = candidate(cfg, 0.30)
    assert not gate.run(cfg, cycle=2, candidate=equal[0], candidate_eval=equal[1])["promote"]

    better = candidate(cfg, 0.41)
    rec = gate.run(cfg, cycle=3, candidate=better[0], candidate_eval=better[1])
    assert rec["promote"] and champion(cfg) == "4"
    assert rec["improvement"] == pytest.approx(0.11)


def test_a_rerun_returns_the_recorded_decision_and_moves_nothing(cfg):
    m = candidate(cfg, 0.30)
    gate.run(cfg, cycle=0, candidate=m[0], candidate_eval=m[1])
    worse = candidate(cfg, 0.10)
    rec = gate.run(cfg, cycle=1, candidate=worse[0], candidate_eval=worse[1])
    again = gate.run(cfg, cycle=1, candidate=worse[0], candidate_eval=worse[1])
    assert again == rec and champion(cfg) == "1"


def test_resume_after_the_alias_moved_but_before_the_record_was_written(cfg):
    m = candidate(cfg, 0.30)
    gate.run(cfg, cycle=0, candidate=m[0], candidate_eval=m[1])
    better = candidate(cfg, 0.50)
    gate.run(cfg, cycle=1, candidate=better[0], candidate_eval=better[1])
    (cfg.workspace / "state" / "cycle_1" / "gate.json").unlink()  # the crash lost the record
    rec = gate.run(cfg, cycle=1, candidate=better[0], candidate_eval=better[1])
    assert rec["promote"] and champion(cfg) == "2"
