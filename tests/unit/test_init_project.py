"""`synthloop init` without Blender (--previews 0): the YAML it writes, the photo split, the
camera fitted to the part and to the photos' boxes, and clean failures that write nothing."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cad_support import write_assembly, write_inch_bracket
from synthloop.cli import app
from synthloop.config import load_config
from synthloop.init_project import BOX_TO_EXTENT, SENSOR_MM
from synthloop.synthesis.meshes import _box, write_stl


def _photo_folder(folder, n=5, size=(200, 150)):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", size, (40 * i, 90, 120)).save(folder / f"p{i}.jpg")
    return folder


def _coco_photos(folder, side_px, n=5, size=(400, 300), classes=("bracket", "Bottle")):
    images_dir = _photo_folder(folder / "images", n, size)
    images = [{"id": i + 1, "file_name": f"p{i}.jpg", "width": size[0], "height": size[1]}
              for i in range(n)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, side_px, side_px / 2],
             "area": side_px * side_px / 2, "iscrowd": 0} for i in range(n)]
    anns.append({"id": n + 1, "image_id": 1, "category_id": 2, "bbox": [50, 50, 30, 60],
                 "area": 1800, "iscrowd": 0})
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    (folder / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": cats}))
    assert images_dir.is_dir()
    return folder


def _init(tmp_path, *args):
    return CliRunner().invoke(app, ["init", "--out", str(tmp_path / "proj"), "--previews", "0",
                                    *args])


def test_labelled_photos_give_a_real_val_split_and_a_fitted_camera(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    step = write_inch_bracket(tmp_path / "bracket.step")  # 2 x 1 x 0.5 inch
    photos = _coco_photos(tmp_path / "cam", side_px=80)
    res = _init(tmp_path, "--name", "br", "--cad", str(step), "--labels", "coco", str(photos),
                "--val-fraction", "0.4")
    assert res.exit_code == 0, res.output
    assert "bracket: 0.0508 x 0.0254 x 0.0127 m (unit inch, file unit inch" in res.output
    assert "synthloop render synthetic --config" in res.output
    cfg = load_config(tmp_path / "proj" / "br.yaml")
    assert cfg.class_names == ["bracket"] and cfg.parts[0].mesh == step
    assert cfg.proxy_real is False and cfg.pool.format == "coco" and cfg.val.format == "coco"
    pool = json.loads((cfg.pool.path / "annotations.json").read_text())
    val = json.loads((cfg.val.path / "annotations.json").read_text())
    assert (len(pool["images"]), len(val["images"])) == (3, 2)
    assert [c["name"] for c in val["categories"]] == ["bracket"]  # Bottle dropped
    # every photo box spans 80 of 400 px: the part (0.0508 m) at that share, mid focal 42.5 mm
    expected = BOX_TO_EXTENT * 0.0508 * 42.5 / (SENSOR_MM * 0.2)
    assert cfg.synthetic.camera_distance.min == pytest.approx(expected, rel=1e-3)
    assert cfg.synthetic.camera_distance.max == pytest.approx(expected * 1.2, rel=1e-3)
    assert cfg.synthetic.width == 640 and cfg.synthetic.height == 480  # the photos' aspect
    assert "Photo classes with no part, dropped from pool/val: Bottle" in \
        (tmp_path / "proj" / "br.yaml").read_text()


def test_unlabelled_photos_and_one_class_per_named_solid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    step = write_assembly(tmp_path / "asm.step")
    res = _init(tmp_path, "--name", "asm", "--cad", str(step), "--assembly", "per-solid",
                "--photos", str(_photo_folder(tmp_path / "cam")),
                "--set", "synthetic.num_images=50")
    assert res.exit_code == 0, res.output
    cfg = load_config(tmp_path / "proj" / "asm.yaml")
    assert [(p.name, p.solid) for p in cfg.parts] == [("bolt", "bolt"), ("washer", "washer")]
    assert cfg.synthetic.num_images == 50
    assert cfg.proxy_real and cfg.labeling.oracle == "labelstudio"  # no labels: people label
    assert cfg.val.num_images == 40  # a rendered proxy val, said in the YAML's header
    pool = json.loads((cfg.pool.path / "annotations.json").read_text())
    assert len(pool["images"]) == 4 and pool["annotations"] == []
    # without photo boxes the largest part spans 15-50 % of the frame
    bolt = 0.046
    assert cfg.synthetic.camera_distance.max == pytest.approx(bolt * 42.5 / (SENSOR_MM * 0.15),
                                                              rel=1e-3)


def test_a_mesh_whose_unit_is_misread_fails_with_the_fix_and_writes_nothing(tmp_path):
    stl = write_stl(tmp_path / "bracket.stl", *_box((0, 0, 0), (2.0, 1.0, 0.5)))  # inches
    photos = _photo_folder(tmp_path / "cam")
    res = _init(tmp_path, "--name", "br", "--cad", str(stl), "--photos", str(photos))
    assert res.exit_code == 2
    assert "part 'bracket' (bracket.stl) has no unit in the file" in res.output
    assert "read as m is 2 m" in res.output and "Fix: --unit bracket.stl=cm|inch" in res.output
    assert not (tmp_path / "proj").exists()
    ok = _init(tmp_path, "--name", "br", "--cad", str(stl), "--photos", str(photos),
               "--unit", "bracket.stl=inch")
    assert ok.exit_code == 0, ok.output
    part = yaml.safe_load((tmp_path / "proj" / "br.yaml").read_text())["parts"][0]
    assert part["unit"] == "inch"


@pytest.mark.parametrize("args, message", [
    (["--name", "x", "--cad", "missing.step", "--photos", "."], "file not found"),
    (["--name", "x y", "--cad", "a.stl", "--photos", "."], "letters, digits"),
    (["--name", "x", "--cad", "a.stl"], "give --photos and/or --labels"),
    (["--name", "x", "--cad", "a.stl", "--labels", "voc", "."], "yolo or coco"),
    (["--name", "x", "--cad", "a.stl", "--photos", ".", "--unit", "furlong"], "--unit furlong"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    write_stl(tmp_path / "a.stl", *_box((0, 0, 0), (20.0, 10.0, 5.0)))
    res = _init(tmp_path, *args)
    assert res.exit_code == 2 and message in res.output
    assert not (tmp_path / "proj" / "x.yaml").exists()


def test_contact_sheet_draws_previews_over_photos(tmp_path):
    from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
    from synthloop.data.contact_sheet import write_contact_sheet

    _photo_folder(tmp_path / "a", 2, (100, 100))
    ds = CocoDataset([CocoImage(1, "p0.jpg", 100, 100), CocoImage(2, "p1.jpg", 100, 100)],
                     [CocoAnnotation(1, 1, 1, (10.0, 10.0, 50.0, 50.0), 2500.0)],
                     categories_for(["part"]), tmp_path / "a")
    sheet = write_contact_sheet(ds, ds, tmp_path / "sheet.png", n=2, thumb=100)
    px = np.asarray(Image.open(sheet))
    assert px.shape == (2 * (100 + 18) + 18, 200, 3)
    red = (px[..., 0] > 200) & (px[..., 1] < 60)
    assert red[18:118].any() and red[136:236].any()  # the box in both rows


def test_interactive_asks_only_for_what_no_flag_gave(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    step = write_inch_bracket(tmp_path / "bracket.step")
    photos = _photo_folder(tmp_path / "cam")
    answers = f"asked\n{step}\nnone\n{photos}\nn\n"
    res = CliRunner().invoke(app, ["init", "--interactive", "--out", str(tmp_path / "proj"),
                                   "--previews", "0"], input=answers)
    assert res.exit_code == 0, res.output
    assert "Pipeline name" in res.output and "Label format" in res.output
    assert load_config(tmp_path / "proj" / "asked.yaml").parts[0].name == "bracket"
    res = CliRunner().invoke(app, ["init", "--interactive", "--name", "flags", "--cad", str(step),
                                   "--photos", str(photos), "--unit", "inch", "--out",
                                   str(tmp_path / "proj"), "--previews", "0"], input="")
    assert res.exit_code == 0, res.output
    assert "Pipeline name" not in res.output and "Label format" not in res.output
