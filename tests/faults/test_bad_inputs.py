"""Hostile and odd input: each bad one ends in ONE line naming the file and the problem; odd but
valid photos (16-bit, CMYK, grayscale, EXIF-rotated) are accepted and decoded correctly."""

from __future__ import annotations

import io
import json
import subprocess
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthloop.config import ConfigError, load_config
from synthloop.data.coco import CocoDataset, CocoError
from fault_support import one_line, short
from tests_support import DEMO_CONFIG


# ------------------------------------------------------------------------------------ photos
def jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """One ingest of a camera folder holding every kind of photo, good and bad."""
    from synthloop.stages import ingest

    tmp = tmp_path_factory.mktemp("ingest")
    src = tmp / "camera"
    src.mkdir()
    good = jpeg(photo())
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": a phone held upright
    files = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(1).integers(0, 255, 900,
                                                                                   dtype=np.uint8)),
        "truncated.jpg": good[: len(good) // 2],
        "zero.jpg": b"",
        "bomb.png": png(Image.new("1", (14_000, 14_000))),  # 196 Mpx in a few KiB
        "good.jpg": good,
        "sixteen_bit.png": png(Image.fromarray(np.full((48, 64), 40_000, np.uint16))),
        "cmyk.jpg": jpeg(Image.new("CMYK", (64, 48), (0, 255, 255, 0))),
        "gray.jpg": jpeg(Image.new("L", (64, 48), 120)),
        "rotated.jpg": jpeg(Image.new("RGB", (64, 48), (0, 200, 0)), exif=exif.tobytes()),
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp / 'ws'}"])
    result = ingest.run(cfg, source=str(src))
    pool = CocoDataset.load(cfg.workspace / "data" / "pool" / "annotations.json")
    return result, pool, src


@pytest.mark.parametrize("name, what, expected", [
    ("corrupt.jpg", "corrupt image (JPEG magic, random body)", "not a decodable image"),
    ("truncated.jpg", "truncated JPEG (first half of a good file)", "not a decodable image"),
    ("zero.jpg", "zero-byte image", "not a decodable image"),
    ("bomb.png", "decompression bomb (14000x14000 PNG of 3 KiB)", "DecompressionBombError"),
])
def test_bad_photos_are_rejected_with_their_reason(ingested, name, what, expected, report):
    result, pool, src = ingested
    reasons = {Path(key).name: reason for key, reason in result.rejected}
    assert name in reasons, f"{name} was accepted"
    assert expected in reasons[name] and "\n" not in reasons[name]
    assert all(im.meta.get("source", "").endswith(name) is False for im in pool.images)
    report(f"ingest: {what}", f"rejected: `{name}`: {reasons[name]} (recorded in "
           "state/ingest/batch-*.json; the rest of the batch went in)", "n/a")


