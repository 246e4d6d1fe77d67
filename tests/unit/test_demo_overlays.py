"""`make demo OVERLAYS=...` and `make demo-local OVERLAYS=...` hand the overlay files to the demo,
and the Prefect demo flow loads them over the pipeline file in order (the run itself is the e2e
test's; here the stage sequence is replaced by one that records the config it was given)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["pipelines/overlays/bolts_oblique_scene.yaml",
            "pipelines/overlays/bolts_printed_clutter.yaml"]


def _dry_run(target: str) -> str:
    make = shutil.which("make")
    assert make, "make is not installed"
    out = subprocess.run([make, "-n", "--always-make", target, f"OVERLAYS={' '.join(OVERLAYS)}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_demo_passes_the_overlays_after_the_pipeline_file():
    lines = [line for line in _dry_run("demo").splitlines() if "flows/demo.py" in line]
    assert len(lines) == 1 and lines[0].split()[-3:] == ["pipelines/bolts.yaml", *OVERLAYS]
    local = [line for line in _dry_run("demo-local").splitlines() if "synthloop demo" in line]
    assert len(local) == 1
    assert local[0].split()[-4:] == ["--overlay", OVERLAYS[0], "--overlay", OVERLAYS[1]]


def test_the_demo_flow_loads_the_overlays_in_order(monkeypatch):
    sys.path.insert(0, str(ROOT / "flows"))
    try:
        import demo
    finally:
        sys.path.remove(str(ROOT / "flows"))
    seen = []
    monkeypatch.setattr(demo, "run_pipeline", lambda cfg, **kwargs: seen.append(cfg) or [])
    assert demo.demo_flow.fn(str(ROOT / "pipelines" / "bolts.yaml"),
                             overlays=[str(ROOT / o) for o in OVERLAYS]) == []
    (cfg,) = seen
    assert cfg.workspace.name == "bolts_printed"  # the last overlay's workspace wins
    assert cfg.pretrain.crop_scale == pytest.approx((1.2, 1.9))  # from the oblique scene
    assert cfg.pretrain.lr_decay == "cosine"  # from the printed clutter
    assert "printed" in cfg.synthetic.distractor_materials
