"""The human-oracle label stage end to end on a tiny workspace: export with pre-annotations,
stop, strict import (a rejected file changes nothing), commit, skipped image back in the pool,
savings on the cycle's MLflow run, `synthloop label status`."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from synthloop.artifacts import QueryBatch
from synthloop.cli import app
from synthloop.config import load_config
from synthloop.data.label_import import LabelImportError
from synthloop.stages import label
from synthloop.stages.label_human import (LabelsPending, export_folder, import_answers, status)
from synthloop.stages.workspace import Workspace, write_record
from people_support import make_pool, register_tiny_models
from tests_support import DEMO_CONFIG

pytestmark = pytest.mark.slow


@pytest.fixture()
def setup(tmp_path):
    ws = tmp_path / "ws"
    overrides = [f"workspace={ws}", "labeling.oracle=labelstudio",
                 "labeling.preannotation_min_score=0.0", "versioning.push=false"]
    cfg = load_config(DEMO_CONFIG, overrides=overrides)
    make_pool(cfg, 4)
    version = register_tiny_models(cfg, tmp_path / "models", 1)[0]
    batch = QueryBatch(strategy="random", params={"k": 3}, seed=0, model_version=version,
                       pool_md5="pool-v1", image_ids=(1, 2, 3), scores=(0.3, 0.2, 0.1),
                       new_label_ids=(1, 2, 3))
    state = Workspace.of(cfg).cycle_dir(1)
    write_record(state / "query.json", batch.to_dict())
    with mlflow.start_run(run_name="cycle-1") as run:
        pass
    write_record(state / "run.json", {"run_id": run.info.run_id})
    return cfg, batch, run.info.run_id, overrides


def answer(tasks: list[dict]) -> list[dict]:
    """An annotator: image 1 keeps its first two pre-annotations, image 2 gets one box moved,
    image 3 is skipped."""
    out = json.loads(json.dumps(tasks))
    by_id = {t["data"]["synthloop_image_id"]: t for t in out}
    kept = by_id[1]["predictions"][0]["result"][:2]
    moved = json.loads(json.dumps(by_id[2]["predictions"][0]["result"][0]))
    moved["value"].update(x=5.0, y=5.0, width=30.0, height=30.0)
    by_id[1]["annotations"] = [{"id": 1, "was_cancelled": False, "result": kept,
                                "lead_time": 12.5}]  # Label Studio timed this one only
    by_id[2]["annotations"] = [{"id": 2, "was_cancelled": False, "result": [moved]}]
    by_id[3]["annotations"] = [{"id": 3, "was_cancelled": True, "result": []}]
    return out


def test_round_trip_through_the_label_stage(setup, tmp_path):
    cfg, batch, run_id, overrides = setup
    with pytest.raises(LabelsPending, match="label import --cycle 1"):
        label.run(cfg, cycle=1, batch=batch)
    folder = export_folder(cfg, 1)
    tasks = json.loads((folder / "labelstudio" / "tasks.json").read_text())
    assert [t["data"]["synthloop_image_id"] for t in tasks] == [1, 2, 3]
    assert all(len(t["predictions"][0]["result"]) >= 2 for t in tasks)
    assert (folder / "labelstudio" / "label_config.xml").is_file()
    with pytest.raises(LabelsPending):  # a rerun exports nothing new and still waits
        label.run(cfg, cycle=1, batch=batch)

    done = answer(tasks)
    bad = json.loads(json.dumps(done))
    bad[0]["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["nut"]
    bad[1]["data"]["file_name"] = "../../../etc/passwd"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(LabelImportError) as err:
        import_answers(cfg, 1, tmp_path / "bad.json")
    assert len(err.value.problems) == 2
    state = Workspace.of(cfg).cycle_dir(1)
    assert not (state / "label_import.json").exists() and not (state / "label_answers.json").exists()

    result = CliRunner().invoke(app, ["label", "import", str(tmp_path / "bad.json"), "--cycle", "1",
                                      "-c", str(DEMO_CONFIG), *sum((["--set", o] for o in overrides), [])])
    assert result.exit_code == 2 and "unknown class 'nut'" in result.output
    assert "path traversal" in result.output

    (tmp_path / "done.json").write_text(json.dumps(done))
    rec = import_answers(cfg, 1, tmp_path / "done.json")
    assert rec["returned"] == [1, 2] and rec["skipped"] == [3] and rec["pending"] == []
    assert rec["savings"]["boxes_final"] == 3 and rec["savings"]["boxes_accepted"] == 2
    # cost: image 1 from its lead time, image 2 from the model (5 s + 7 s for the moved box +
    # 1 s a deleted pre-annotation); skipped image 3 is not labelled, so not costed here
    assert rec["cost"]["source"] == "mixed" and rec["cost"]["images_timed"] == 1
    assert rec["cost"]["images"] == 2 and rec["cost"]["seconds"] > 12.5 + 5 + 7

    ref = label.run(cfg, cycle=1, batch=batch)
    assert ref.num_images == 2 and ref.num_annotations == 3
    committed = json.loads((state / "label.json").read_text())
    assert committed["cost"] == rec["cost"]
    assert label.labeled_ids(cfg) == {1, 2}  # 3 was skipped: still in the pool's unlabelled part
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["label_preannotation_accepted_share"] == pytest.approx(2 / 3)
    assert metrics["label_images_skipped"] == 1.0 and metrics["label_boxes"] == 3.0
    with pytest.raises(ValueError, match="already labelled"):
        import_answers(cfg, 1, tmp_path / "done.json")

    (row,) = status(cfg)
    assert row["state"] == "committed" and row["labelled"] == 2 and row["skipped"] == 1
    assert row["minutes"] == rec["cost"]["minutes"] and row["cost_source"] == "mixed"
    result = CliRunner().invoke(app, ["label", "status", "-c", str(DEMO_CONFIG),
                                      *sum((["--set", o] for o in overrides), [])])
    assert result.exit_code == 0 and "committed" in result.output and "67%" in result.output


def test_cvat_export_from_the_cli(setup):
    cfg, batch, _, overrides = setup
    result = CliRunner().invoke(app, ["label", "export", "--cycle", "1", "--tool", "cvat",
                                      "-c", str(DEMO_CONFIG), *sum((["--set", o] for o in overrides), [])])
    assert result.exit_code == 0, result.output
    folder = export_folder(cfg, 1) / "cvat"
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["000001.jpg", "000002.jpg", "000003.jpg"]
    coco = json.loads((folder / "annotations" / "instances_default.json").read_text())
    assert {im["id"] for im in coco["images"]} == {1, 2, 3} and coco["annotations"]
    assert "waiting for labels" in status(cfg)[0]["state"]
