"""Parametric fastener CAD: closed meshes of the right size in millimetres, the `synthloop cad`
command, `cad:` parts in the config, and the render stage generating them into the workspace."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from synthloop.config import CadSpec, ConfigError, PartSpec, load_config
from synthloop.synthesis.fasteners import (FastenerError, cad_key, fastener_dimensions,
                                           fastener_mesh, fastener_stl_files)
from synthloop.synthesis.meshes import (check_solid, mesh_info, prepare_part_meshes, read_stl,
                                        resolve_cad_parts)

ROOT = Path(__file__).resolve().parents[2]


def _volume(tri: np.ndarray) -> float:
    """Signed volume of (F, 3, 3) triangles: positive when wound outward."""
    tri = tri.astype(np.float64)
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)


def _closed_and_outward(v: np.ndarray, f: np.ndarray) -> bool:
    """Every directed edge once, and its reverse once: one closed, consistently wound shell."""
    edges = Counter((int(a), int(b))
                    for t in f for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))
    return all(n == 1 and edges[(b, a)] == 1 for (a, b), n in edges.items())


# ISO 4017 / 7089 nominal dimensions (mm): bbox is across corners x across flats x (k + L)
@pytest.mark.parametrize("kind, size, box, volume", [
    ("hex-bolt", "M10x60", (16 * 2 / np.sqrt(3), 16.0, 6.4 + 60),
     np.sqrt(3) / 2 * 16**2 * 6.4 + np.pi * 5**2 * 60),
    ("hex-bolt", "M8x40", (13 * 2 / np.sqrt(3), 13.0, 5.3 + 40),
     np.sqrt(3) / 2 * 13**2 * 5.3 + np.pi * 4**2 * 40),
    ("washer", "M8", (16.0, 16.0, 1.6), np.pi * (8**2 - 4.2**2) * 1.6),
    ("washer", "M10", (20.0, 20.0, 2.0), np.pi * (10**2 - 5.25**2) * 2.0),
])
def test_fastener_is_a_closed_solid_of_the_right_size(tmp_path, kind, size, box, volume):
    v, f = fastener_mesh(kind, size)
    assert _closed_and_outward(v, f)
    np.testing.assert_allclose(v.max(0) - v.min(0), box, rtol=1e-6)
    assert _volume(v[f]) == pytest.approx(volume, rel=0.01)  # 48-gon vs circle: -0.3 %

    path = fastener_stl_files(kind, [size], tmp_path)[0]
    tri = read_stl(path)
    check_solid(path, tri)  # the same check every part mesh passes before Blender starts
    np.testing.assert_allclose(tri.reshape(-1, 3).max(0) - tri.reshape(-1, 3).min(0), box,
                               rtol=1e-5)
    assert _volume(tri) == pytest.approx(volume, rel=0.01)
    assert mesh_info(path)["format"] == "stl"


@pytest.mark.parametrize("size, threads, threaded", [
    ("M10x80", "full", 80.0), ("M10x80", "iso", 26.0), ("M10x20", "iso", 20.0),
    ("M6x20", "full", 20.0),
])
def test_threaded_bolts_are_closed_grooved_and_keep_their_size(tmp_path, size, threads,
                                                               threaded):
    plain_v, plain_f = fastener_mesh("hex-bolt", size)
    v, f = fastener_mesh("hex-bolt", size, threads)
    assert _closed_and_outward(v, f)
    np.testing.assert_allclose(v.max(0) - v.min(0), plain_v.max(0) - plain_v.min(0), rtol=1e-9)
    d = fastener_dimensions("hex-bolt", size)["d"]
    pitch = {6: 1.0, 10: 1.5}[int(d)]
    r = np.hypot(v[:, 0], v[:, 1])
    shank = v[:, 2] < -1e-9
    roots = shank & (r > 0) & (r < d / 2 - 0.5 * pitch)  # groove bottoms, not the tip
    assert roots.any()
    z_roots = np.unique(np.round(v[roots, 2], 6))
    np.testing.assert_allclose(np.diff(z_roots), pitch, rtol=1e-6)  # one groove a pitch
    assert z_roots.max() - z_roots.min() == pytest.approx(threaded - pitch, abs=pitch)
    # the grooves take ~ pi * d * depth / 2 per unit length out of the shank
    removed = _volume(plain_v[plain_f]) - _volume(v[f])
    assert removed == pytest.approx(np.pi * d * 0.6134 * pitch / 2 * threaded, rel=0.1)
    assert cad_key("hex-bolt", [size], threads) != cad_key("hex-bolt", [size])
    path = fastener_stl_files("hex-bolt", [size], tmp_path, threads)[0]
    check_solid(path, read_stl(path))


def test_threads_only_for_bolts_and_known_styles():
    assert CadSpec(fastener="hex-bolt", sizes=["M10x40"], threads="iso").threads == "iso"
    with pytest.raises(ValueError, match="only hex-bolt parts have threads"):
        CadSpec(fastener="washer", sizes=["M8"], threads="full")
    with pytest.raises(ValueError):
        CadSpec(fastener="hex-bolt", sizes=["M8x40"], threads="fine")
    with pytest.raises(FastenerError, match=r"unknown threads 'fine' \(known: none, full, iso\)"):
        fastener_mesh("hex-bolt", "M8x40", "fine")


@pytest.mark.parametrize("kind, size, message", [
    ("hex-bolt", "M11x60", r"unknown hex-bolt size 'M11x60' \(known: M<d>x<L> with d in M3, "),
    ("hex-bolt", "M10x61", r"L \(mm\) in 6, 8, .* 200"),
    ("hex-bolt", "M10", "unknown hex-bolt size 'M10'"),
    ("washer", "M9", r"unknown washer size 'M9' \(known: M3, M4, .*M24"),
    ("nut", "M10", r"unknown fastener kind 'nut' \(known: hex-bolt, washer\)"),
])
def test_unknown_sizes_and_kinds_list_the_known_ones(kind, size, message):
    with pytest.raises(FastenerError, match=message):
        fastener_dimensions(kind, size)


def test_generated_files_are_cached_by_their_parameters(tmp_path):
    first = fastener_stl_files("washer", ["M8", "M10"], tmp_path)
    assert [p.name for p in first] == ["washer_M8.stl", "washer_M10.stl"]
    assert first[0].parent == tmp_path / cad_key("washer", ["M8", "M10"])
    stamp = first[0].stat().st_mtime_ns
    assert fastener_stl_files("washer", ["m8", "M10"], tmp_path) == first  # same key: cached
    assert first[0].stat().st_mtime_ns == stamp
    other = fastener_stl_files("washer", ["M8"], tmp_path)
    assert other[0].parent != first[0].parent  # other parameters: another folder


# ---------------------------------------------------------------------------------------- CLI
def _cli(*args: str):
    from synthloop.cli import app

    return CliRunner().invoke(app, list(args))


def test_cad_command_writes_closed_stl_files(tmp_path):
    res = _cli("cad", "fastener", "hex-bolt", "M10x60", "M10x40", "--out", str(tmp_path / "m"))
    assert res.exit_code == 0, res.output
    assert "box 18.48 x 16.00 x 66.40 mm" in res.output
    for name in ("hex_bolt_M10x60.stl", "hex_bolt_M10x40.stl"):
        path = tmp_path / "m" / name
        check_solid(path, read_stl(path))
    res = _cli("cad", "fastener", "washer", "M8", "--out", str(tmp_path / "m"), "--quiet")
    assert res.exit_code == 0 and res.output.strip() == str(tmp_path / "m" / "washer_M8.stl")


def test_cad_command_cuts_threads(tmp_path):
    plain = _cli("cad", "fastener", "hex-bolt", "M10x40", "--out", str(tmp_path / "a"))
    cut = _cli("cad", "fastener", "hex-bolt", "M10x40", "--threads", "iso",
               "--out", str(tmp_path / "b"))
    assert plain.exit_code == cut.exit_code == 0, cut.output
    assert "box 18.48 x 16.00 x 46.40 mm" in cut.output and "threads iso" in cut.output
    tri = read_stl(tmp_path / "b" / "hex_bolt_M10x40.stl")
    check_solid(tmp_path / "b" / "hex_bolt_M10x40.stl", tri)
    assert len(tri) > 4 * len(read_stl(tmp_path / "a" / "hex_bolt_M10x40.stl"))
    bad = _cli("cad", "fastener", "washer", "M8", "--threads", "full", "--out", str(tmp_path))
    assert bad.exit_code == 2 and "only hex-bolt" in bad.output
    bad = _cli("cad", "fastener", "hex-bolt", "M8x40", "--threads", "fine",
               "--out", str(tmp_path / "c"))
    assert bad.exit_code == 2 and "unknown --threads 'fine'" in bad.output
    assert not (tmp_path / "c").exists()  # nothing written


def test_cad_command_rejects_unknown_kinds_and_sizes(tmp_path):
    res = _cli("cad", "fastener", "washer", "M8", "M9", "--out", str(tmp_path))
    assert res.exit_code == 2 and "unknown washer size 'M9'" in res.output
    assert "M3, M4" in res.output
    assert not list(tmp_path.iterdir())  # nothing written when one size is wrong
    res = _cli("cad", "fastener", "nut", "M8", "--out", str(tmp_path))
    assert res.exit_code == 2 and "known: hex-bolt, washer" in res.output


def test_cad_help_lists_kinds_and_sizes():
    res = _cli("cad", "fastener", "--help")
    assert res.exit_code == 0
    for word in ("hex-bolt", "washer", "M10x60", "millimetres", "cad:"):
        assert word in res.output


# ------------------------------------------------------------------------------------- config
def test_config_accepts_cad_parts_and_refuses_both_or_neither():
    part = PartSpec.model_validate({"name": "Bolt", "cad": {"fastener": "hex-bolt",
                                                            "sizes": ["M10x40", "M10x60"]}})
    assert part.cad == CadSpec(fastener="hex-bolt", sizes=["M10x40", "M10x60"])
    with pytest.raises(ValueError, match="exactly one of 'mesh', 'procedural' or 'cad'"):
        PartSpec.model_validate({"name": "Bolt", "mesh": "bolt.stl",
                                 "cad": {"fastener": "washer", "sizes": ["M8"]}})
    with pytest.raises(ValueError, match="exactly one of 'mesh', 'procedural' or 'cad'"):
        PartSpec(name="Bolt")
    with pytest.raises(ValueError, match="unknown washer size 'M7'"):
        PartSpec.model_validate({"name": "W", "cad": {"fastener": "washer", "sizes": ["M7"]}})
    with pytest.raises(ValueError, match="repeat a size"):
        CadSpec(fastener="washer", sizes=["M8", "m8"])
    with pytest.raises(ValueError, match="millimetres"):
        PartSpec.model_validate({"name": "W", "unit": "m",
                                 "cad": {"fastener": "washer", "sizes": ["M8"]}})
    with pytest.raises(ValueError, match="fastener"):
        CadSpec.model_validate({"fastener": "nut", "sizes": ["M8"]})


def test_bolts_pipeline_needs_nothing_outside_the_repository():
    cfg = load_config(ROOT / "pipelines" / "bolts.yaml")
    assert [p.cad.fastener for p in cfg.parts] == ["hex-bolt", "washer"]
    for real in (cfg.pool, cfg.val):
        assert real.path.is_relative_to(ROOT / "datasets" / "bolts_real") and real.path.is_dir()


def test_bolts_oblique_scene_overlay_loads_and_makes_its_cad(tmp_path):
    base = load_config(ROOT / "pipelines" / "bolts.yaml")
    cfg = load_config(ROOT / "pipelines" / "bolts.yaml",
                      overlays=[ROOT / "pipelines" / "overlays" / "bolts_oblique_scene.yaml"])
    assert (cfg.synthetic.width, cfg.synthetic.height) == (1280, 720)
    assert cfg.synthetic.camera_elevation_deg.max < base.synthetic.camera_elevation_deg.min + 15
    assert cfg.pool == base.pool and cfg.val == base.val  # only the renders change
    assert cfg.workspace != base.workspace  # and they are kept apart from the shipped demo's
    # its parts come out smaller than in the photos: pretraining scales its patches up
    lo, hi = cfg.pretrain.crop_scale
    assert 1.0 < lo < hi
    sizes = {p.name: p.cad.sizes for p in cfg.parts}
    assert "M8x16" in sizes["Bolt"] and "M16" in sizes["Washer"]
    for part in cfg.parts:  # every size is one the generator knows: a closed solid each
        for path in fastener_stl_files(part.cad.fastener, part.cad.sizes, tmp_path / part.name):
            check_solid(path, read_stl(path))


def test_threaded_overlay_changes_only_the_bolts_threads():
    overlays = [ROOT / "pipelines" / "overlays" / n
                for n in ("bolts_oblique_scene.yaml", "bolts_printed_clutter.yaml")]
    base = load_config(ROOT / "pipelines" / "bolts.yaml", overlays=overlays)
    cfg = load_config(ROOT / "pipelines" / "bolts.yaml",
                      overlays=[*overlays, ROOT / "pipelines" / "overlays" / "bolts_threaded.yaml"])
    assert [p.cad.threads for p in cfg.parts] == ["iso", "none"]
    for a, b in zip(base.parts, cfg.parts):
        assert (a.name, a.cad.sizes, a.materials) == (b.name, b.cad.sizes, b.materials)
    assert cfg.synthetic == base.synthetic


def test_bad_cad_in_a_pipeline_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"parts\.0\.cad.*unknown hex-bolt size 'M10x7'"):
        load_config(ROOT / "pipelines" / "bolts.yaml",
                    overrides=["parts=[{name: Bolt, cad: {fastener: hex-bolt, sizes: [M10x7]}}]"])


# ------------------------------------------------------------------------- render stage, lineage
def test_render_stage_generates_cad_into_the_workspace(tmp_path, monkeypatch):
    """The render stage hands Blender mesh files under <workspace>/cad/<key>/ (no render here:
    ``render_domain`` is replaced by one that records its parts and prepares their meshes)."""
    import synthloop.synthesis.render as synthesis_render
    from synthloop import lineage
    from synthloop.stages import render as render_stage

    cfg = load_config(ROOT / "pipelines" / "bolts.yaml", overrides=[f"workspace={tmp_path / 'ws'}"])
    seen = {}

    class Rendered(Exception):
        pass

    def fake_render_domain(domain, parts, class_names, out_dir, **kwargs):
        seen["parts"], seen["meshes"] = parts, prepare_part_meshes(parts, Path(out_dir) / "meshes")
        raise Rendered

    monkeypatch.setattr(synthesis_render, "render_domain", fake_render_domain)
    with pytest.raises(Rendered):
        render_stage.run(cfg, "synthetic", progress=False)
    cad = (tmp_path / "ws" / "cad").resolve()
    meshes = seen["meshes"]
    # one mesh per size of the pipeline file, in name order within each part
    sizes = {p.name: p.cad.sizes for p in cfg.parts}
    assert len(sizes["Bolt"]) >= 4 and len(sizes["Washer"]) >= 2
    assert [(m["name"], Path(m["path"]).name) for m in meshes] == (
        [("Bolt", f"hex_bolt_{s}.stl") for s in sorted(sizes["Bolt"])]
        + [("Washer", f"washer_{s}.stl") for s in sorted(sizes["Washer"])])
    assert all(Path(m["path"]).parent.parent == cad and m["unit"] == "mm" for m in meshes)
    assert len({Path(m["path"]).parent for m in meshes}) == 2  # one folder per part's parameters
    assert [p.materials for p in seen["parts"]] == [p.materials for p in cfg.parts]

    # lineage hashes the same generated files; other sizes are other CAD
    hashes = lineage.cad_hashes(cfg)
    assert set(hashes) == {"Bolt", "Washer"} and "missing" not in hashes.values()
    changed = load_config(ROOT / "pipelines" / "bolts.yaml", overrides=[
        f"workspace={tmp_path / 'ws'}",
        "parts=[{name: Bolt, cad: {fastener: hex-bolt, sizes: [M10x40]}},"
        f" {{name: Washer, cad: {{fastener: washer, sizes: [{', '.join(sizes['Washer'])}]}}}}]"])
    assert lineage.cad_changes(hashes, lineage.cad_hashes(changed)).keys() == {"Bolt"}


def test_direct_render_callers_get_cad_meshes_beside_the_output(tmp_path):
    """Without the stage (benchmarks, Dask flows) cad parts are generated under the mesh folder."""
    part = PartSpec.model_validate({"name": "W", "cad": {"fastener": "washer", "sizes": ["M8"]}})
    out = prepare_part_meshes([part], tmp_path / "meshes")
    assert Path(out[0]["path"]).is_relative_to((tmp_path / "meshes" / "cad").resolve())
    assert resolve_cad_parts([part], tmp_path / "cad")[0].mesh == (
        tmp_path / "cad" / cad_key("washer", ["M8"]) / "*.stl")