@pytest.mark.parametrize("name, what, check", [
    ("sixteen_bit.png", "16-bit grayscale PNG", "value"),
    ("cmyk.jpg", "CMYK JPEG", "red"),
    ("gray.jpg", "grayscale JPEG", "gray"),
    ("rotated.jpg", "EXIF-rotated JPEG (orientation 6)", "upright"),
])
def test_odd_but_valid_photos_are_accepted_and_decoded_right(ingested, name, what, check, report):
    from synthloop.detection.datasets import read_rgb

    result, pool, src = ingested
    by_source = {Path(im.meta["source"]).name: im for im in pool.images}
    assert name in by_source, f"{name} was rejected: {dict(result.rejected).get(str(src / name))}"
    im = by_source[name]
    rgb = read_rgb(pool.image_path(im))
    assert rgb.dtype == np.uint8 and rgb.shape == (im.height, im.width, 3)
    if check == "value":  # 40000 / 65535 of full scale: not clipped to white
        assert abs(int(rgb.mean()) - 40_000 // 256) <= 1, rgb.mean()
        how = f"accepted; decoded to 8-bit RGB {int(rgb.mean())} (= 40000 >> 8), not clipped white"
    elif check == "red":
        r, g, b = rgb.reshape(-1, 3).mean(0)
        assert r > 200 and g < 60 and b < 60, (r, g, b)
        how = f"accepted; decoded to RGB ({r:.0f}, {g:.0f}, {b:.0f})"
    elif check == "gray":
        assert np.ptp(rgb.reshape(-1, 3).mean(0)) < 1
        how = "accepted; decoded to RGB with equal channels"
    else:
        assert (im.width, im.height) == (48, 64)  # stored 64x48, shown upright 48x64
        how = "accepted; COCO size and decoded pixels are the upright 48x64 a labelling tool shows"
    report(f"ingest: {what}", how, "n/a")


# ------------------------------------------------------------------------------------ meshes
def blade(tmp_path: Path, scale: float = 1.0, drop_faces: int = 0) -> Path:
    from synthloop.synthesis.meshes import turbine_blade, write_stl

    v, f = turbine_blade()
    return write_stl(tmp_path / f"blade_{scale}_{drop_faces}.stl", v * scale, f[drop_faces:])


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def flat_mesh(tmp_path: Path) -> Path:
    from synthloop.synthesis.meshes import write_stl

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    f = np.array([[0, 1, 2], [1, 3, 2], [0, 2, 1], [1, 2, 3]])  # closed, but flat
    return write_stl(tmp_path / "flat.stl", v, f)


@pytest.mark.parametrize("what, make, expected", [
    ("empty mesh file (0 bytes)", lambda t: written(t / "empty.stl", b""), "file is empty"),
    ("STL with no triangles", lambda t: written(t / "none.stl", b"\0" * 80 + struct.pack("<I", 0)),
     "no triangles"),
    ("non-manifold mesh (a blade with 3 faces missing)", lambda t: blade(t, drop_faces=3),
     "not a closed solid"),
    ("zero-volume mesh (a closed but flat surface)", flat_mesh, "zero volume"),
])
def test_bad_meshes_fail_before_blender_starts(tmp_path, what, make, expected, report):
    from synthloop.synthesis.meshes import MeshError, mesh_info

    path = make(tmp_path)
    with pytest.raises(MeshError) as err:
        mesh_info(path)
    text = one_line(err.value, str(path), expected)
    report(f"mesh: {what}", f"MeshError: {short(text)}", "n/a")


@pytest.mark.render
def test_a_mesh_in_millimetres_renders_at_the_size_of_the_one_in_metres(tmp_path, render_python,
                                                                         report):
    """unit: auto scales a part over 10 units across by 1/1000 (in the Blender worker)."""
    metres, millimetres = blade(tmp_path, 1.0), blade(tmp_path, 1000.0)
    script = f"""
import json, numpy as np
from synthloop.synthesis.blender.imports import import_parts, _bounds
specs = [{{"name": "m", "class_index": 0, "path": {str(metres)!r}, "unit": "auto"}},
         {{"name": "mm", "class_index": 1, "path": {str(millimetres)!r}, "unit": "auto"}}]
meshes, scales = import_parts(specs)
print(json.dumps({{"scales": scales, "sizes": [(lambda b: (b[1] - b[0]).tolist())(_bounds(m))
                                              for m in meshes]}}))
"""
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run([render_python, "-c", script], capture_output=True, text=True,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip(), out.stderr[-2000:]
    res = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    assert res["scales"] == [1.0, 0.001]
    np.testing.assert_allclose(res["sizes"][0], res["sizes"][1], rtol=1e-4)
    report("mesh: the same part in millimetres instead of metres (unit: auto)",
           "accepted; scaled by 0.001 in the worker, same size in the scene as the metre file",
           "n/a")


def test_a_part_drawn_in_inches_is_not_read_as_metres(tmp_path, report):
    """The blade's numbers in inches, ``unit: auto`` (under 10 units across: metres): the
    render stops before Blender with the part, its readings and the fix."""
    from synthloop.config import DomainConfig, PartSpec
    from synthloop.synthesis.render import plan_shards
    from synthloop.synthesis.scale_check import ScaleError

    inches = blade(tmp_path, 1.0 / 0.0254)  # 0.15 m long = 5.9 units
    with pytest.raises(ScaleError) as err:
        plan_shards(DomainConfig(num_images=2), [PartSpec(name="blade", mesh=inches)],
                    tmp_path / "out")
    msg = str(err.value)
    assert "cannot fit" in msg and "inch: 0.15 m" in msg
    assert "Fix: set `unit: cm|mm|inch` on part 'blade'" in msg
    assert not (tmp_path / "out" / "raw").exists()
    report("mesh: a part drawn in inches, unit: auto (read as metres: 5.9 m long)",
           "ScaleError before Blender: the part cannot fit the frame; its size under each unit "
           "(inch: 0.15 m) and the fix `unit: cm|mm|inch`", "n/a")


# -------------------------------------------------------------------------------------- COCO
def coco_dict() -> dict:
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                       {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 30, 30]}],
            "categories": [{"id": 1, "name": "blade"}]}


