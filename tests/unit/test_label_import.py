"""Export formats and the strict import: every rejection case names its location; all or nothing."""

from __future__ import annotations

import copy
import json
import zipfile
from xml.etree import ElementTree

import pytest

from synthloop.data.coco import CocoImage
from synthloop.data.label_export import (ExportManifest, Preannotation, cvat_coco,
                                         labelstudio_label_config, labelstudio_tasks, write_export)
from synthloop.data.label_import import (LabelImportError, box_iou, load_import, parse_coco,
                                         parse_labelstudio, preannotation_savings, unsafe_file_name)

CLASSES = ("blade", "bolt")


@pytest.fixture()
def manifest() -> ExportManifest:
    images = tuple(CocoImage(i, f"{i:06d}.jpg", 100, 80) for i in (11, 12, 13))
    pre = (Preannotation(11, 1, (10.0, 10.0, 40.0, 30.0), 0.9),
           Preannotation(11, 2, (50.0, 40.0, 90.0, 70.0), 0.7),
           Preannotation(12, 1, (0.0, 0.0, 20.0, 20.0), 0.6))
    return ExportManifest(cycle=2, tool="labelstudio", model_version="3", pool_md5="abc",
                          class_names=CLASSES, images=images, preannotations=pre)


def annotate(tasks: list[dict], results: dict[int, list[dict] | str]) -> list[dict]:
    """Play the annotator on exported tasks: a result list per image id, or 'skip'."""
    out = copy.deepcopy(tasks)
    for n, task in enumerate(out):
        task["id"] = 100 + n
        what = results.get(task["data"]["synthloop_image_id"])
        if what == "skip":
            task["annotations"] = [{"id": n, "was_cancelled": True, "result": []}]
        elif what is not None:
            task["annotations"] = [{"id": n, "was_cancelled": False, "completed_by": 1,
                                    "result": what}]
    return out


def rect(x, y, w, h, label="blade", **extra) -> dict:
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": 100, "original_height": 80,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                      "rectanglelabels": [label]}, **extra}


def test_label_studio_export_is_a_valid_project(manifest):
    config = ElementTree.fromstring(labelstudio_label_config(CLASSES))
    assert [e.get("value") for e in config.iter("Label")] == list(CLASSES)
    tasks = labelstudio_tasks(manifest, "/data/local-files/?d=pool/images/{file_name}")
    assert [t["data"]["synthloop_image_id"] for t in tasks] == [11, 12, 13]
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=pool/images/000011.jpg"
    first = tasks[0]["predictions"][0]["result"][0]
    assert first["value"]["x"] == pytest.approx(10.0) and first["value"]["width"] == pytest.approx(30.0)
    assert first["value"]["y"] == pytest.approx(12.5) and first["value"]["rectanglelabels"] == ["blade"]
    assert tasks[2]["predictions"][0]["result"] == []


def test_label_studio_round_trip_keeps_moves_and_skips(manifest):
    tasks = labelstudio_tasks(manifest, "{file_name}")
    kept = tasks[0]["predictions"][0]["result"]  # both pre-annotations accepted as they are
    done = annotate(tasks, {11: kept, 12: [rect(30, 30, 20, 25, "bolt")], 13: "skip"})
    batch = parse_labelstudio(done, manifest, source="export.json")
    assert batch.returned == (11, 12) and batch.skipped == (13,) and batch.pending == ()
    assert batch.boxes[11][0] == (1, pytest.approx((10.0, 10.0, 40.0, 30.0)))
    assert batch.boxes[12] == [(2, pytest.approx((30.0, 24.0, 50.0, 44.0)))]
    s = preannotation_savings(manifest.preannotations, batch, iou=0.9)
    assert s["boxes_final"] == 3 and s["boxes_accepted"] == 2
    assert s["accepted_share"] == pytest.approx(2 / 3) and s["preannotations_rejected"] == 1
    coco = batch.to_coco(manifest, image_root="/pool")
    assert [im.id for im in coco.images] == [11, 12] and len(coco.annotations) == 3
    assert coco.annotations[2].bbox == pytest.approx((30.0, 24.0, 20.0, 20.0))


