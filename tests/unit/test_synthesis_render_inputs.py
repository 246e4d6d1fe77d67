"""Bad input stops ``render_domain`` with a one-line error before any Blender starts.

``NO_BLENDER`` points at a missing interpreter: reaching the render would raise RenderError,
so each ValueError below proves the check ran first.
"""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from synthloop.config import ConfigError, DomainConfig, PartSpec, Range, RenderConfig, load_config
from synthloop.synthesis.meshes import mesh_info, turbine_blade, write_stl
from synthloop.synthesis.render import RenderError, find_blender_python, render_domain
from tests_support import ROOT

BLADE = [PartSpec(name="blade", procedural="turbine_blade")]
TINY = DomainConfig(num_images=2, width=64, height=48, samples=1)
NO_BLENDER = RenderConfig(blender_python="/no/such/python")


def _fails(tmp_path, match, *, domain=TINY, parts=BLADE, names=None, exc=ValueError):
    with pytest.raises(exc, match=match) as err:
        render_domain(domain, parts, names or [p.name for p in parts], tmp_path / "out",
                      render_cfg=NO_BLENDER, progress=False)
    assert "\n" not in str(err.value) and not isinstance(err.value, RenderError)
    assert not (tmp_path / "out" / "raw").exists()  # nothing rendered, no job written


def _mesh(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return [PartSpec(name="p", mesh=path)]


def test_missing_and_empty_meshes(tmp_path):
    _fails(tmp_path, "gone.stl: file not found",
           parts=[PartSpec(name="g", mesh=tmp_path / "gone.stl")])
    _fails(tmp_path, "empty.ply: file is empty", parts=_mesh(tmp_path, "empty.ply", b""))
    _fails(tmp_path, "matched no mesh files",
           parts=[PartSpec(name="g", mesh=tmp_path / "bolt_*.stl")])


@pytest.mark.parametrize("name, data, message", [
    ("bad.stl", b"solid x\nendsolid x\n" * 3, "not a valid binary or ASCII STL"),
    ("zero.stl", b"\0" * 84, "STL has no triangles"),
    ("bad.obj", "v 0 0 0\nv 1 0 0\n", "OBJ has 2 vertices and 0 faces"),
    ("bad.ply", "PK\x03\x04 zip", "not a PLY file"),
    ("cut.ply", "ply\nformat ascii 1.0\nelement vertex 3\n", "PLY header has no end_header"),
    ("none.ply", "ply\nformat ascii 1.0\nelement vertex 0\nelement face 0\nend_header\n",
     "PLY has 0 vertices"),
    ("bad.glb", b"NOTGLTF" * 4, "not a GLB file"),
    ("cut.glb", b"glTF" + struct.pack("<II", 2, 999) + b"\0" * 12, "GLB is truncated or corrupt"),
    ("bad.gltf", "{not json", "glTF JSON does not parse"),
    ("empty.gltf", json.dumps({"asset": {"version": "2.0"}}), "glTF has no meshes"),
    ("part.step", "ISO-10303-21;", "OpenCascade cannot read it"),
])
def test_corrupt_meshes_name_the_file_and_the_problem(tmp_path, name, data, message):
    _fails(tmp_path, f"{name}: {message}", parts=_mesh(tmp_path, name, data))


def test_meshes_without_uvs_are_fine(tmp_path):
    obj = tmp_path / "tri.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert mesh_info(obj)["has_uv"] is False
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n")
    assert mesh_info(obj)["has_uv"] is True
    stl = write_stl(tmp_path / "b.stl", *turbine_blade(sections=3, profile_points=6))
    assert mesh_info(stl) == {"path": str(stl), "format": "stl", "has_uv": False}


def test_folders_without_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    _fails(tmp_path, "background folder .*empty has no images",
           domain=TINY.model_copy(update={"backgrounds": str(empty)}))
    _fails(tmp_path, "texture folder .*empty has no files",
           domain=TINY.model_copy(update={"materials": [f"texture:{empty}"]}))
    _fails(tmp_path, "hdri folder .*empty has no files",
           domain=TINY.model_copy(update={"hdris": str(empty)}))
    _fails(tmp_path, "distractor mesh folder .*empty has no files",
           domain=TINY.model_copy(update={"distractor_meshes": [empty]}))
    _fails(tmp_path, "hdris '/nowhere': not a folder",
           domain=TINY.model_copy(update={"hdris": "/nowhere"}))


def test_unknown_presets_and_names(tmp_path):
    _fails(tmp_path, "unknown material preset.*known:.*brushed_steel",
           domain=TINY.model_copy(update={"materials": ["gold_leaf"]}))
    _fails(tmp_path, "unknown distractor material preset",
           domain=TINY.model_copy(update={"distractor_materials": ["gold_leaf"]}))
    _fails(tmp_path, "part 'blade' material preset",
           parts=[PartSpec(name="blade", procedural="turbine_blade", materials=["chrome"])])
    _fails(tmp_path, "known: procedural:workshop",
           domain=TINY.model_copy(update={"backgrounds": "procedural:space"}))
    _fails(tmp_path, "unknown scene preset 'orbit'",
           domain=TINY.model_copy(update={"scene": "orbit"}))
    _fails(tmp_path, "must match the part names", names=["bolt"])


@pytest.mark.parametrize("override, message", [
    ("synthetic.scene=orbit", "synthetic.scene: unknown scene preset 'orbit'; known: floating, workbench"),
    ("synthetic.quality=ultra", "synthetic.quality"),
    ("synthetic.hdri_strength={min: 3, max: 1}", "impossible range: min 3.0 > max 1.0"),
    ("synthetic.distractors={min: 4, max: 2}", "impossible range"),
    ("synthetic.workbench.table_size_m={min: 1, max: 0.5}", "impossible range"),
    ("synthetic.box_mode=fastest", "synthetic.box_mode"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(ROOT / "pipelines" / "paper.yaml", overrides=[override])
    assert "\n" not in str(err.value)


def test_range_values_that_config_cannot_know(tmp_path):
    _fails(tmp_path, "camera_distance.min must be > 0",
           domain=TINY.model_copy(update={"camera_distance": Range(min=0.0, max=1.0)}))


def test_cli_prints_one_line(tmp_path):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "synthloop"), "render", "--config",
         str(ROOT / "pipelines" / "paper.yaml"), "-n", "2", "--workspace", str(tmp_path / "ws"),
         "--set", "synthetic.materials=[unobtainium]"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown material preset")


def test_missing_interpreter_is_named(tmp_path, monkeypatch):
    with pytest.raises(RenderError, match="render.blender_python='/no/such/python'"):
        render_domain(TINY, BLADE, ["blade"], tmp_path, render_cfg=NO_BLENDER, progress=False)
    monkeypatch.setenv("SYNTHLOOP_BLENDER_PYTHON", "/also/missing")
    with pytest.raises(RenderError, match="SYNTHLOOP_BLENDER_PYTHON"):
        find_blender_python(RenderConfig())
