"""STEP import through OpenCascade: units read from the file, tessellation at the configured
tolerances, assemblies as one part or one class per named solid, a cache keyed by file hash."""

import numpy as np
import pytest

from cad_support import bolt, write_assembly, write_inch_bracket
from synthloop.config import ConfigError, PartSpec, load_config
from synthloop.synthesis.cad_import import (CadImportError, import_cad, read_cad, tessellate,
                                            write_step)
from synthloop.synthesis.meshes import check_solid, prepare_part_meshes, read_stl
from synthloop.synthesis.scale_check import part_sizes


def test_inch_file_is_read_in_inches_and_cached_by_hash(tmp_path):
    step = write_inch_bracket(tmp_path / "bracket.step")
    assert "CONVERSION_BASED_UNIT('INCH'" in step.read_text()
    cad = read_cad(step)
    assert (cad.unit, cad.unit_m, cad.names) == ("inch", 0.0254, ["bracket"])
    first = import_cad(step, tmp_path / "cache")
    assert first["file_unit"] == "inch" and not first["cached"]
    np.testing.assert_allclose(first["extent_mm"], [50.8, 25.4, 12.7], atol=1e-3)
    again = import_cad(step, tmp_path / "cache")
    assert again["cached"] and again["stl"] == first["stl"]
    # the STL is in millimetres whatever the file's unit
    tri = read_stl(first["stl"]).reshape(-1, 3)
    np.testing.assert_allclose(tri.max(0) - tri.min(0), [50.8, 25.4, 12.7], atol=1e-3)
    # a unit override reads the file's numbers (2 x 1 x 0.5) in that unit: a new cache entry
    as_mm = import_cad(step, tmp_path / "cache", unit="mm")
    assert as_mm["stl"] != first["stl"]
    np.testing.assert_allclose(as_mm["extent_mm"], [2.0, 1.0, 0.5], atol=1e-4)
    # a changed file is a new key, not a stale hit
    write_step(step, {"bracket": bolt()}, unit="inch")
    assert import_cad(step, tmp_path / "cache")["stl"] != first["stl"]


def test_assembly_one_part_or_one_named_solid(tmp_path):
    step = write_assembly(tmp_path / "asm.step")
    cad = read_cad(step)
    assert cad.unit == "mm" and cad.names == ["bolt", "washer"]
    whole = import_cad(step, tmp_path / "c")
    np.testing.assert_allclose(whole["extent_mm"], [78.0, 20.0, 46.0], atol=0.05)
    washer = import_cad(step, tmp_path / "c", solid="washer")
    np.testing.assert_allclose(washer["extent_mm"], [20.0, 20.0, 2.0], atol=0.05)
    the_bolt = import_cad(step, tmp_path / "c", solid="bolt")
    np.testing.assert_allclose(the_bolt["extent_mm"], [16.0, 16.0, 46.0], atol=0.05)
    for got in (whole, washer, the_bolt):
        check_solid(got["stl"], read_stl(got["stl"]))  # closed, nonzero volume
    with pytest.raises(CadImportError, match="no solid named 'nut'.*bolt, washer"):
        import_cad(step, tmp_path / "c", solid="nut")


def test_tolerances_control_the_tessellation(tmp_path):
    shape = bolt()
    coarse = tessellate(shape, linear_deflection_mm=0.5, angular_deflection_deg=30)
    fine = tessellate(shape, linear_deflection_mm=0.01, angular_deflection_deg=5)
    assert len(fine) > 3 * len(coarse)
    # the chord height bounds how far the head's rim vertices are from the true 8 mm radius
    rim = np.linalg.norm(coarse.reshape(-1, 3)[:, :2], axis=1)
    assert rim.max() <= 8.0 + 1e-6 and rim[rim > 7.0].min() >= 8.0 - 0.5


def test_step_parts_render_from_a_cached_mm_stl_with_their_file_unit(tmp_path):
    step = write_inch_bracket(tmp_path / "bracket.step")
    parts = [PartSpec(name="bracket", mesh=step,
                      tessellation={"linear_deflection_mm": 0.2, "angular_deflection_deg": 20})]
    meshes = prepare_part_meshes(parts, tmp_path / "meshes")
    assert meshes[0]["unit"] == "mm" and meshes[0]["path"].endswith(".stl")
    size = part_sizes(meshes)[0]
    assert size["file_unit"] == "inch" and size["unit_used"] == "inch"
    np.testing.assert_allclose(size["extent"], [2.0, 1.0, 0.5], atol=1e-4)  # file numbers
    np.testing.assert_allclose(size["size_m"], [0.0508, 0.0254, 0.0127], atol=1e-6)


def test_config_accepts_step_parts_and_rejects_a_solid_without_one(tmp_path):
    step = write_assembly(tmp_path / "asm.step")
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"name: t\nparts:\n  - {{name: washer, mesh: {step.name}, solid: washer}}\n"
                  "synthetic: {num_images: 1}\npool: {num_images: 1}\nval: {num_images: 1}\n")
    cfg = load_config(ok)
    assert cfg.parts[0].mesh == step and cfg.parts[0].tessellation.linear_deflection_mm == 0.1
    bad = tmp_path / "bad.yaml"
    bad.write_text(ok.read_text().replace(step.name, "washer.stl"))
    with pytest.raises(ConfigError, match="'solid' names a solid of a STEP/IGES mesh"):
        load_config(bad)


def test_a_file_without_solids_or_not_step_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "broken.step"
    bad.write_text("ISO-10303-21;\nHEADER;\nENDSEC;\nEND-ISO-10303-21;\n")
    with pytest.raises(CadImportError, match="broken.step"):
        import_cad(bad, tmp_path / "c")


def test_iges_unit_comes_from_its_global_section(tmp_path):
    from OCP.IGESControl import IGESControl_Controller, IGESControl_Writer
    from OCP.Interface import Interface_Static

    IGESControl_Controller.Init_s()
    Interface_Static.SetIVal_s("write.iges.brep.mode", 1)  # solids, not trimmed surfaces
    writer = IGESControl_Writer("IN", 1)
    writer.AddShape(bolt())
    writer.ComputeModel()
    assert writer.Write(str(tmp_path / "bolt.igs"))
    got = import_cad(tmp_path / "bolt.igs", tmp_path / "c")
    assert got["file_unit"] == "inch"
    np.testing.assert_allclose(got["extent_mm"], [16.0, 16.0, 46.0], atol=0.05)


def test_cad_inspect_shows_the_unit_and_each_named_solid(tmp_path):
    from typer.testing import CliRunner

    from synthloop.cli import app

    res = CliRunner().invoke(app, ["cad", "inspect", str(write_assembly(tmp_path / "a.step"))])
    assert res.exit_code == 0, res.output
    assert "unit mm (0.001 m), 2 solid(s)" in res.output
    assert "washer: 20 x 20 x 2 mm = 0.02 x 0.02 x 0.002 m" in res.output
    res = CliRunner().invoke(app, ["cad", "inspect", str(tmp_path / "none.step")])
    assert res.exit_code == 2 and "file not found" in res.output
