"""Outages on loopback: S3 (moto) down during push and pull, a full disk during rendering and
checkpointing. Each ends in one clear error; local state stays intact and a rerun recovers."""

from __future__ import annotations

import errno
import subprocess
import uuid
from pathlib import Path

import pytest

from synthloop.config import load_config
from synthloop.stages.workspace import PARTIAL_FILE
from synthloop.versioning.dvc_repo import VersioningError, head_rev, open_workspace, pull
from synthloop.versioning.remote import commit_and_push
from tests_support import DEMO_CONFIG, start_moto

pytestmark = pytest.mark.slow


@pytest.fixture()
def s3(monkeypatch):
    """A moto S3 server on 127.0.0.1 that the test can stop and restart on the same port:
    (server, endpoint, port, bucket). moto keeps its buckets per process, so they survive."""
    import boto3

    server, endpoint = start_moto(monkeypatch)
    port = server.get_host_and_port()[1]
    bucket = f"outage-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    state = {"server": server}
    yield state, endpoint, port, bucket
    try:
        state["server"].stop()
    except Exception:  # already stopped by the test
        pass


def restart(state: dict, port: int) -> None:
    from moto.server import ThreadedMotoServer

    state["server"] = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    state["server"].start()


@pytest.fixture()
def fast_botocore(monkeypatch):
    """botocore's own retries (about 6 s a try on a refused port) would hide ours."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")


def s3_cfg(tmp_path: Path, endpoint: str, bucket: str):
    return load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", f"versioning.remote_url=s3://{bucket}/outage",
        f"versioning.s3_endpoint_url={endpoint}"])


def write_labels(ws: Path, n: int) -> None:
    folder = ws / "data" / "labeled"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "annotations.json").write_text(f'{{"labels": {n}}}')
    (folder / f"img{n}.jpg").write_bytes(b"\xff\xd8" + bytes(range(256)) * 4)


def test_s3_down_during_push_retries_then_fails_clearly_and_keeps_local_state(
        tmp_path, s3, fast_botocore, report):
    state, endpoint, port, bucket = s3
    cfg = s3_cfg(tmp_path, endpoint, bucket)
    write_labels(cfg.workspace, 1)
    commit_and_push(cfg, "cycle 1", tag="cycle-1")
    write_labels(cfg.workspace, 2)
    state["server"].stop()
    with pytest.raises(VersioningError) as err:
        commit_and_push(cfg, "cycle 2", tag="cycle-2")
    message = str(err.value)
    assert "\n" not in message
    assert "failed after 3 attempts" in message and f"s3://{bucket}/outage" in message
    ws = open_workspace(cfg.workspace)
    log = subprocess.run(["git", "-C", str(cfg.workspace), "log", "--oneline"],
                         capture_output=True, text=True, check=True).stdout
    assert "cycle 2" in log  # the local commit stands
    assert (cfg.workspace / "data" / "labeled" / "annotations.json").read_text() == '{"labels": 2}'
    assert not [p for p in cfg.workspace.rglob("*") if PARTIAL_FILE.search(p.name)]

    restart(state, port)  # S3 is back, with the same buckets
    commit_and_push(cfg, "cycle 2", tag="cycle-2")  # the rerun pushes what was committed
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(cfg.workspace), str(clone)], check=True)
    pull(open_workspace(clone))
    assert (clone / "data" / "labeled" / "annotations.json").read_text() == '{"labels": 2}'
    assert head_rev(open_workspace(clone)) == head_rev(ws)
    report("S3 (moto) stopped before a DVC push",
           f"3 attempts with backoff 1 s, 2 s, then one-line VersioningError naming the remote; "
           "local commit, tag, cache and data/ intact",
           "yes: after S3 came back the rerun pushed, a fresh clone pulled the same data")


def test_s3_down_during_pull_fails_clearly_and_leaves_the_clone_consistent(
        tmp_path, s3, fast_botocore, report):
    state, endpoint, port, bucket = s3
    cfg = s3_cfg(tmp_path, endpoint, bucket)
    write_labels(cfg.workspace, 3)
    commit_and_push(cfg, "cycle 1", tag="cycle-1")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(cfg.workspace), str(clone)], check=True)
    state["server"].stop()
    with pytest.raises(VersioningError) as err:
        pull(open_workspace(clone))
    assert "\n" not in str(err.value) and "dvc pull" in str(err.value)
    labels = clone / "data" / "labeled" / "annotations.json"
    assert not labels.exists()  # nothing half-fetched under a final name
    assert not [p for p in clone.rglob("*") if PARTIAL_FILE.search(p.name)]
    restart(state, port)
    pull(open_workspace(clone))
    assert labels.read_text() == '{"labels": 3}'
    report("S3 (moto) stopped before a DVC pull into a fresh clone",
           "3 attempts with backoff, then one-line VersioningError; no file under a final name",
           "yes: the pull after S3 came back checked out the data")


# ------------------------------------------------------------------------------ full disk
@pytest.fixture()
def tiny_disk(tmp_path):
    """A mount point backed by a small tmpfs; skipped where mounting is not allowed."""
    mounts: list[Path] = []

    def make(size: str) -> Path:
        mnt = tmp_path / f"disk{len(mounts)}"
        mnt.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {proc.stderr.strip()}")
        mounts.append(mnt)
        return mnt

    yield make
    for mnt in mounts:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tiny_disk, report):
    import torch
    from torch import nn

    from synthloop.config import DetectorConfig
    from synthloop.detection.checkpoint import read_checkpoint, save_checkpoint

    disk = tiny_disk("64k")
    path = disk / "checkpoints" / "last.pt"
    small, big = nn.Linear(4, 2), nn.Linear(256, 256)  # 256x256 float32: 256 KiB > 64 KiB
    save_checkpoint(small, path, cfg=DetectorConfig(), num_classes=1)
    with pytest.raises(OSError) as err:
        save_checkpoint(big, path, cfg=DetectorConfig(), num_classes=1)
    assert err.value.errno == errno.ENOSPC
    assert "no space left" in str(err.value) and str(path) in str(err.value)
    ckpt = read_checkpoint(path)  # the old one, whole
    assert torch.equal(ckpt["model"]["weight"], small.weight.detach())
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    report("full disk (64 KiB tmpfs) while writing a training checkpoint",
           "OSError ENOSPC naming the checkpoint file; temp file removed",
           "n/a: the previous checkpoint is intact and loads with weights_only=True")


def test_full_disk_while_rendering_fails_clearly_without_corrupt_files(tiny_disk, render_python,
                                                                     tmp_path, report):
    from PIL import Image

    from synthloop.synthesis.render import RenderError, render_domain

    cfg = load_config(DEMO_CONFIG)
    domain = cfg.synthetic.model_copy(update={"num_images": 12, "width": 96, "height": 72,
                                              "samples": 1})
    out = tiny_disk("160k") / "synthetic"
    render_cfg = cfg.render.model_copy(update={"shard_size": 12, "blender_python": render_python})
    with pytest.raises((OSError, RenderError)) as err:
        render_domain(domain, cfg.parts, cfg.class_names, out, render_cfg=render_cfg,
                      progress=False)
    first = str(err.value).splitlines()[0]
    assert "space" in str(err.value).lower() or "No space" in str(err.value), str(err.value)[-800:]
    for p in out.rglob("*"):  # what is there is whole: a rerun may trust every final name
        if PARTIAL_FILE.search(p.name):
            continue  # swept by the next pipeline run (see test_kill_matrix)
        if p.suffix in (".png", ".jpg") and p.stat().st_size:
            with Image.open(p) as im:
                im.load()
    assert not (out / "annotations.json").exists()
    report("full disk (160 KiB tmpfs) while rendering",
           f"render stopped with: {first}",
           "n/a: every image under its final name decodes; no annotations.json written, so the "
           "rerun renders the rest")
