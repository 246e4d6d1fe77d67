"""The shard API without Blender: finishing rendered images, filters, merging into COCO.

Worker outputs are faked (RGBA png, instance map, done-marker), so this runs in milliseconds.
"""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from synthloop.config import DomainConfig, IntRange, PartSpec
from synthloop.data.coco import CocoDataset
from synthloop.synthesis.blender.worker import rejected_before_render
from synthloop.synthesis.composite import mask_box_xywh
from synthloop.synthesis.plan import plan_scenes
from synthloop.synthesis.shards import (RenderError, ShardJob, ShardResult, merge_shards,
                                        render_shard)

W, H = 40, 32
FINISH = {"min_visibility": 0.3, "max_truncation": 1.0, "box_mode": "visible",
          "drop_empty_images": False}


def _job(tmp_path, n=3, finish=FINISH, python=None):
    domain = DomainConfig(num_images=n, width=W, height=H, parts_per_image=IntRange(min=2, max=2))
    plans = plan_scenes(domain, [PartSpec(name="blade", procedural="turbine_blade")])
    items = [{"stem": f"{p['index']:06d}", "key": f"k{p['index']}", "plan": p} for p in plans]
    return ShardJob("shard_000000", str(tmp_path), {"width": W, "height": H}, [], {}, items,
                    finish, python)


def _fake_worker_output(tmp_path, item, boxes, unoccluded=None, rejected=None):
    """Parts as filled rectangles (x1, y1, x2, y2) with pass index 1, 2, ..."""
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    ids = np.zeros((H, W), np.uint16)
    rgba = np.zeros((H, W, 4), np.uint8)
    parts = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        ids[y1:y2, x1:x2] = i + 1
        rgba[y1:y2, x1:x2] = (200, 200, 200, 255)
        full = (unoccluded or {}).get(i, (x2 - x1) * (y2 - y1))
        parts.append({"pass_index": i + 1, "class_index": 0, "matrix_world": [[1.0]],
                      "unoccluded_pixels": full, "unoccluded_pixels_in_image": full,
                      "projected_bbox_xyxy": [x1 - 1.0, y1 - 1.0, x2 + 1.0, y2 + 1.0],
                      "corners_bbox_xyxy": [x1 - 2.0, y1 - 2.0, x2 + 2.0, y2 + 2.0]})
    ids[0:3, 0:3] = 1001  # a distractor
    Image.fromarray(rgba).save(raw / f"{item['stem']}.png")
    np.savez_compressed(raw / f"{item['stem']}.ids.npz", ids=ids)
    marker = {"key": item["key"], "camera": {"K": []}, "hdri": "x.exr", "parts": parts,
              "distractors": [], "rejected": rejected, "peak_rss_mb": 10.0}
    (raw / f"{item['stem']}.json").write_text(json.dumps(marker))


def test_done_shard_needs_no_blender_and_boxes_match_masks(tmp_path):
    job = _job(tmp_path)
    layouts = [[(2, 3, 12, 9), (20, 10, 35, 28)], [(5, 5, 6, 6), (0, 0, 40, 32)], [(1, 1, 9, 9)]]
    for item, boxes in zip(job.items, layouts):
        _fake_worker_output(tmp_path, item, boxes)
    seen = []
    result = render_shard(job, on_image=seen.append)
    assert result.rendered == 0 and len(seen) == 3
    ds = merge_shards([result], class_names=["blade"], out_dir=tmp_path)
    loaded = CocoDataset.load(tmp_path / "annotations.json")
    assert loaded.to_dict() == ds.to_dict() and [im.id for im in ds.images] == [1, 2, 3]
    assert len(ds.annotations) == 4  # a part hidden by another and the distractor: not annotated
    for ann in ds.annotations:
        mask = mask_utils.decode(ann.segmentation).astype(bool)
        assert list(mask_box_xywh(mask)) == list(ann.bbox) and ann.area == mask.sum()
        with Image.open(loaded.image_path(loaded.images[ann.image_id - 1])) as img:
            assert img.size == (W, H) and img.format == "JPEG"
    # a second call reuses the cached records
    assert render_shard(job).images == result.images


def test_filters_box_modes_and_rejected_images(tmp_path):
    finish = {**FINISH, "max_truncation": 0.2, "drop_empty_images": True, "box_mode": "corners"}
    job = _job(tmp_path, finish=finish)
    _fake_worker_output(tmp_path, job.items[0], [(2, 3, 12, 9)])
    _fake_worker_output(tmp_path, job.items[1], [(2, 3, 12, 9)], unoccluded={0: 400})  # occluded
    _fake_worker_output(tmp_path, job.items[2], [], rejected="not in view")
    result = render_shard(job)
    assert [r["rejected"] is None for r in result.images] == [True, False, False]
    assert result.images[0]["instances"][0]["bbox"] == [0.0, 1.0, 14.0, 10.0]  # clipped corners
    ds = merge_shards([result], class_names=["blade"], out_dir=tmp_path)
    assert [im.id for im in ds.images] == [1]
    assert not (tmp_path / "images" / "000002.jpg").exists()


def test_merge_orders_shards_and_cuts_to_num_images(tmp_path):
    def rec(i, rejected=None):
        return {"index": i, "file_name": f"{i:06d}.jpg", "width": W, "height": H,
                "instances": [], "meta": {"index": i}, "rejected": rejected}
    results = [ShardResult("b", [rec(4), rec(3, "x"), rec(5)]), ShardResult("a", [rec(0), rec(2)])]
    ds = merge_shards(results, class_names=["p"], out_dir=tmp_path, num_images=3)
    assert [im.id for im in ds.images] == [1, 3, 5]


def test_worker_failure_and_missing_interpreter(tmp_path):
    job = _job(tmp_path, n=1)
    with pytest.raises(RenderError, match="no blender_python"):
        render_shard(job)
    failing = _job(tmp_path, n=1, python="/bin/false")
    with pytest.raises(RenderError, match=r"failed \(exit 1, 0/1 images\); log"):
        render_shard(failing)


def test_rejected_before_render():
    part = {"unoccluded_pixels": 100, "unoccluded_pixels_in_image": 60}
    finish = {"drop_empty_images": True, "max_truncation": 0.3}
    assert rejected_before_render({"parts": [part]}, finish)
    assert rejected_before_render({"parts": [part, {**part, "unoccluded_pixels_in_image": 90}]},
                                  finish) is None
    assert rejected_before_render({"parts": [part]}, {**finish, "drop_empty_images": False}) is None
    assert rejected_before_render({"parts": []}, finish)
