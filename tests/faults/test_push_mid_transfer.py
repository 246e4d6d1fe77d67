"""SIGKILL during a DVC push to S3 with half of a large file on the wire; the rerun pushes it.

The ``dvc.push`` fault point kills before the transfer. Here the kill comes in the middle of
it: DVC's push takes no progress callback from its caller, so the S3 server (moto on loopback,
in this process) is the one that sees the bytes arrive. When half of the large file's body has
been received, it SIGKILLs the pushing process group, as the OOM killer or a power cut would.
Then: no object on the remote is partial, the local commit and data are intact, the rerun makes
no new commit and uploads the rest, and a fresh clone pulls the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from fault_support import ROOT
from synthloop.config import load_config
from synthloop.versioning.dvc_repo import dataset_md5, head_rev, open_workspace, pull
from synthloop.versioning.remote import commit_and_push
from tests_support import DEMO_CONFIG

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BIG = 12 << 20  # one PUT to S3 (s3fs goes multipart from 100 MiB): 12 MiB, cut at 6 MiB
PUSH = ("import sys; from synthloop.config import load_config; "
        "from synthloop.versioning.remote import commit_and_push; "
        "cfg = load_config(sys.argv[1], overrides=sys.argv[2:]); "
        "print(commit_and_push(cfg, 'labels: cycle 1', tag='cycle-1'))")


class CuttingS3:
    """moto's S3 on 127.0.0.1 that SIGKILLs ``victim`` (a process group) once half of the body
    of an upload of at least ``min_size`` bytes has arrived; the cut request gets a 500."""

    def __init__(self, *, min_size: int) -> None:
        from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                                   create_backend_app)
        from werkzeug.serving import make_server

        self.moto = DomainDispatcherApplication(create_backend_app)
        self.min_size, self.victim = min_size, None
        self.cuts: list[tuple[str, int, int]] = []  # (path, bytes received, body size)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True,
                                  request_handler=MotoRequestHandler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def app(self, environ, start_response):
        size = int(environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH")
                   or environ.get("CONTENT_LENGTH") or 0)
        victim = self.victim
        if victim is None or environ["REQUEST_METHOD"] != "PUT" or size < self.min_size:
            return self.moto(environ, start_response)
        self.victim = None
        got = len(environ["wsgi.input"].read(size // 2))  # blocks until half has arrived
        os.killpg(victim, signal.SIGKILL)
        self.cuts.append((environ["PATH_INFO"], got, size))
        start_response("500 Internal Server Error", [("Content-Length", "0")])
        return [b""]

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()


@pytest.fixture()
def s3(monkeypatch):
    boto3 = pytest.importorskip("boto3")
    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    server = CuttingS3(min_size=BIG // 2)
    bucket = f"midpush-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=server.endpoint)
    client.create_bucket(Bucket=bucket)
    yield server, client, bucket
    server.stop()


def remote_objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def partial_objects(objects: dict[str, bytes]) -> list[str]:
    """Keys whose bytes do not hash to the md5 the key names (``files/md5/ab/cdef...[.dir]``)."""
    return [k for k, body in objects.items()
            if "".join(k.removesuffix(".dir").split("/")[-2:]) != hashlib.md5(body).hexdigest()]


def test_kill_mid_transfer_then_the_rerun_pushes_everything(tmp_path, s3, report):
    server, client, bucket = s3
    overrides = [f"workspace={tmp_path / 'ws'}", f"versioning.remote_url=s3://{bucket}/mid",
                 f"versioning.s3_endpoint_url={server.endpoint}"]
    cfg = load_config(DEMO_CONFIG, overrides=overrides)
    labeled = cfg.workspace / "data" / "labeled"
    labeled.mkdir(parents=True)
    big = random.Random(13).randbytes(BIG)
    (labeled / "features.bin").write_bytes(big)
    for i in range(3):
        (labeled / f"img{i}.jpg").write_bytes(b"\xff\xd8" + bytes([i]) * 4096)
    (labeled / "annotations.json").write_text('{"labels": 3}')
    data_md5 = dataset_md5(cfg.workspace / "data")

    proc = subprocess.Popen([sys.executable, "-c", PUSH, str(DEMO_CONFIG), *overrides],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    server.victim = proc.pid  # its own process group
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -9, (proc.returncode, err[-3000:])
    assert len(server.cuts) == 1, server.cuts
    path, got, size = server.cuts[0]
    big_md5 = hashlib.md5(big).hexdigest()
    assert path.endswith(f"/files/md5/{big_md5[:2]}/{big_md5[2:]}") and 0 < got < size

    # After the kill: nothing partial on the remote, the commit and the data stand.
    objects = remote_objects(client, bucket, "mid/files/md5/")
    assert not partial_objects(objects)
    assert not any(k.endswith(big_md5[2:]) for k in objects)
    ws = open_workspace(cfg.workspace)
    head = head_rev(ws)
    log = subprocess.run(["git", "-C", str(cfg.workspace), "log", "--format=%s"],
                         capture_output=True, text=True, check=True).stdout
    assert "labels: cycle 1" in log
    assert dataset_md5(cfg.workspace / "data") == data_md5

    commit_and_push(cfg, "labels: cycle 1", tag="cycle-1")  # the rerun
    assert head_rev(ws) == head  # same data: no new commit
    objects = remote_objects(client, bucket, "mid/files/md5/")
    assert any(k.endswith(big_md5[2:]) for k in objects) and not partial_objects(objects)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(cfg.workspace), str(clone)], check=True)
    pull(open_workspace(clone))
    assert dataset_md5(clone / "data") == data_md5
    assert (clone / "data" / "labeled" / "features.bin").read_bytes() == big
    report("SIGKILL during a DVC push to S3 (moto), mid-transfer: the server cut the process "
           f"group after {got >> 20} MiB of a {size >> 20} MiB object had arrived",
           f"no object on the remote is partial ({len(objects)} objects after the rerun, each "
           "equal to its md5); the local commit, tag and data/ stayed",
           "yes: the rerun made no new commit and uploaded the rest; a fresh clone pulled the "
           "same bytes")
