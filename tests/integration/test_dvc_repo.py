"""The workspace repo (git + DVC) on tmp_path, with a local-folder remote and a moto S3 one."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from synthloop.versioning.dvc_repo import (VersioningError, Workspace, commit_data, dataset_md5,
                                           head_rev, init_workspace, open_workspace, pull, push,
                                           read_at)


def git(ws: Workspace, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=ws.root, capture_output=True, text=True,
                          check=True).stdout.strip()


def n_commits(ws: Workspace) -> int:
    return int(git(ws, "rev-list", "--count", "HEAD"))


def write_dataset(ws: Workspace, val_json: str = '{"images": []}') -> None:
    for split in ("synthetic", "pool", "labeled", "val"):
        (ws.data / split).mkdir(parents=True, exist_ok=True)
    (ws.data / "val" / "annotations.json").write_text(val_json)
    (ws.data / "val" / "img_0001.jpg").write_bytes(b"\xff\xd8fake-jpeg")
    (ws.data / "pool" / "img_0002.jpg").write_bytes(b"\xff\xd8other")


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return init_workspace(tmp_path / "ws", remote_url=str(tmp_path / "remote"))


def test_init_is_idempotent(tmp_path, ws):
    before = n_commits(ws)
    again = init_workspace(ws.root, remote_url=str(tmp_path / "remote"))
    assert again == ws
    assert n_commits(ws) == before == 1
    assert git(ws, "status", "--porcelain") == ""
    config = (ws.root / ".dvc" / "config").read_text()
    assert "analytics = False" in config and str(tmp_path / "remote") in config
    assert open_workspace(ws.root) == ws


def test_commit_twice_without_change_keeps_md5_and_history(ws):
    write_dataset(ws)
    md5 = commit_data(ws, "first data")
    commits = n_commits(ws)
    assert md5.endswith(".dir")
    assert commit_data(ws, "same data again") == md5
    assert n_commits(ws) == commits
    assert git(ws, "status", "--porcelain") == ""


def test_changed_file_gives_new_md5(ws):
    write_dataset(ws)
    first = commit_data(ws, "v1")
    (ws.data / "labeled" / "new.json").write_text("{}")
    second = commit_data(ws, "v2")
    assert second != first
    assert git(ws, "log", "-1", "--format=%s") == "v2"


def test_tag_is_idempotent_and_read_at_an_old_tag(ws):
    write_dataset(ws, '{"v": 1}')
    commit_data(ws, "cycle 1", tag="cycle-1")
    rev1 = head_rev(ws)
    commit_data(ws, "cycle 1 rerun", tag="cycle-1")  # re-run: no error, tag unchanged
    assert git(ws, "rev-parse", "cycle-1^{commit}") == rev1
    write_dataset(ws, '{"v": 2}')
    commit_data(ws, "cycle 2", tag="cycle-2")
    assert read_at(ws, "data/val/annotations.json", "cycle-1") == b'{"v": 1}'
    assert read_at(ws, "data/val/annotations.json", "cycle-2") == b'{"v": 2}'
    # a re-run without new data (the pipeline re-runs "datasets" every time) leaves the tag
    commit_data(ws, "cycle 1 again", tag="cycle-1")
    assert git(ws, "rev-parse", "cycle-1^{commit}") == rev1
    assert read_at(ws, "data/val/annotations.json", "cycle-1") == b'{"v": 1}'
    # a re-run of a step that produced other data moves its tag to the new commit
    write_dataset(ws, '{"v": 3}')
    commit_data(ws, "cycle 1 redone", tag="cycle-1")
    assert git(ws, "rev-parse", "cycle-1^{commit}") == head_rev(ws) != rev1


def test_push_to_local_remote_and_pull_into_a_clone(tmp_path, ws):
    write_dataset(ws)
    commit_data(ws, "v1", tag="cycle-1")
    assert push(ws) > 0
    assert any((tmp_path / "remote").rglob("*"))
    assert push(ws) == 0  # nothing new
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ws.root), str(clone)], check=True)
    cloned = open_workspace(clone)
    pull(cloned)
    assert (clone / "data" / "val" / "annotations.json").read_text() == '{"images": []}'
    # with the local cache gone, reading an old rev falls back to the remote
    shutil.rmtree(ws.root / ".dvc" / "cache")
    assert read_at(ws, "data/pool/img_0002.jpg", "cycle-1") == b"\xff\xd8other"


def test_dataset_md5_is_content_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, order in ((a, ["x.json", "sub/y.jpg"]), (b, ["sub/y.jpg", "x.json"])):
        for name in order:  # creation order differs
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(name.encode())
    assert dataset_md5(a) == dataset_md5(b)
    assert dataset_md5(a) == dataset_md5(a)
    (b / "x.json").write_bytes(b"changed")
    assert dataset_md5(a) != dataset_md5(b)
    (b / "x.json").write_bytes(b"x.json")
    (b / "x.json").rename(b / "z.json")  # same bytes, other name
    assert dataset_md5(a) != dataset_md5(b)
    with pytest.raises(VersioningError, match="not a folder"):
        dataset_md5(tmp_path / "missing")


def test_errors_name_the_command(tmp_path, ws):
    shutil.rmtree(ws.data)
    with pytest.raises(VersioningError, match="nothing to version"):
        commit_data(ws, "no data")
    with pytest.raises(VersioningError, match="not a workspace"):
        open_workspace(tmp_path / "elsewhere")
    write_dataset(ws)
    commit_data(ws, "v1")
    with pytest.raises(VersioningError, match="no-such-rev"):
        read_at(ws, "data/val/annotations.json", "no-such-rev")
    with pytest.raises(VersioningError, match="does not exist at rev"):
        read_at(ws, "data/val/nope.json", "HEAD")
    with pytest.raises(VersioningError, match="git tag"):
        commit_data(ws, "v1", tag="bad tag name")


@pytest.mark.slow
def test_push_to_s3_remote(tmp_path, moto_s3):
    endpoint, s3, bucket = moto_s3
    ws = init_workspace(tmp_path / "ws", remote_url=f"s3://{bucket}/dvc", endpoint_url=endpoint)
    assert "endpointurl" in (ws.root / ".dvc" / "config").read_text()
    write_dataset(ws)
    commit_data(ws, "v1")
    assert push(ws) > 0
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dvc/")
    assert listed["KeyCount"] > 0
