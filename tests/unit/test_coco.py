import json

import numpy as np
import pytest

from synthloop.data.coco import CocoDataset, CocoError, categories_for, merge


def raw(images=None, annotations=None, categories=None):
    return {
        "images": images if images is not None else [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
            {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80}],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "area": 1200},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 100, 100], "area": 1e4}],
        "categories": categories if categories is not None else categories_for(["bolt", "washer"]),
    }


def write(tmp_path, data):
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return p


def test_round_trip_keeps_everything(tmp_path):
    ds = CocoDataset.load(write(tmp_path, raw()))
    out = ds.save(tmp_path / "out" / "ann.json")
    again = CocoDataset.load(out, ds.image_root)
    assert again.to_dict() == ds.to_dict()
    assert again.class_names == ["bolt", "washer"]


def test_boxes_convert_to_xyxy_and_images_without_boxes_give_empty_arrays(tmp_path):
    ds = CocoDataset.load(write(tmp_path, raw()))
    boxes, labels = ds.boxes_xyxy(1)
    np.testing.assert_allclose(boxes[0], [10, 20, 40, 60])
    assert labels.tolist() == [1, 2]
    boxes, labels = ds.boxes_xyxy(2)
    assert boxes.shape == (0, 4) and labels.shape == (0,)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("annotations"), "missing or non-list key 'annotations'"),
    (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image ids [1]"),
    (lambda d: d["annotations"][0].update(image_id=9), "unknown image 9"),
    (lambda d: d["annotations"][0].update(category_id=7), "unknown category 7"),
    (lambda d: d["annotations"][0].update(bbox=[10, 10, -5, 5]), "non-positive"),
    (lambda d: d["annotations"][0].update(bbox=[90, 10, 50, 5]), "outside image 1"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2]), "bbox must be [x, y, w, h]"),
    (lambda d: d["images"][0].update(file_name="../../etc/passwd"), "escapes the image root"),
    (lambda d: d["images"][0].pop("width"), "missing ['width']"),
])
def test_malformed_files_raise_one_error_naming_file_and_problem(tmp_path, mutate, message):
    data = raw()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(CocoError) as err:
        CocoDataset.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_not_json_and_missing_file_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(CocoError, match="not valid JSON"):
        CocoDataset.load(bad)
    with pytest.raises(CocoError, match="file not found"):
        CocoDataset.load(tmp_path / "missing.json")


def test_subset_and_merge_renumber_consistently(tmp_path):
    ds = CocoDataset.load(write(tmp_path, raw()))
    sub = ds.subset([2, 1])
    assert [im.id for im in sub.images] == [2, 1] and len(sub.annotations) == 2
    with pytest.raises(CocoError, match="unknown image ids"):
        ds.subset([5])
    merged = merge([ds, ds.subset([1])], image_root=ds.image_root)
    assert [im.id for im in merged.images] == [1, 2, 3]
    assert [a.image_id for a in merged.annotations] == [1, 1, 3, 3]
    assert len({a.id for a in merged.annotations}) == 4
    merged.validate()


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    ds = CocoDataset.load(write(tmp_path, raw()))
    out = tmp_path / "o"
    ds.save(out / "ann.json")
    ds.save(out / "ann.json")
    assert [p.name for p in out.iterdir()] == ["ann.json"]