def _mutate(what: str) -> dict:
    d = coco_dict()
    if what == "missing":
        del d["annotations"]
    elif what == "negative":
        d["annotations"][0]["bbox"] = [10, 10, -20, 20]
    elif what == "outside":
        d["annotations"][1]["bbox"] = [90, 70, 30, 30]
    elif what == "category":
        d["annotations"][0]["category_id"] = 7
    elif what == "duplicate":
        d["images"][1]["id"] = 1
    elif what == "traversal":
        d["images"][0]["file_name"] = "../../etc/passwd"
    return d


@pytest.mark.parametrize("what, label, expected", [
    ("missing", "COCO file missing the 'annotations' key", "missing or non-list key 'annotations'"),
    ("negative", "COCO box with a negative width", "non-positive or non-finite box"),
    ("outside", "COCO box outside its image", "lies outside image 2"),
    ("category", "COCO annotation with an unknown category", "unknown category 7"),
    ("duplicate", "COCO file with duplicate image ids", "duplicate image ids [1]"),
    ("traversal", "COCO file_name with path traversal (../../etc/passwd)", "escapes the image root"),
    ("json", "COCO file that is not JSON (truncated)", "not valid JSON"),
])
def test_malformed_coco_is_one_clear_error(tmp_path, what, label, expected, report):
    path = tmp_path / "annotations.json"
    text = json.dumps(_mutate(what))
    path.write_text(text[: len(text) // 2] if what == "json" else text)
    with pytest.raises(CocoError) as err:
        CocoDataset.load(path)
    msg = one_line(err.value, str(path), expected)
    report(f"data: {label}", f"CocoError: {short(msg)}", "n/a")


# ------------------------------------------------------------------------------ label imports
@pytest.fixture()
def manifest():
    from synthloop.data.coco import CocoImage
    from synthloop.data.label_export import ExportManifest

    images = (CocoImage(11, "000011.jpg", 100, 80), CocoImage(12, "000012.jpg", 100, 80))
    return ExportManifest(cycle=2, tool="cvat", model_version="3", pool_md5="abc",
                          class_names=("blade",), images=images, preannotations=())


def cvat_answer() -> dict:
    return {"images": [{"id": 1, "file_name": "000011.jpg", "width": 100, "height": 80}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
            "categories": [{"id": 1, "name": "blade"}]}


@pytest.mark.parametrize("what, edit, expected", [
    ("label import naming an image that was not exported",
     lambda d: (d["images"][0].update(file_name="000099.jpg"), d["annotations"].clear()),
     "unknown image '000099.jpg'"),
    ("label import with path traversal in a file name",
     lambda d: (d["images"][0].update(file_name="../../../etc/passwd"), d["annotations"].clear()),
     "path traversal"),
    ("label import with an annotation on an unknown image id",
     lambda d: d["annotations"][0].update(image_id=42), "refers to image 42"),
])
def test_bad_label_imports_import_nothing(tmp_path, manifest, what, edit, expected, report):
    from synthloop.data.label_import import LabelImportError, load_import

    raw = cvat_answer()
    edit(raw)
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(LabelImportError) as err:
        load_import(path, manifest, tool="cvat")
    msg = one_line(err.value, str(path), expected, "nothing was imported")
    report(f"labels: {what}", f"LabelImportError: {short(msg)}", "n/a",
           "nothing lost: all-or-nothing, the labelled set is unchanged")


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("what, text, expected", [
    ("YAML typo (a tab-indented, unclosed mapping)", "name: demo\nactive: {k: 3\n", "not valid YAML"),
    ("unknown key (a misspelt 'strategy')", None, "stratgy: Extra inputs are not permitted"),
    ("wrong type (k: three)", None, "active.k: Input should be a valid integer"),
    ("impossible range (hdri_strength min > max)", None, "min"),
    ("impossible value (k: 0)", None, "active.k: Input should be greater than or equal to 1"),
])
def test_bad_config_is_one_clear_error(tmp_path, what, text, expected, report):
    import yaml

    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    if "stratgy" in expected:
        cfg["active"]["stratgy"] = cfg["active"].pop("strategy")
    elif "valid integer" in expected:
        cfg["active"]["k"] = "three"
    elif "greater than" in expected:
        cfg["active"]["k"] = 0
    elif "range" in what:
        cfg["val"]["hdri_strength"] = {"min": 3.0, "max": 0.5}
    path = tmp_path / "pipeline.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value).splitlines()[0] if "YAML" in what else one_line(err.value)
    assert str(path) in msg and expected in str(err.value), str(err.value)
    report(f"config: {what}", f"ConfigError: {short(msg)}", "n/a")
