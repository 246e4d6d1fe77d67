"""Shared fixtures. Nothing here starts services; tests that need one start it themselves."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(scope="session")
def render_python() -> str:
    """The interpreter with bpy (.venv-render); skip the test where it is missing."""
    candidates = [os.environ.get("SYNTHLOOP_BLENDER_PYTHON"), str(ROOT / ".venv-render/bin/python")]
    for exe in filter(None, candidates):
        if Path(exe).exists() and subprocess.run([exe, "-c", "import bpy"],
                                                 capture_output=True).returncode == 0:
            return exe
    pytest.skip("no Blender environment: run `make setup` (creates .venv-render with bpy)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (public test data); skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (public test data lives beside the project)")
    return SHARED_DATA


@pytest.fixture()
def moto_s3(monkeypatch):
    """A real S3 endpoint on 127.0.0.1 (moto) with a fresh bucket: (endpoint, client, bucket).

    moto keeps one in-memory S3 per process, shared by all its servers, so each test gets a
    bucket of its own and other tests' objects never show up in its listings.
    """
    import uuid

    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint)
        bucket = f"synthloop-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        yield endpoint, client, bucket
    finally:
        server.stop()
