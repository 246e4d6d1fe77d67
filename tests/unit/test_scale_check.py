"""Units and scale that cannot go silently wrong: sizes checked against the camera before a
render, classes without boxes after it (with the reasons), render vs photo box sizes."""

import numpy as np
import pytest

from synthloop.config import DomainConfig, PartSpec
from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
from synthloop.synthesis.composite import part_instances
from synthloop.synthesis.meshes import _box, prepare_part_meshes, write_stl
from synthloop.synthesis.scale_check import (ScaleError, check_class_boxes, check_scale,
                                             compare_box_sizes, format_sizes, part_sizes)

DOMAIN = DomainConfig(num_images=1, width=320, height=240)  # camera 0.35-0.6 m, 35-50 mm


def _block(tmp_path, name, dims, unit="auto"):
    path = write_stl(tmp_path / f"{name}.stl", *_box((0, 0, 0), dims))
    return PartSpec(name=name, mesh=path, unit=unit)


def _sizes(tmp_path, *parts):
    return part_sizes(prepare_part_meshes(list(parts), tmp_path / "m"))


def test_inch_numbers_read_as_metres_fail_before_rendering_with_the_fix(tmp_path):
    # the case: a part drawn in inches, diagonal under 10 units, `unit: auto` -> metres
    sizes = _sizes(tmp_path, _block(tmp_path, "bracket", (2.0, 1.0, 0.5)))
    assert sizes[0]["unit_used"].startswith("m (auto")
    with pytest.raises(ScaleError) as err:
        check_scale(sizes, DOMAIN)
    msg = str(err.value)
    assert "part 'bracket'" in msg and "cannot fit" in msg
    assert "inch: 0.0508 m" in msg and "mm: 0.002 m" in msg and "m: 2 m" in msg
    assert "Fix: set `unit: cm|inch` on part 'bracket'" in msg
    check_scale(_sizes(tmp_path, _block(tmp_path, "bracket", (2.0, 1.0, 0.5), "inch")), DOMAIN)


def test_a_part_under_a_few_pixels_is_an_error(tmp_path):
    sizes = _sizes(tmp_path, _block(tmp_path, "pin", (2.0, 1.0, 0.5), "mm"))
    with pytest.raises(ScaleError, match=r"part 'pin'.*px across at the nearest camera.*"
                                         r"under 4 px.*unit: cm\|inch"):
        check_scale(sizes, DOMAIN)


def test_sizes_are_printed_in_metres(tmp_path):
    sizes = _sizes(tmp_path, _block(tmp_path, "plate", (120.0, 80.0, 5.0)))
    text = format_sizes(sizes)
    assert "plate: 0.12 x 0.08 x 0.005 m (unit mm (auto: 144 units across)" in text
    check_scale(sizes, DOMAIN)


def _record(parts):
    return {"parts": [{"pass_index": i + 1, "class_index": c, "unoccluded_pixels": full,
                       "unoccluded_pixels_in_image": inside, "on_table": True,
                       "corners_bbox_xyxy": corners, "projected_bbox_xyxy": None}
                      for i, (c, full, inside, corners) in enumerate(parts)]}


def test_part_instances_say_why_a_part_got_no_box():
    ids = np.zeros((20, 20), np.uint16)
    ids[0:4, 0:4] = 1  # part 1: 16 visible of 16 -> kept
    ids[10:11, 10:12] = 3  # part 3: 2 visible of 40 in-image -> occluded
    ids[0:2, 18:20] = 5  # part 5: 4 visible, 4 of 40 in the image -> truncated
    record = _record([(0, 16, 16, [0, 0, 4, 4]),
                      (0, 0, 0, [5.0, 5.0, 5.4, 5.4]),  # below a pixel inside the image
                      (1, 40, 40, [8, 8, 16, 16]),
                      (1, 30, 0, [30, 30, 40, 40]),  # wholly outside
                      (1, 40, 4, [17, -10, 30, 2])])
    dropped = []
    kept = part_instances(ids, record, min_visibility=0.3, max_truncation=0.5, dropped=dropped)
    assert [k["pass_index"] for k in kept] == [1]
    assert [d["reason"] for d in dropped] == ["too small", "occluded", "off-frame", "truncated"]


def _finished(class_of_parts, kept, dropped):
    return {"rejected": None, "meta": {"parts": [{"class_index": c} for c in class_of_parts]},
            "instances": [{"class_index": c} for c in kept],
            "dropped": [{"class_index": c, "reason": r} for c, r in dropped]}


def test_a_class_without_boxes_is_an_error_with_the_reasons():
    ok = [_finished([0, 1], [0, 1], []) for _ in range(10)]
    assert check_class_boxes(ok, ["bolt", "plate"])["plate"]["boxes"] == 10
    lost = [_finished([0, 1], [0], [(1, "off-frame")]) for _ in range(9)]
    lost.append(_finished([0, 1], [0], [(1, "too small")]))
    with pytest.raises(ScaleError, match=r"class 'plate': 0 boxes for 10 placed instances.*"
                                         r"dropped: off-frame 9, too small 1"):
        check_class_boxes(lost, ["bolt", "plate"])
    few = [_finished([0, 1], [0, 1] if i == 0 else [0], [] if i == 0 else [(1, "occluded")])
           for i in range(10)]
    with pytest.raises(ScaleError, match=r"class 'plate': 1 boxes .*occluded 9"):
        check_class_boxes(few, ["bolt", "plate"])
    # a tiny render (previews) with an unlucky class is not an error
    check_class_boxes(lost[:3], ["bolt", "plate"])


