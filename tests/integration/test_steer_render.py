"""A steered top-up rendered for real (Cycles at toy size): the weights reach the renderer
(every image shows the plan drawn with them), the render config beside the images holds
them, and the top-up is committed with DVC under its tag."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from synthloop.config import DomainConfig, load_config
from synthloop.data.coco import CocoDataset
from synthloop.stages import steer
from synthloop.synthesis.plan import plan_scenes
from tests_support import DEMO_CONFIG

pytestmark = [pytest.mark.render, pytest.mark.slow]


def test_a_steered_top_up_renders_versions_and_feeds_the_fine_tune(tmp_path, render_python):
    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
        f"render.blender_python={render_python}", "render.workers=1", "synthetic.width=64",
        "synthetic.height=48", "synthetic.samples=1", "synthetic.min_visibility=0.0",
        "steer.enabled=true", "steer.topup_images=2", "versioning.push=false"])
    weights = {"camera_distance": [0.5, 0.5, 0.5, 2.5], "distractors": [3.0, 0.5, 0.25, 0.25]}
    domain = steer.topup_domain(cfg, 1, weights)
    ref = steer.render_topup(cfg, 1, domain, progress=False)
    assert ref.num_images == 2 and steer.topup_dataset(cfg, 1) == ref
    written = DomainConfig(**yaml.safe_load((steer.topup_dir(cfg, 1) / "render_config.yaml")
                                            .read_text()))
    assert written == domain and written.sampling_weights == weights
    plans = plan_scenes(domain, cfg.parts)
    for im in CocoDataset.load(ref.annotations).images:
        plan = plans[im.meta["index"]]
        assert im.meta["camera_plan"] == plan["camera"]
        assert len(im.meta["distractors"]) == len(plan["distractors"])
    tags = subprocess.run(["git", "-C", str(tmp_path / "ws"), "tag"], capture_output=True,
                          text=True, check=True).stdout.split()
    assert "topup-cycle-1" in tags