def test_unannotated_tasks_are_pending_and_an_empty_answer_is_an_answer(manifest):
    done = annotate(labelstudio_tasks(manifest, "{file_name}"), {11: []})
    batch = parse_labelstudio(done, manifest)
    assert batch.boxes == {11: []} and batch.pending == (12, 13)
    assert preannotation_savings(manifest.preannotations, batch)["accepted_share"] is None


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t[0]["data"].update(synthloop_image_id=999), "tasks[0] (task 100).data.synthloop_image_id: unknown image id 999"),
    (lambda t: t[0]["data"].update(synthloop_image_id="11"), "synthloop_image_id: missing or not an integer"),
    (lambda t: t[0]["data"].update(file_name="../../etc/passwd"), "path traversal"),
    (lambda t: t[0]["data"].update(file_name="/etc/passwd"), "absolute path"),
    (lambda t: t[0]["data"].update(file_name="000012.jpg"), "is not '000011.jpg'"),
    (lambda t: t[0]["annotations"][0]["result"].append(rect(5, 5, 10, 10, "nut")), "unknown class 'nut'"),
    (lambda t: t[0]["annotations"][0]["result"].append(rect(95, 5, 10, 10)), "lies outside the 100x80 image"),
    (lambda t: t[0]["annotations"][0]["result"].append(rect(5, 5, 0, 10)), "box has no area"),
    (lambda t: t[0]["annotations"][0]["result"].append(rect(5, 5, -3, 10)), "box has no area"),
    (lambda t: t[0]["annotations"][0]["result"].append(
        {**rect(5, 5, 10, 10), "value": {**rect(5, 5, 10, 10)["value"], "rotation": 30}}), "rotated box"),
    (lambda t: t[0]["annotations"][0]["result"].append({**rect(5, 5, 10, 10), "original_width": 200}),
     "drawn on a 200x80 image"),
    (lambda t: t[0]["annotations"][0]["result"].append({"type": "polygonlabels", "value": {}}),
     "unsupported result type 'polygonlabels'"),
    (lambda t: t[0]["annotations"][0]["result"].append(
        {**rect(5, 5, 10, 10), "value": {**rect(5, 5, 10, 10)["value"], "x": float("nan")}}), "finite numbers"),
    (lambda t: t[0]["annotations"][0]["result"].append(copy.deepcopy(t[0]["annotations"][0]["result"][0])),
     "result[1]: duplicate annotation of tasks[0] (task 100).annotations[0].result[0]"),
    (lambda t: t.append(copy.deepcopy(t[0])), "duplicate task for image 11"),
    (lambda t: t[0]["annotations"].append({"id": 9, "was_cancelled": False, "result": []}),
     "2 finished annotations and no single ground truth"),
])
def test_label_studio_rejections_name_the_location(manifest, mutate, expected):
    done = annotate(labelstudio_tasks(manifest, "{file_name}"), {11: [rect(10, 10, 20, 20)]})
    mutate(done)
    with pytest.raises(LabelImportError) as err:
        parse_labelstudio(done, manifest, source="ls.json")
    assert expected in str(err.value) and "nothing was imported" in str(err.value)


def test_every_problem_is_listed_not_just_the_first(manifest):
    done = annotate(labelstudio_tasks(manifest, "{file_name}"),
                    {11: [rect(95, 5, 10, 10), rect(5, 5, 10, 10, "nut")], 12: [rect(5, 5, 0, 1)]})
    done[2]["data"]["file_name"] = "../x.jpg"
    with pytest.raises(LabelImportError) as err:
        parse_labelstudio(done, manifest, source="ls.json")
    assert len(err.value.problems) == 4
    text = str(err.value)
    for loc in ("tasks[0] (task 100).annotations[0].result[0]", "tasks[0] (task 100).annotations[0].result[1]",
                "tasks[1] (task 101).annotations[0].result[0]", "tasks[2] (task 102).data.file_name"):
        assert loc in text


def test_a_ground_truth_annotation_settles_double_work(manifest):
    done = annotate(labelstudio_tasks(manifest, "{file_name}"), {11: [rect(10, 10, 20, 20)]})
    done[0]["annotations"].append({"id": 9, "was_cancelled": False, "ground_truth": True,
                                   "result": [rect(0, 0, 50, 50, "bolt")]})
    assert parse_labelstudio(done, manifest).boxes[11] == [(2, pytest.approx((0.0, 0.0, 50.0, 40.0)))]


def cvat_export(manifest) -> dict:
    """What CVAT sends back: its own image and category ids, images matched by file name."""
    coco = cvat_coco(manifest)
    remap = {11: 1, 12: 2, 13: 3}
    for im in coco["images"]:
        im["id"] = remap[im["id"]]
    for a in coco["annotations"]:
        a["image_id"] = remap[a["image_id"]]
    coco["categories"] = [{"id": 7, "name": "bolt"}, {"id": 5, "name": "blade"}]
    for a in coco["annotations"]:
        a["category_id"] = {1: 5, 2: 7}[a["category_id"]]
    return coco


