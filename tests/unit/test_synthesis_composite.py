"""Boxes and visibility from instance maps; the silhouette rasteriser; compositing."""

import numpy as np
from PIL import Image

from synthloop.synthesis.blender.raster import silhouette
from synthloop.synthesis.composite import composite, mask_box_xywh, part_instances


def test_silhouette_counts_truncated_pixels():
    uv = np.array([[10.0, 10], [30, 10], [30, 20], [10, 20]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    assert silhouette(uv, faces, 64, 48)["pixels"] == 200
    cut = silhouette(uv - [20, 0], faces, 64, 48)
    assert cut["pixels"] == 200 and cut["pixels_in_image"] == 100
    assert cut["bbox_xyxy"] == [-10.0, 10.0, 10.0, 20.0]


def test_part_instances_tight_boxes_visibility_and_no_distractors():
    ids = np.zeros((48, 64), np.uint16)
    ids[10:20, 5:15] = 1  # 100 px visible of 200
    ids[30:40, 40:60] = 2  # fully visible
    ids[0:5, 0:5] = 1001  # a distractor
    record = {"parts": [{"pass_index": 1, "class_index": 0, "unoccluded_pixels": 200},
                        {"pass_index": 2, "class_index": 1, "unoccluded_pixels": 200},
                        {"pass_index": 3, "class_index": 0, "unoccluded_pixels": 50}]}
    inst = part_instances(ids, record, min_visibility=0.0)
    assert [i["bbox"] for i in inst] == [(5.0, 10.0, 10.0, 10.0), (40.0, 30.0, 20.0, 10.0)]
    assert [i["visibility"] for i in inst] == [0.5, 1.0]
    assert [i["class_index"] for i in inst] == [0, 1]
    assert len(part_instances(ids, record, min_visibility=0.6)) == 1
    assert mask_box_xywh(np.zeros((4, 4), bool)) is None


def test_composite_uses_alpha_and_background():
    rgba = Image.new("RGBA", (32, 24), (255, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 16, 24))
    plan = {"background": {"source": "procedural:factory", "seed": 1},
            "sensor": {"noise_std": 2.0, "blur_sigma": 0.0, "jpeg_quality": 90,
                       "color_gain": [1.0, 1.0, 1.0], "seed": 5}}
    a = np.asarray(composite(rgba, plan))
    assert a.shape == (24, 32, 3) and np.array_equal(a, np.asarray(composite(rgba, plan)))
    assert a[:, :16, 0].mean() > 240 and a[:, 16:, 0].mean() < 200
