"""render_domain fails before Blender starts when its inputs are wrong."""

import pytest

from synthloop.config import DomainConfig, PartSpec, RenderConfig
from synthloop.synthesis.meshes import MeshError
from synthloop.synthesis.render import RenderError, find_blender_python, render_domain

BLADE = [PartSpec(name="blade", procedural="turbine_blade")]
TINY = DomainConfig(num_images=2, width=64, height=48, samples=1)
NO_BLENDER = RenderConfig(blender_python="/no/such/python")


def test_missing_and_empty_meshes(tmp_path):
    parts = [PartSpec(name="gone", mesh=tmp_path / "gone.stl")]
    with pytest.raises(MeshError, match="gone.stl: file not found"):
        render_domain(TINY, parts, ["gone"], tmp_path / "out", render_cfg=NO_BLENDER)
    (tmp_path / "empty.ply").write_bytes(b"")
    parts = [PartSpec(name="empty", mesh=tmp_path / "empty.ply")]
    with pytest.raises(MeshError, match="empty.ply: file is empty"):
        render_domain(TINY, parts, ["empty"], tmp_path / "out", render_cfg=NO_BLENDER)


def test_bad_presets_and_names(tmp_path):
    bad = TINY.model_copy(update={"materials": ["gold_leaf"]})
    with pytest.raises(ValueError, match="unknown material preset"):
        render_domain(bad, BLADE, ["blade"], tmp_path, render_cfg=NO_BLENDER)
    bad = TINY.model_copy(update={"backgrounds": "procedural:space"})
    with pytest.raises(ValueError, match="known: procedural:workshop"):
        render_domain(bad, BLADE, ["blade"], tmp_path, render_cfg=NO_BLENDER)
    with pytest.raises(ValueError, match="must match the part names"):
        render_domain(TINY, BLADE, ["bolt"], tmp_path, render_cfg=NO_BLENDER)


def test_missing_interpreter_is_named(tmp_path, monkeypatch):
    with pytest.raises(RenderError, match="render.blender_python='/no/such/python'"):
        render_domain(TINY, BLADE, ["blade"], tmp_path, render_cfg=NO_BLENDER)
    monkeypatch.setenv("SYNTHLOOP_BLENDER_PYTHON", "/also/missing")
    with pytest.raises(RenderError, match="SYNTHLOOP_BLENDER_PYTHON"):
        find_blender_python(RenderConfig())
