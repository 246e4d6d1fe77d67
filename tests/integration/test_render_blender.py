"""Real Cycles renders at toy size: COCO validity, boxes equal to the instance maps, resume."""

import subprocess

import numpy as np
import pytest
from PIL import Image

from synthloop.config import DomainConfig, IntRange, PartSpec, RenderConfig
from synthloop.data.coco import CocoDataset
from synthloop.synthesis.composite import mask_box_xywh
from synthloop.synthesis.render import RenderError, find_blender_python, render_domain

pytestmark = pytest.mark.render

PARTS = [PartSpec(name="blade", procedural="turbine_blade")]
DOMAIN = DomainConfig(num_images=3, seed=11, width=64, height=48, samples=1,
                      distractors=IntRange(min=1, max=3), parts_per_image=IntRange(min=1, max=2),
                      min_visibility=0.0)


@pytest.fixture(scope="module")
def render_cfg():
    try:
        python = find_blender_python(RenderConfig())
    except RenderError as exc:
        pytest.skip(f"render venv missing: {exc}")
    if subprocess.run([python, "-c", "import bpy"], capture_output=True).returncode != 0:
        pytest.skip(f"{python} cannot import bpy (run `make setup`)")
    return RenderConfig(blender_python=python, workers=2, shard_size=2)


def _boxes_from_maps(out):
    boxes = {}
    for i in range(DOMAIN.num_images):
        ids = np.load(out / "raw" / f"{i:06d}.ids.npz")["ids"]
        for pid in np.unique(ids):
            if 0 < pid < 1000:  # parts; distractors are 1001..
                boxes[(i + 1, int(pid))] = mask_box_xywh(ids == pid)
    return boxes


def test_render_coco_boxes_and_resume(tmp_path, render_cfg):
    out = tmp_path / "synthetic"
    ds = render_domain(DOMAIN, PARTS, ["blade"], out, render_cfg=render_cfg, progress=False)
    loaded = CocoDataset.load(out / "annotations.json")
    assert len(loaded.images) == 3 and loaded.class_names == ["blade"]
    for im in loaded.images:
        with Image.open(loaded.image_path(im)) as img:
            assert img.size == (64, 48) and img.format == "JPEG"
        assert {"camera", "seed", "background", "hdri"} <= set(im.meta)
    ann_boxes = {(a.image_id, a.meta["instance"]): a.bbox for a in loaded.annotations}
    assert ann_boxes == _boxes_from_maps(out)  # tight visible boxes, distractors excluded
    assert all(0 < a.meta["visibility"] <= 1 and a.category_id == 1 for a in loaded.annotations)
    assert len(ds.annotations) == len(loaded.annotations) > 0

    # resume: drop one finished image; only that one renders again
    markers = {p.name: p.stat().st_mtime_ns for p in (out / "raw").glob("00000?.json")}
    for suffix in (".json", ".png", ".ids.npz"):
        (out / "raw" / f"000001{suffix}").unlink()
    (out / "images" / "000001.jpg").unlink()
    again = render_domain(DOMAIN, PARTS, ["blade"], out, render_cfg=render_cfg, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "raw").glob("00000?.json")}
    assert [n for n in after if after[n] != markers[n]] == ["000001.json"]
    assert (out / "images" / "000001.jpg").is_file()
    assert [a.bbox for a in again.annotations] == [a.bbox for a in loaded.annotations]

    # nothing missing: no worker starts at all
    assert render_domain(DOMAIN, PARTS, ["blade"], out, render_cfg=RenderConfig(
        blender_python="/not/needed"), progress=False).to_dict() == again.to_dict()