def _boxes(side):
    images = [CocoImage(1, "a.jpg", 400, 300)]
    anns = [CocoAnnotation(1, 1, 1, (10.0, 10.0, side, side), side * side)]
    return CocoDataset(images, anns, categories_for(["bolt"]), None)


def test_render_and_photo_box_sizes_are_compared_per_class():
    assert compare_box_sizes(_boxes(30.0), _boxes(20.0), factor=2.0) == []
    warned = compare_box_sizes(_boxes(30.0), _boxes(20.0), factor=1.4)
    assert len(warned) == 1 and "class 'bolt': rendered boxes are 1.50x the photos'" in warned[0]
    assert compare_box_sizes(_boxes(10.0), _boxes(20.0), factor=1.4)[0].count("0.50x") == 1
    # pretraining scales the renders' patches: small renders shown 2x match the photos
    assert compare_box_sizes(_boxes(10.0), _boxes(20.0), factor=1.4, train_scale=2.0) == []
    warned = compare_box_sizes(_boxes(30.0), _boxes(20.0), factor=1.4, train_scale=2.0)
    assert "as pretraining sees them (crop_scale median x2.00) are 3.00x" in warned[0]
    assert "pretrain.crop_scale" in warned[0]


def test_render_planning_logs_sizes_and_stops_a_misread_unit_before_blender(tmp_path, caplog):
    import logging

    from synthloop.synthesis.render import plan_shards

    wrong = _block(tmp_path, "bracket", (2.0, 1.0, 0.5))
    with pytest.raises(ScaleError, match="part 'bracket'.*cannot fit"):
        plan_shards(DOMAIN, [wrong], tmp_path / "out")
    assert not (tmp_path / "out" / "raw").exists()  # nothing rendered, no job written
    right = _block(tmp_path, "bracket", (2.0, 1.0, 0.5), "inch")
    logger = logging.getLogger("synthloop.synthesis.render")  # CLI tests may stop propagation
    logger.addHandler(caplog.handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        jobs = plan_shards(DOMAIN, [right], tmp_path / "out")
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
    assert jobs and "bracket: 0.0508 x 0.0254 x 0.0127 m (unit inch" in caplog.text


def test_render_domain_refuses_a_class_left_without_boxes(tmp_path):
    """Worker outputs written by the test (a part below one pixel in every image), so that
    render_domain only composites: the class check runs where a real render ends."""
    import json as json_

    from PIL import Image

    from synthloop.synthesis.render import plan_shards, render_domain

    domain = DomainConfig(num_images=8, width=64, height=48, samples=1,
                          backgrounds="procedural:workshop")
    parts = [_block(tmp_path, "plate", (120.0, 80.0, 5.0))]
    out = tmp_path / "out"
    raw = out / "raw"
    raw.mkdir(parents=True)
    for job in plan_shards(domain, parts, out):
        for item in job.items:
            Image.new("RGBA", (64, 48)).save(raw / f"{item['stem']}.png")
            np.savez_compressed(raw / f"{item['stem']}.ids.npz", ids=np.zeros((48, 64), np.uint16))
            part = {"pass_index": 1, "class_index": 0, "variant": 0, "on_table": True,
                    "matrix_world": np.eye(4).tolist(), "unoccluded_pixels": 0,
                    "unoccluded_pixels_in_image": 0, "projected_bbox_xyxy": None,
                    "corners_bbox_xyxy": [30.0, 20.0, 30.5, 20.5]}
            (raw / f"{item['stem']}.json").write_text(json_.dumps(
                {"key": item["key"], "camera": {}, "hdri": "x.exr", "parts": [part],
                 "distractors": [], "rejected": None}))
    with pytest.raises(ScaleError, match=r"class 'plate': 0 boxes for 8 placed instances.*"
                                         r"dropped: too small 8"):
        render_domain(domain, parts, ["plate"], out, progress=False)
    assert not (out / "annotations.json").exists()  # a rerun after the fix is not skipped


def test_render_stage_warns_when_renders_and_photos_differ_in_box_size(tmp_path):
    from synthloop.config import load_config
    from synthloop.stages.render import warn_box_sizes
    from synthloop.stages.workspace import Workspace

    path = tmp_path / "p.yaml"
    path.write_text(f"name: t\nworkspace: {tmp_path / 'ws'}\nparts: [{{name: bolt, mesh: b.stl}}]\n"
                    "synthetic: {num_images: 1}\npool: {num_images: 1}\n"
                    "val: {format: coco, path: photos, box_size_factor: 1.4}\n")
    cfg = load_config(path)
    ws = Workspace.of(cfg)
    assert warn_box_sizes(cfg) == []  # nothing rendered yet
    _boxes(30.0).save(ws.dataset_dir("synthetic") / "annotations.json")
    assert warn_box_sizes(cfg) == []  # no photos imported yet
    _boxes(20.0).save(ws.dataset_dir("val") / "annotations.json")
    warned = warn_box_sizes(cfg)
    assert len(warned) == 1 and warned[0].startswith("val photos vs renders: class 'bolt': "
                                                     "rendered boxes are 1.50x")
    assert warn_box_sizes(cfg.model_copy(update={"val": cfg.val.model_copy(
        update={"box_size_factor": 2.0})})) == []
    # patches of renders shown at 0.5-0.8x (median 0.63x): the 1.5x renders match the photos
    scaled = load_config(path, overrides=["pretrain.crop=512", "pretrain.crop_scale=[0.5,0.8]"])
    assert warn_box_sizes(scaled) == []
