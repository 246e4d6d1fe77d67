"""Shared fixtures, and the rule that CI cannot skip its way to green.

Nothing here starts services; tests that need one start it themselves.

Under CI (``CI`` set to true/1, as CI services do, or ``SYNTHLOOP_STRICT=1``, which .ci/run
sets) every skip is a failure that names the skip's reason: `make test` installs Blender (bpy),
the mmdet extra and Label Studio, so a test that skips there means a broken environment, not an
optional one. A skip that is intended everywhere carries ``@pytest.mark.allow_skip(reason=...)``.
Tests marked ``gpu`` are deselected (not skipped) where no CUDA device is present.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"  # data that ships with the repository (each folder has SOURCE.md)
TRUE = ("1", "true", "yes", "on")

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


# ------------------------------------------------------------------------ strict skips under CI
def strict_skips() -> str | None:
    """The variable that makes skips fail (``"CI=true"``), or None when skips are allowed."""
    for name in ("SYNTHLOOP_STRICT", "CI"):
        value = os.environ.get(name, "")
        if value.strip().lower() in TRUE:
            return f"{name}={value}"
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_skip(reason): this test may skip even under CI; say why (the only "
                   "way past the strict-skip rule of tests/conftest.py)")


def pytest_report_header(config):
    why = strict_skips()
    return f"skips: {'fail (' + why + ')' if why else 'allowed (not CI)'}"


def _skip_reason(rep) -> str:
    if isinstance(rep.longrepr, tuple):  # (path, line, "Skipped: reason")
        return str(rep.longrepr[2]).removeprefix("Skipped: ")
    return str(rep.longrepr)


def _fail_skip(rep, what: str, why: str) -> None:
    rep.outcome = "failed"
    rep.longrepr = (f"{what} skipped under CI ({why}), and a skip there is a failure:\n"
                    f"    {_skip_reason(rep)}\n"
                    "Fix the environment (`make test` installs what the tests need), or mark an "
                    "intended skip with @pytest.mark.allow_skip(reason=...).")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    why = strict_skips()
    if why and rep.skipped and not hasattr(rep, "wasxfail"):
        allowed = item.get_closest_marker("allow_skip")
        if allowed is None or not (allowed.kwargs.get("reason") or allowed.args):
            _fail_skip(rep, item.nodeid, why)
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    rep = yield
    why = strict_skips()
    if why and rep.skipped:  # a module-level importorskip: the whole file would vanish
        _fail_skip(rep, collector.nodeid or str(collector.path), why)
    return rep


def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not _cuda_available():  # not a skip: nothing was meant to run here
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def render_python() -> str:
    """The interpreter with bpy (.venv-render); skip the test where it is missing (under CI,
    a failure: see the module docstring)."""
    candidates = [os.environ.get("SYNTHLOOP_BLENDER_PYTHON"), str(ROOT / ".venv-render/bin/python")]
    for exe in filter(None, candidates):
        if Path(exe).exists() and subprocess.run([exe, "-c", "import bpy"],
                                                 capture_output=True).returncode == 0:
            return exe
    pytest.skip("no Blender environment: run `make setup` (creates .venv-render with bpy)")


@pytest.fixture(scope="session")
def bolts_real() -> Path:
    """datasets/bolts_real: the real bolt photos in the repository; fails if absent (no skip)."""
    if not (DATASETS / "bolts_real" / "classes.txt").is_file():
        pytest.fail(f"{DATASETS / 'bolts_real'} is missing: it ships with the repository")
    return DATASETS / "bolts_real"


@pytest.fixture()
def moto_s3(monkeypatch):
    """A real S3 endpoint on 127.0.0.1 (moto) with a fresh bucket: (endpoint, client, bucket).

    moto keeps one in-memory S3 per process, shared by all its servers, so each test gets a
    bucket of its own and other tests' objects never show up in its listings.
    """
    import uuid

    import boto3

    from tests_support import start_moto

    server, endpoint = start_moto(monkeypatch)
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        bucket = f"synthloop-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        yield endpoint, client, bucket
    finally:
        server.stop()
