"""YOLO / COCO import with a class map, as a pipeline's pool or validation set."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthloop.data.coco import CocoDataset
from synthloop.data.importers import (DatasetImportError, apply_class_map, describe,
                                      import_dataset, load_coco, load_yolo)


def _yolo(root: Path, labels: dict[str, str], *, size=(200, 100), classes="Bolt\nBottle\nWasher\n"):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text(classes)
    for stem, text in labels.items():
        Image.new("RGB", size, (120, 120, 120)).save(root / "images" / f"{stem}.jpg")
        if text is not None:
            (root / "labels" / f"{stem}.txt").write_text(text)
    return root


def test_yolo_boxes_and_polygons_become_pixel_boxes(tmp_path):
    root = _yolo(tmp_path / "y", {
        "a": "0 0.5 0.5 0.2 0.4\n2 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n",
        "b": None,  # no label file: an image without objects
    })
    ds = load_yolo(root)
    assert ds.class_names == ["Bolt", "Bottle", "Washer"]
    assert [im.file_name for im in ds.images] == ["a.jpg", "b.jpg"]
    boxes = {a.category_id: a.bbox for a in ds.annotations}
    assert boxes[1] == pytest.approx((80.0, 30.0, 40.0, 40.0))  # xc .5*200 w .2*200, yc .5*100
    assert boxes[3] == pytest.approx((20.0, 10.0, 40.0, 20.0))  # polygon -> its bounding box


def test_classes_txt_with_indices_and_data_yaml(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "1 0.5 0.5 0.2 0.2\n"}, classes="0 Bolt\n1 Washer\n")
    assert load_yolo(root).class_names == ["Bolt", "Washer"]
    (root / "classes.txt").unlink()
    (root / "data.yaml").write_text("names: {0: nut, 1: screw}\n")
    assert load_yolo(root).class_names == ["nut", "screw"]


def test_bad_yolo_lines_are_all_listed_with_file_and_line(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.2\n7 0.5 0.5 0.1 0.1\n0 0.5 1.5 0.1 0.1\nx y\n"})
    (root / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetImportError) as err:
        load_yolo(root)
    msg = str(err.value)
    for expected in ("a.txt:1: 3 coordinates", "a.txt:2: class 7", "a.txt:3: coordinates outside",
                     "a.txt:4: not numbers", "without an image: ['ghost.txt']"):
        assert expected in msg


def test_class_map_drops_and_renames_and_refuses_unknown(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n2 0.8 0.8 0.1 0.1\n"})
    ds = load_yolo(root)
    out = apply_class_map(ds, ["Washer", "Bolt"], {"Bottle": None})
    assert out.class_names == ["Washer", "Bolt"]
    assert sorted(a.category_id for a in out.annotations) == [1, 2]  # bottle gone, ids follow parts
    renamed = apply_class_map(ds, ["bolt", "washer"], {"Bolt": "bolt", "Washer": "washer",
                                                       "Bottle": None})
    assert describe(renamed)["classes"] == {"bolt": 1, "washer": 1}
    with pytest.raises(DatasetImportError, match="'Bottle' is neither a part name nor in class_map"):
        apply_class_map(ds, ["Bolt", "Washer"], {})
    with pytest.raises(DatasetImportError, match="target 'Nut' is not a part name"):
        apply_class_map(ds, ["Bolt", "Washer"], {"Bottle": "Nut"})


def test_import_writes_resized_set_atomically(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.2 0.4\n"}, size=(400, 200))
    ds = apply_class_map(load_yolo(root), ["Bolt", "Washer"], {"Bottle": None})
    out = import_dataset(ds, tmp_path / "val", max_side=200, progress=False)
    back = CocoDataset.load(tmp_path / "val" / "annotations.json")
    assert (back.images[0].width, back.images[0].height) == (200, 100)
    assert back.annotations[0].bbox == pytest.approx((80.0, 30.0, 40.0, 40.0))
    assert Image.open(out.image_path(out.images[0])).size == (200, 100)
    with pytest.raises(DatasetImportError, match="already exists"):
        import_dataset(ds, tmp_path / "val", progress=False)


def test_failed_import_leaves_nothing_behind(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.2 0.4\n", "b": ""})
    ds = load_yolo(root)
    (root / "images" / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetImportError, match="b.jpg: not a readable image"):
        import_dataset(ds, tmp_path / "val", progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "y"]  # no dest, no temp folder


def test_exif_rotated_and_16_bit_photos_are_accepted(tmp_path):
    root = tmp_path / "y"
    _yolo(root, {})
    im = Image.new("RGB", (200, 100), (10, 20, 30))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display: the photo is 100 wide, 200 high
    im.save(root / "images" / "r.jpg", exif=exif)
    Image.fromarray(np.full((50, 80), 40000, np.uint16)).save(root / "images" / "d.png")
    (root / "labels" / "r.txt").write_text("0 0.5 0.25 0.5 0.1\n")
    ds = load_yolo(root)
    sizes = {im.file_name: (im.width, im.height) for im in ds.images}
    assert sizes == {"r.jpg": (100, 200), "d.png": (80, 50)}
    out = import_dataset(ds, tmp_path / "out", progress=False)
    for im in out.images:
        with Image.open(out.image_path(im)) as pil:
            assert pil.mode == "RGB" and pil.size == (im.width, im.height)
    assert out.annotations[0].bbox == pytest.approx((25.0, 40.0, 50.0, 20.0))


def test_coco_import_reports_malformed_files(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"images": [], "annotations": [{"id": 1}]}))
    with pytest.raises(DatasetImportError, match="bad.json"):
        load_coco(tmp_path / "bad.json")


def test_bolts_real_valid_imports_with_bottles_dropped(bolts_real):
    ds = load_yolo(bolts_real / "valid")
    assert len(ds.images) == 15 and describe(ds)["classes"]["Bottle"] > 0
    parts = apply_class_map(ds, ["Bolt", "Washer"], {"Bottle": None})
    assert describe(parts)["classes"] == {"Bolt": 168, "Washer": 279}  # 447 boxes (data/README)


def test_imported_pool_keeps_boxes_for_the_oracle_only(tmp_path):
    """An imported pool lands in data/pool without boxes, its boxes in oracle/pool.json, with no
    temp file left; a rerun copies nothing again (the images keep their mtimes)."""
    from synthloop.config import load_config
    from synthloop.stages import render as render_stage
    from synthloop.stages.workspace import Workspace

    src = _yolo(tmp_path / "photos", {"a": "0 0.5 0.5 0.2 0.4\n1 0.2 0.2 0.1 0.1\n", "b": "2 0.3 0.3 0.1 0.2\n"})
    cfg = load_config(Path(__file__).parents[2] / "pipelines" / "bolts.yaml",
                      overrides=[f"workspace={tmp_path / 'ws'}", f"pool.path={src}"])
    ref = render_stage.run(cfg, "pool", progress=False)
    ws = Workspace.of(cfg)
    pool = CocoDataset.load(ref.annotations, ref.image_root)
    oracle = CocoDataset.load(ws.oracle / "pool.json")
    assert len(pool.images) == 2 and not pool.annotations
    assert len(oracle.annotations) == 2  # the bottle was dropped by the class map
    files = sorted(Path(ref.image_root).iterdir())
    assert [p.name for p in files] == ["a.jpg", "b.jpg"]
    mtimes = [p.stat().st_mtime_ns for p in files]
    render_stage.ingest_pool(ws, oracle.with_image_root(Path(ref.image_root)))
    assert [p.stat().st_mtime_ns for p in files] == mtimes


def test_a_made_pool_or_validation_set_is_fixed_for_its_workspace(tmp_path):
    """Once data/pool and data/val exist, a changed ``pool:`` / ``val:`` section fails with the
    keys it changed instead of reusing the old photos silently; the warning threshold
    ``box_size_factor`` changes no photo and is allowed; a workspace made before the record
    (state/sources.json) adopts the section it is run with; photos and workspace moved together
    are no change."""
    from synthloop.config import ConfigError, load_config
    from synthloop.stages import render as render_stage
    from synthloop.stages.workspace import Workspace

    src = _yolo(tmp_path / "photos", {"a": "0 0.5 0.5 0.2 0.4\n", "b": "1 0.3 0.3 0.1 0.2\n"})
    other = _yolo(tmp_path / "other", {"c": "0 0.5 0.5 0.2 0.4\n"})
    base = [f"workspace={tmp_path / 'ws'}", f"pool.path={src}", f"val.path={src}"]
    pipeline = Path(__file__).parents[2] / "pipelines" / "bolts.yaml"
    cfg = load_config(pipeline, overrides=base)
    for domain in ("pool", "val"):
        render_stage.run(cfg, domain, progress=False)
    sources = Workspace.of(cfg).root / "state" / "sources.json"
    assert set(json.loads(sources.read_text())) == {"pool", "val"}

    for domain, change, key in (("val", f"val.path={other}", "val.path"),
                                ("pool", "pool.class_map={Bottle: Bolt}", "pool.class_map.Bottle"),
                                ("val", "val.max_side=640", "val.max_side")):
        changed = load_config(pipeline, overrides=base + [change])
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)} changed since .*{domain}"):
            render_stage.run(changed, domain, progress=False)
    assert len(CocoDataset.load(Workspace.of(cfg).dataset_dir("val") / "annotations.json")
               .images) == 2  # nothing was re-imported

    loose = load_config(pipeline, overrides=base + ["val.box_size_factor=3.0"])
    assert render_stage.run(loose, "val", progress=False).num_images == 2

    sources.unlink()  # a workspace made before the record: adopts the section it runs with
    moved = load_config(pipeline, overrides=base + [f"val.path={other}"])
    assert render_stage.run(moved, "val", progress=False).num_images == 2
    recorded = json.loads(sources.read_text())["val"]["path"]
    assert not Path(recorded).is_absolute()  # a moved repository with its workspace inside: same
    assert (Workspace.of(cfg).root / recorded).resolve() == other.resolve()

    # the photos and the workspace moved together (a repository cloned elsewhere): no change
    moved = tmp_path / "moved"
    for name in ("photos", "other", "ws"):
        shutil.copytree(tmp_path / name, moved / name)
    there = load_config(pipeline, overrides=[f"workspace={moved / 'ws'}",
                                             f"pool.path={moved / 'photos'}",
                                             f"val.path={moved / 'other'}"])
    assert render_stage.run(there, "pool", progress=False).num_images == 2
    assert render_stage.run(there, "val", progress=False).num_images == 2


def test_a_synthetic_set_put_in_by_hand_is_used_as_it_is(tmp_path, caplog):
    """data/synthetic without render records (``raw/``) was not rendered from the config (a
    user's own renders, a test's workspace): the render stage uses it and never renders over it,
    even though the ``synthetic:`` section cannot describe it. Without the guard the stage would
    start Blender and replace these images."""
    from synthloop.config import load_config
    from synthloop.stages import render as render_stage
    from synthloop.stages.workspace import Workspace

    src = _yolo(tmp_path / "photos", {"a": "0 0.5 0.5 0.2 0.4\n", "b": "1 0.3 0.3 0.1 0.2\n"})
    pipeline = Path(__file__).parents[2] / "pipelines" / "bolts.yaml"
    cfg = load_config(pipeline, overrides=[f"workspace={tmp_path / 'ws'}"])
    target = Workspace.of(cfg).dataset_dir("synthetic")
    ds = import_dataset(apply_class_map(load_yolo(src), list(cfg.class_names), {"Bottle": None}),
                        target, progress=False)
    files = sorted(target.rglob("*"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files if p.is_file()}
    with caplog.at_level("WARNING", logger="synthloop"):
        ref = render_stage.run(cfg, "synthetic", progress=False)
    assert ref.num_images == len(ds.images) == 2
    assert sorted(target.rglob("*")) == files
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before
    assert "no render records" in caplog.text
