"""Lineage tags on runs and registry versions, and the chain printed by `synthloop lineage`."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from synthloop import lineage, tracking
from synthloop.artifacts import DatasetRef
from synthloop.config import load_config
from synthloop.gating.registry import register_version
from synthloop.versioning.remote import commit_and_push
from tests_support import DEMO_CONFIG


@pytest.fixture
def cfg(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}"])
    meshes = cfg.workspace / "data" / "synthetic" / "meshes"
    meshes.mkdir(parents=True)
    (meshes / "blade.stl").write_bytes(b"solid blade rev A")
    commit_and_push(cfg, "datasets", tag="datasets")
    return cfg


def ref(name: str, md5: str) -> DatasetRef:
    return DatasetRef(name=name, annotations=None, image_root=None, md5=md5, num_images=1,
                      num_annotations=0)


def train_run(cfg, name: str, tags: dict[str, str]) -> str:
    tracking.setup(cfg)
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_metric("val_AP", 0.25)
    return register_version(MlflowClient(), cfg.registered_model_name,
                            f"runs:/{run.info.run_id}/model", run.info.run_id, tags)


def test_tags_record_commits_data_batch_parent_and_cad(cfg):
    tags = lineage.run_tags(cfg, datasets={"synthetic": ref("synthetic", "s1"),
                                           "val": ref("val", "v1")},
                            parent_version="3", cad=True,
                            query_batch={"strategy": "dbal", "seed": 4, "image_ids": [5, 9],
                                         "model_version": "3", "pool_md5": "p1"})
    head = lineage.workspace_commit(cfg.workspace)
    assert tags["lineage.workspace_commit"] == head and len(head) == 40
    assert tags["lineage.data_version"].endswith(".dir")
    assert tags["lineage.source_commit"]  # a git commit here, synthloop==<v> when installed
    assert tags["lineage.data.synthetic.md5"] == "s1" and tags["lineage.data.val.md5"] == "v1"
    assert tags["lineage.parent_version"] == "3"
    assert json.loads(tags["lineage.query_batch"])["image_ids"] == [5, 9]
    assert len(tags["lineage.cad.blade"]) == 16


def test_a_huge_batch_is_cut_to_fit_a_tag():
    text = lineage.summarize_batch({"strategy": "dbal", "image_ids": list(range(100000))})
    assert len(text) <= lineage.MAX_TAG and json.loads(text)["k"] == 100000


def test_chain_back_to_the_cad_files_and_a_changed_mesh_shows(cfg):
    v1 = train_run(cfg, "pretrain", {"stage": "pretrain", "cycle": "0", "labels_used": "0",
                                     **lineage.run_tags(cfg, cad=True, datasets={
                                         "synthetic": ref("synthetic", "s1")})})
    v2 = train_run(cfg, "finetune-cycle-1", {"stage": "finetune", "cycle": "1",
                                             **lineage.run_tags(cfg, parent_version=v1, datasets={
                                                 "labeled": ref("labeled", "l1")})})
    v3 = train_run(cfg, "finetune-cycle-2", {"stage": "finetune", "cycle": "2",
                                             **lineage.run_tags(cfg, parent_version=v2, datasets={
                                                 "labeled": ref("labeled", "l2")})})
    MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion", v3)
    steps = lineage.trace(MlflowClient(), cfg.registered_model_name, "champion")
    assert [s.version for s in steps] == [v3, v2, v1]
    assert steps[-1].stage == "pretrain" and steps[-1].datasets == {"synthetic": "s1"}
    text = lineage.format_chain(steps, cad_now=lineage.cad_hashes(cfg))
    assert "(same file now)" in text and "data labeled" in text

    (cfg.workspace / "data" / "synthetic" / "meshes" / "blade.stl").write_bytes(b"solid rev B")
    now = lineage.cad_hashes(cfg)
    assert lineage.cad_changes(steps[-1].cad, now) == {"blade": (steps[-1].cad["blade"],
                                                                 now["blade"])}
    from synthloop.cli import app

    out = CliRunner().invoke(app, ["lineage", "champion", "--config", str(DEMO_CONFIG),
                                   "--workspace", str(cfg.workspace)])
    assert out.exit_code == 0, out.output
    assert f"v{v3}  finetune (cycle 2)" in out.output and "CHANGED" in out.output
    assert out.output.index(f"v{v3} ") < out.output.index(f"v{v1} ")


def test_after_a_cad_retrain_the_monitor_compares_with_the_newest_hashes(cfg):
    """A CAD retrain's version carries the new hashes; its parent chain, pretrain's old ones.
    The monitor compares the mesh on disk with the newest hashes in the champion's chain."""
    from synthloop.stages.monitor import cad_changed

    blade = cfg.workspace / "data" / "synthetic" / "meshes" / "blade.stl"
    v1 = train_run(cfg, "pretrain", {"stage": "pretrain",
                                     **lineage.run_tags(cfg, cad=True, datasets={})})
    old = lineage.cad_hashes(cfg)["blade"]
    client = MlflowClient()
    client.set_registered_model_alias(cfg.registered_model_name, "champion", v1)
    blade.write_bytes(b"solid rev B")
    new = lineage.cad_hashes(cfg)["blade"]
    assert cad_changed(cfg, client) == {"blade": (old, new)}
    v2 = train_run(cfg, "cad-retrain", {"stage": "cad-retrain", **lineage.run_tags(
        cfg, cad=True, parent_version=v1, datasets={})})
    client.set_registered_model_alias(cfg.registered_model_name, "champion", v2)
    assert cad_changed(cfg, client) == {}  # not pretrain's old hash: v2 was trained on rev B
    steps = lineage.trace(client, cfg.registered_model_name, "champion")
    assert [s.cad["blade"] for s in steps] == [new, old]


def test_an_answered_cad_revision_is_not_announced_again(cfg):
    """Once a retrain for the meshes on disk finished (here the gate kept the champion), the
    hourly check stops announcing that change; a newer revision is announced again."""
    from synthloop.stages.cad_records import cad_retrain_dir
    from synthloop.stages.monitor import check

    blade = cfg.workspace / "data" / "synthetic" / "meshes" / "blade.stl"
    v1 = train_run(cfg, "pretrain", {"stage": "pretrain",
                                     **lineage.run_tags(cfg, cad=True, datasets={})})
    MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion", v1)
    blade.write_bytes(b"solid rev B")
    first = check(cfg)
    assert list(first["cad_changed"]) == ["blade"] and first["cad_answered"] == {}
    folder = cad_retrain_dir(cfg, lineage.cad_hashes(cfg))
    folder.mkdir(parents=True)
    (folder / "retrain.json").write_text(json.dumps({"outcome": "kept champion"}))
    again = check(cfg)
    assert again["cad_changed"] == {} and list(again["cad_answered"]) == ["blade"]
    blade.write_bytes(b"solid rev C")
    assert list(check(cfg)["cad_changed"]) == ["blade"]


def test_unknown_version_is_a_clear_error(cfg):
    train_run(cfg, "pretrain", {"stage": "pretrain"})
    with pytest.raises(ValueError, match="has no version 42"):
        lineage.trace(MlflowClient(), cfg.registered_model_name, "42")
