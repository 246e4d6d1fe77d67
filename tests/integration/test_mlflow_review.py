"""What a reviewer finds in MLflow (issue 20), checked in the store: the experiment's kind, a
stage that raises ends its run FAILED with the error, datasets as run inputs named by their
DVC version, and the gate's verdict on the version and model pages.

Real MLflow (SQLite in tmp_path), real stages: pretrain and score raise on corrupt images, the
gate decides on the exact detections of tests/gate_support.py.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from gate_support import exact_detections, exact_set, register, save_val_set
from people_support import register_tiny_models
from review_support import tiny_workspace
from synthloop import tracking
from synthloop.artifacts import ModelRef
from synthloop.config import load_config
from synthloop.stages import gate, learning_curve, pipeline
from synthloop.stages.render import dataset_ref
from synthloop.stages.workspace import Workspace, read_record
from synthloop.tracking_recovery import ERROR_ARTIFACT, ERROR_TAG, NOTE_TAG, RESUMED_TAG
from tests_support import DEMO_CONFIG

# 11-25 s each on 2 busy cores (MLflow store set-up, a real pretrain or scoring start)
pytestmark = pytest.mark.slow


def runs_by_name(cfg) -> dict:
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_the_experiment_says_it_holds_model_training(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}"])
    exp_id = tracking.setup(cfg)
    client = MlflowClient()
    assert client.get_experiment(exp_id).tags[tracking.EXPERIMENT_KIND_TAG] == \
        "custom_model_development"
    client.delete_experiment_tag(exp_id, tracking.EXPERIMENT_KIND_TAG)  # an older workspace
    tracking.setup(cfg)
    assert client.get_experiment(exp_id).tags[tracking.EXPERIMENT_KIND_TAG] == \
        "custom_model_development"
    client.set_experiment_tag(exp_id, tracking.EXPERIMENT_KIND_TAG, "genai_development")
    tracking.setup(cfg)  # a kind someone chose in the UI stays
    assert client.get_experiment(exp_id).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"
    assert tracking.runs_url(cfg).endswith(f"#/experiments/{exp_id}/runs?"
                                           "workflowType=machine_learning")


def corrupt(folder: Path) -> None:
    for image in (folder / "images").glob("*.jpg"):
        image.write_bytes(b"\xff\xd8 not a jpeg")


def test_a_stage_that_raises_ends_its_run_and_the_pipeline_run_failed(tmp_path):
    cfg = tiny_workspace(tmp_path)
    corrupt(Workspace.of(cfg).dataset_dir("synthetic"))
    with pytest.raises(Exception) as raised:
        pipeline.run_pipeline(cfg, progress=False)
    runs = runs_by_name(cfg)
    for name in ("pretrain", f"pipeline-{cfg.name}"):
        run = runs[name]
        assert run.info.status == "FAILED", name
        assert run.data.tags[ERROR_TAG].startswith(type(raised.value).__name__ + ": "), name
        trace = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{ERROR_ARTIFACT}")
        assert "Traceback" in trace and type(raised.value).__name__ in trace
    # the run page's description says it too, unless the run had one (the pipeline run's)
    assert runs["pretrain"].data.tags[NOTE_TAG].startswith("FAILED: " + type(raised.value).__name__)
    assert runs[f"pipeline-{cfg.name}"].data.tags[NOTE_TAG] == learning_curve.NOTE
    # the failed training run still names what it was trained on, by DVC version
    inputs = {d.dataset.name: d for d in runs["pretrain"].inputs.dataset_inputs}
    assert set(inputs) == {"synthetic@datasets", "val@datasets"}
    synthetic = dataset_ref("synthetic", Workspace.of(cfg).dataset_dir("synthetic"))
    assert inputs["synthetic@datasets"].dataset.digest == synthetic.md5
    contexts = {n: {t.key: t.value for t in d.tags}["mlflow.data.context"]
                for n, d in inputs.items()}
    assert contexts == {"synthetic@datasets": "training", "val@datasets": "validation"}
    source = inputs["val@datasets"].dataset.source
    assert f"{cfg.workspace.resolve() / 'dvc-remote'}/files/md5/" in source
    assert Path(source.split('"uri": "')[1].split('"')[0]).is_file()  # the pushed manifest
    # the next start reopens the pipeline run: RUNNING again, the error kept as a note
    learning_curve.pipeline_run_id(cfg)
    again = MlflowClient().get_run(runs[f"pipeline-{cfg.name}"].info.run_id)
    assert again.info.status == "RUNNING" and ERROR_TAG not in again.data.tags
    assert again.data.tags[RESUMED_TAG].startswith("ended FAILED: ")


def test_a_cycle_whose_scoring_raises_ends_failed_with_the_error(tmp_path):
    cfg = tiny_workspace(tmp_path, update={"detector": {"min_size": 64, "max_size": 96}})
    version = register_tiny_models(cfg, tmp_path / "models", 1)[0]
    mv = MlflowClient().get_model_version(cfg.registered_model_name, version)
    ws = Workspace.of(cfg)
    corrupt(ws.dataset_dir("pool"))
    data = {name: dataset_ref(name, ws.dataset_dir(name)) for name in ("pool", "val")}
    with pytest.raises(Exception) as raised:
        pipeline.run_cycle(cfg, 1, previous=ModelRef(mv.run_id, mv.source, str(version)),
                           data=data, progress=False)
    run = MlflowClient().get_run(read_record(ws.cycle_dir(1) / "run.json")["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags[ERROR_TAG].startswith(type(raised.value).__name__)
    pool = [d for d in run.inputs.dataset_inputs if d.dataset.name.startswith("pool@")]
    assert len(pool) == 1 and pool[0].dataset.digest == data["pool"].md5


def test_the_gate_writes_its_verdict_on_the_version_and_who_serves_on_the_model(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              "gate.bootstrap_resamples=50"])
    ds = exact_set(12)
    md5 = save_val_set(cfg, ds)
    first = register(cfg, ds, exact_detections(ds, {1: set(range(1, 5))}), md5)
    gate.run(cfg, cycle=0, candidate=first[0], candidate_eval=first[1])
    better = register(cfg, ds, exact_detections(ds, {1: set(range(1, 13))}), md5)
    decision = gate.run(cfg, cycle=1, candidate=better[0], candidate_eval=better[1])
    assert decision["promote"]
    client, name = MlflowClient(), cfg.registered_model_name
    v1 = client.get_model_version(name, first[0].version).description
    assert v1.startswith("promoted: first champion (no champion to beat); AP ")
    v2 = client.get_model_version(name, better[0].version).description
    verdict = v2.split("\n")[0]
    assert verdict.startswith(f"promoted: AP +{decision['improvement']:.3f}, 90% interval [")
    assert verdict.endswith("over 50 resamples; per-class ok")
    assert decision["reason"] in v2
    model = client.get_registered_model(name).description
    assert model.startswith(f"Serving: v{better[0].version} (alias 'champion') since 20")
    assert f"gate of cycle 1: {verdict}" in model
    gate_run = runs_by_name(cfg)["gate-cycle-1"]
    assert [d.dataset.name.split("@")[0] for d in gate_run.inputs.dataset_inputs] == ["val"]
    assert gate_run.inputs.dataset_inputs[0].dataset.digest == md5
    worse = register(cfg, ds, exact_detections(ds, {1: set(range(1, 3))}), md5)
    assert not gate.run(cfg, cycle=2, candidate=worse[0], candidate_eval=worse[1])["promote"]
    assert client.get_model_version(name, worse[0].version).description.startswith("refused: AP -")
    assert client.get_registered_model(name).description == model  # v2 still serves