def test_cvat_coco_round_trip_matches_images_by_file_name(manifest):
    coco = cvat_export(manifest)
    coco["images"] = coco["images"][:2]  # image 13 not exported back: pending
    coco["annotations"][2]["bbox"] = [2.0, 2.0, 30.0, 30.0]  # image 12's box moved
    batch = parse_coco(coco, manifest, source="cvat.json")
    assert batch.returned == (11, 12) and batch.pending == (13,) and batch.skipped == ()
    assert [c for c, _ in batch.boxes[11]] == [1, 2]
    assert preannotation_savings(manifest.preannotations, batch)["boxes_accepted"] == 2


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["images"][0].update(file_name="../../../root/.ssh/id_rsa"), "images[0].file_name: '../../../root/.ssh/id_rsa' climbs out"),
    (lambda c: c["images"][0].update(file_name="C:\\x\\000011.jpg"), "absolute path"),
    (lambda c: c["images"][0].update(file_name="999999.jpg"), "unknown image '999999.jpg'"),
    (lambda c: c["images"][0].update(width=640), "size 640x80"),
    (lambda c: c["images"].append(dict(c["images"][0], id=50)), "duplicate image '000011.jpg'"),
    (lambda c: c["categories"].append({"id": 9, "name": "nut"}), "categories[2]: unknown class 'nut'"),
    (lambda c: c["annotations"][0].update(category_id=42), "unknown category id 42"),
    (lambda c: c["annotations"][0].update(image_id=77), "refers to image 77"),
    (lambda c: c["annotations"][0].update(bbox=[90.0, 10.0, 30.0, 10.0]), "lies outside the 100x80 image"),
    (lambda c: c["annotations"][0].update(bbox=[1.0, 1.0, 0.0, 5.0]), "no area"),
    (lambda c: c["annotations"][1].update(id=c["annotations"][0]["id"]), "duplicate annotation id 1"),
    (lambda c: c["annotations"].append(dict(c["annotations"][0], id=99)), "annotations[3] (id 99): duplicate annotation"),
])
def test_cvat_rejections_name_the_location(manifest, mutate, expected):
    coco = cvat_export(manifest)
    mutate(coco)
    with pytest.raises(LabelImportError) as err:
        parse_coco(coco, manifest, source="cvat.json")
    assert expected in str(err.value)


def test_files_on_disk_json_and_zip(manifest, tmp_path):
    write_export(manifest, tmp_path / "exp", image_root=tmp_path)
    assert ExportManifest.load(tmp_path / "exp") == manifest
    done = annotate(json.loads((tmp_path / "exp/labelstudio/tasks.json").read_text()), {12: []})
    (tmp_path / "ls.json").write_text(json.dumps(done))
    assert load_import(tmp_path / "ls.json", manifest).returned == (12,)

    good = tmp_path / "cvat.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("annotations/instances_default.json", json.dumps(cvat_export(manifest)))
    assert load_import(good, manifest).returned == (11, 12, 13)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../annotations.json", "{}")
    with pytest.raises(LabelImportError, match="path traversal"):
        load_import(evil, manifest)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LabelImportError, match="not valid JSON"):
        load_import(tmp_path / "bad.json", manifest)


def test_cvat_export_writes_images_and_an_importable_zip(manifest, tmp_path):
    for im in manifest.images:
        (tmp_path / im.file_name).write_bytes(b"jpeg")
    cvat = ExportManifest(**{**manifest.__dict__, "tool": "cvat"})
    main = write_export(cvat, tmp_path / "exp", image_root=tmp_path)
    assert main.name == "instances_default.json" and len(list((tmp_path / "exp/cvat/images").iterdir())) == 3
    with zipfile.ZipFile(tmp_path / "exp/cvat/cvat_preannotations_coco.zip") as zf:
        coco = json.loads(zf.read("annotations/instances_default.json"))
    assert coco["annotations"][0]["bbox"] == [10.0, 10.0, 30.0, 20.0]
    assert parse_coco(coco, manifest).returned == (11, 12, 13)


def test_helpers():
    assert unsafe_file_name("a/b.jpg") is None and unsafe_file_name("") is not None
    assert unsafe_file_name("a/../../b.jpg") and unsafe_file_name("\\\\server\\x")
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
