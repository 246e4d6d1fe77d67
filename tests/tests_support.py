"""Paths shared by tests (importable because pytest puts tests/ on sys.path via rootdir conftest)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "pipelines" / "demo.yaml"
