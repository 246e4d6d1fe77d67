"""DVC on an S3 remote served on loopback (moto): push, fresh clone + pull, old revisions."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from synthloop.config import load_config
from synthloop.versioning.dvc_repo import open_workspace, pull, read_at
from synthloop.versioning.remote import commit_and_push, workspace_repo
from tests_support import DEMO_CONFIG

pytestmark = pytest.mark.slow


@pytest.fixture
def s3(moto_s3):
    return moto_s3


def test_round_trip_clone_pull_and_an_old_revision(tmp_path, s3):
    endpoint, client, bucket = s3
    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", f"versioning.remote_url=s3://{bucket}/team/demo",
        f"versioning.s3_endpoint_url={endpoint}"])
    data = tmp_path / "ws" / "data"
    (data / "val").mkdir(parents=True)
    (data / "val" / "annotations.json").write_text('{"v": 1}')
    (data / "val" / "a.jpg").write_bytes(b"\xff\xd8first")
    v1 = commit_and_push(cfg, "datasets v1", tag="datasets")
    (data / "labeled").mkdir()
    (data / "labeled" / "annotations.json").write_text('{"labels": 3}')
    (data / "val" / "annotations.json").write_text('{"v": 2}')
    v2 = commit_and_push(cfg, "cycle 1", tag="cycle-1")
    assert v1 != v2
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("team/demo/") for k in keys)
    config = (cfg.workspace / ".dvc" / "config").read_text()
    assert f"s3://{bucket}/team/demo" in config and "test" not in config  # no credentials

    clone = tmp_path / "clone"  # a fresh machine: git clone, then dvc pull from S3
    subprocess.run(["git", "clone", "--quiet", str(cfg.workspace), str(clone)], check=True)
    cloned = open_workspace(clone)
    pull(cloned)
    assert (clone / "data" / "val" / "annotations.json").read_text() == '{"v": 2}'
    assert (clone / "data" / "labeled" / "annotations.json").read_text() == '{"labels": 3}'
    shutil.rmtree(clone / ".dvc" / "cache", ignore_errors=True)  # old revs come from S3
    assert read_at(cloned, "data/val/annotations.json", "datasets") == b'{"v": 1}'
    assert read_at(cloned, "data/val/a.jpg", "datasets") == b"\xff\xd8first"


def test_profile_goes_to_the_remote_config_not_keys(tmp_path, s3):
    endpoint, _, bucket = s3
    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", f"versioning.remote_url=s3://{bucket}/p",
        f"versioning.s3_endpoint_url={endpoint}", "versioning.s3_profile=camera-team"])
    workspace_repo(cfg)
    config = (cfg.workspace / ".dvc" / "config").read_text()
    assert "profile = camera-team" in config and "endpointurl" in config
    assert "access_key" not in config and "secret" not in config
