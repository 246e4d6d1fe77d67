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
