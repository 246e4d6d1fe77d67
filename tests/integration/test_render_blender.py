"""Real Cycles renders at toy size: COCO validity, boxes equal to the instance maps, resume."""

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthloop.config import DomainConfig, IntRange, PartSpec, RenderConfig
from synthloop.data.coco import CocoDataset
from synthloop.synthesis.composite import mask_box_xywh
from synthloop.synthesis.render import RenderError, find_blender_python, render_domain

pytestmark = pytest.mark.render

PARTS = [PartSpec(name="blade", procedural="turbine_blade")]
DOMAIN = DomainConfig(num_images=3, seed=11, width=64, height=48, samples=1,
                      distractors=IntRange(min=1, max=3), parts_per_image=IntRange(min=1, max=2),
                      min_visibility=0.0)


@pytest.fixture(scope="module")
def render_cfg():
    try:
        python = find_blender_python(RenderConfig())
    except RenderError as exc:
        pytest.skip(f"render venv missing: {exc}")
    if subprocess.run([python, "-c", "import bpy"], capture_output=True).returncode != 0:
        pytest.skip(f"{python} cannot import bpy (run `make setup`)")
    return RenderConfig(blender_python=python, workers=2, shard_size=2)


def _boxes_from_maps(out):
    boxes = {}
    for i in range(DOMAIN.num_images):
        ids = np.load(out / "raw" / f"{i:06d}.ids.npz")["ids"]
        for pid in np.unique(ids):
            if 0 < pid < 1000:  # parts; distractors are 1001..
                boxes[(i + 1, int(pid))] = mask_box_xywh(ids == pid)
    return boxes


def test_render_coco_boxes_and_resume(tmp_path, render_cfg):
    out = tmp_path / "synthetic"
    ds = render_domain(DOMAIN, PARTS, ["blade"], out, render_cfg=render_cfg, progress=False)
    loaded = CocoDataset.load(out / "annotations.json")
    assert len(loaded.images) == 3 and loaded.class_names == ["blade"]
    for im in loaded.images:
        with Image.open(loaded.image_path(im)) as img:
            assert img.size == (64, 48) and img.format == "JPEG"
        assert {"camera", "seed", "background", "hdri"} <= set(im.meta)
    ann_boxes = {(a.image_id, a.meta["instance"]): a.bbox for a in loaded.annotations}
    assert ann_boxes == _boxes_from_maps(out)  # tight visible boxes, distractors excluded
    assert all(0 < a.meta["visibility"] <= 1 and a.category_id == 1 for a in loaded.annotations)
    assert len(ds.annotations) == len(loaded.annotations) > 0

    # resume: drop one finished image; only that one renders again
    markers = {p.name: p.stat().st_mtime_ns for p in (out / "raw").glob("00000?.json")}
    for suffix in (".json", ".png", ".ids.npz"):
        (out / "raw" / f"000001{suffix}").unlink()
    (out / "images" / "000001.jpg").unlink()
    again = render_domain(DOMAIN, PARTS, ["blade"], out, render_cfg=render_cfg, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "raw").glob("00000?.json")}
    assert [n for n in after if after[n] != markers[n]] == ["000001.json"]
    assert (out / "images" / "000001.jpg").is_file()
    assert [a.bbox for a in again.annotations] == [a.bbox for a in loaded.annotations]

    # nothing missing: no worker starts at all
    assert render_domain(DOMAIN, PARTS, ["blade"], out, render_cfg=RenderConfig(
        blender_python="/not/needed"), progress=False).to_dict() == again.to_dict()


def test_interrupted_shard_resumes(tmp_path, render_cfg):
    """A worker killed mid-shard: the rerun renders only the images it had not finished."""
    import threading

    from synthloop.synthesis.render import plan_shards
    from synthloop.synthesis.shards import render_shard

    domain = DOMAIN.model_copy(update={"num_images": 4, "width": 200, "height": 150,
                                       "samples": 32})  # slow enough to stop after one
    one = RenderConfig(blender_python=render_cfg.blender_python, workers=1, shard_size=4)
    [job] = plan_shards(domain, PARTS, tmp_path, render_cfg=one)
    stop = threading.Event()
    with pytest.raises(RenderError, match="cancelled after [123]/4 images"):
        render_shard(job, on_image=lambda record: stop.set(), cancel=stop, poll_s=0.02)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "raw").glob("00000?.json")}
    assert 1 <= len(before) < 4
    ds = render_domain(domain, PARTS, ["blade"], tmp_path, render_cfg=one, progress=False)
    assert len(ds.images) == 4
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "raw").glob("00000?.json")}
    assert {n: after[n] for n in before} == before  # finished images were not rendered again
    assert len(after) == 4


def _write_meshes(folder):
    """The blade as OBJ in millimetres (no UVs), ASCII PLY and binary glTF in metres."""
    import json
    import struct

    from synthloop.synthesis.meshes import turbine_blade

    v, f = turbine_blade(sections=6, profile_points=8)
    lines = [f"v {x * 1000} {y * 1000} {z * 1000}" for x, y, z in v]
    (folder / "blade_mm.obj").write_text("\n".join(lines + [f"f {a + 1} {b + 1} {c + 1}"
                                                           for a, b, c in f]))
    head = ["ply", "format ascii 1.0", f"element vertex {len(v)}", "property float x",
            "property float y", "property float z", f"element face {len(f)}",
            "property list uchar int vertex_indices", "end_header"]
    body = [f"{x} {y} {z}" for x, y, z in v] + [f"3 {a} {b} {c}" for a, b, c in f]
    (folder / "blade.ply").write_text("\n".join(head + body) + "\n")
    vb, ib = v.astype("<f4").tobytes(), f.astype("<u4").tobytes()
    doc = {"asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
           "buffers": [{"byteLength": len(vb) + len(ib)}],
           "bufferViews": [{"buffer": 0, "byteLength": len(vb)},
                           {"buffer": 0, "byteOffset": len(vb), "byteLength": len(ib)}],
           "accessors": [{"bufferView": 0, "componentType": 5126, "count": len(v), "type": "VEC3",
                          "min": v.min(0).tolist(), "max": v.max(0).tolist()},
                         {"bufferView": 1, "componentType": 5125, "count": f.size,
                          "type": "SCALAR"}]}
    js = json.dumps(doc).encode().ljust((len(json.dumps(doc)) + 3) // 4 * 4, b" ")
    bin_ = (vb + ib).ljust((len(vb) + len(ib) + 3) // 4 * 4, b"\0")
    glb = (struct.pack("<4sII", b"glTF", 2, 28 + len(js) + len(bin_))
           + struct.pack("<I4s", len(js), b"JSON") + js + struct.pack("<I4s", len(bin_), b"BIN\0")
           + bin_)
    (folder / "blade.glb").write_bytes(glb)


def _studio_hdri(python: str, folder):
    """Copy one of Blender's studio-light EXRs into ``folder`` (a user HDRI folder)."""
    out = subprocess.run([python, "-c", "import bpy; print(bpy.utils.system_resource("
                          "'DATAFILES', path='studiolights/world'))"], capture_output=True, text=True)
    src = sorted(Path(out.stdout.strip().splitlines()[-1]).glob("*.exr"))[0]
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    return src.name


def test_file_formats_textures_user_distractors_and_hdris(tmp_path, render_cfg):
    """OBJ in mm (no UVs), PLY and GLB in m; an image texture (box-projected: no UVs needed),
    a user distractor mesh with random procedural textures, a user HDRI folder."""
    import json

    _write_meshes(tmp_path)
    Image.fromarray((np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)).save(
        tmp_path / "checker.png")
    hdri = _studio_hdri(render_cfg.blender_python, tmp_path / "hdris")
    parts = [PartSpec(name="obj", mesh=tmp_path / "blade_mm.obj",
                      materials=[f"texture:{tmp_path / 'checker.png'}"]),
             PartSpec(name="ply", mesh=tmp_path / "blade.ply"),
             PartSpec(name="glb", mesh=tmp_path / "blade.glb")]
    domain = DOMAIN.model_copy(update={
        "num_images": 2, "parts_per_image": IntRange(min=3, max=3),
        "distractors": IntRange(min=2, max=2), "distractor_meshes": [tmp_path / "blade.ply"],
        "distractor_materials": ["random_texture"], "hdris": str(tmp_path / "hdris")})
    one = render_cfg.model_copy(update={"workers": 1})
    render_domain(domain, parts, ["obj", "ply", "glb"], tmp_path / "out", render_cfg=one,
                  progress=False)
    marker = json.loads((tmp_path / "out" / "raw" / "000000.json").read_text())
    assert marker["part_scales"] == [0.001, 1.0, 1.0]  # auto: the OBJ is in millimetres
    assert all(p["unoccluded_pixels"] > 0 for p in marker["parts"])  # all blade-sized
    assert marker["hdri"] == hdri
    assert [d["shape"] for d in marker["distractors"]] == ["mesh:0", "mesh:0"]


def test_workbench_parts_rest_on_the_table_deterministically(tmp_path, render_cfg):
    import json

    parts = [PartSpec.model_validate({"name": "Bolt", "cad": {
                 "fastener": "hex-bolt", "sizes": ["M10x40", "M10x60", "M10x80", "M10x100"]}}),
             PartSpec.model_validate({"name": "Washer", "cad": {
                 "fastener": "washer", "sizes": ["M8", "M10"]}})]
    # 320 px wide: an M8 washer is ~4 px at 1 m, the least the scale check lets through
    domain = DomainConfig(num_images=1, seed=4, width=320, height=192, samples=1,
                          scene="workbench", parts_per_image=IntRange(min=8, max=8),
                          distractors=IntRange(min=2, max=2), camera_distance={"min": 1, "max": 1},
                          focal_length_mm={"min": 24, "max": 24}, min_visibility=0.0)
    one = render_cfg.model_copy(update={"workers": 1})
    poses = []
    for run in ("a", "b"):
        ds = render_domain(domain, parts, ["Bolt", "Washer"], tmp_path / run, render_cfg=one,
                           progress=False)
        marker = json.loads((tmp_path / run / "raw" / "000000.json").read_text())
        poses.append([p["matrix_world"] for p in marker["parts"]])
    assert poses[0] == poses[1]  # the simulation is deterministic
    on_table = [p for p in marker["parts"] if p["on_table"]]
    assert len(on_table) >= 6
    for p in on_table:  # resting: centre within a bolt head's half-width above the top (z = 0)
        assert 0.0 < p["matrix_world"][2][3] < 0.012
    assert {a.category_id for a in ds.annotations} <= {1, 2} and ds.annotations


def test_printed_distractors_show_their_designs(tmp_path, render_cfg):
    """``printed`` distractors: the host draws the designs the plans use into prints/, the
    worker box-projects them, and the distractors come out busier than plain plastic."""
    import json

    one = render_cfg.model_copy(update={"workers": 1})
    edges = {}
    for material in ("printed", "plastic"):
        domain = DOMAIN.model_copy(update={
            "num_images": 2, "width": 320, "height": 192, "samples": 4, "denoise": True,
            "distractors": IntRange(min=8, max=8), "distractor_materials": [material]})
        out = tmp_path / material
        render_domain(domain, PARTS, ["blade"], out, render_cfg=one, progress=False)
        job = json.loads(next((out / "raw" / "jobs").glob("*.json")).read_text())
        designs = sorted({d["print"] for it in job["images"] for d in it["plan"]["distractors"]
                          if "print" in d})
        assert sorted(p.name for p in (out / "prints").glob("*.png")) == \
            [f"print_{d:03d}.png" for d in designs]
        assert ("prints_dir" in job) == (material == "printed") == bool(designs)
        inside, busy = 0, 0
        for i in range(2):
            ids = np.load(out / "raw" / f"{i:06d}.ids.npz")["ids"]
            grey = np.asarray(Image.open(out / "raw" / f"{i:06d}.png").convert("L"), np.float32)
            step = np.abs(np.diff(grey, axis=1))
            mask = (ids[:, 1:] >= 1001) & (ids[:, 1:] == ids[:, :-1]) & (ids[:, 1:] < 3000)
            inside, busy = inside + mask.sum(), busy + (step[mask] > 20).sum()
        assert inside > 1000, inside  # the distractors are in view
        edges[material] = busy / inside
    assert edges["printed"] > 2 * edges["plastic"], edges


@pytest.mark.slow
def test_shards_map_on_a_dask_cluster(tmp_path, render_cfg):
    """The same shard API on dask.distributed: map render_shard, then merge_shards."""
    distributed = pytest.importorskip("distributed")
    from synthloop.synthesis.render import plan_shards
    from synthloop.synthesis.shards import merge_shards, render_shard

    jobs = plan_shards(DOMAIN, PARTS, tmp_path / "dask", render_cfg=render_cfg)
    assert len(jobs) == 2  # two workers: two balanced shards
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            results = client.gather(client.map(render_shard, jobs, pure=False))
    ds = merge_shards(results, class_names=["blade"], out_dir=tmp_path / "dask")
    local = render_domain(DOMAIN, PARTS, ["blade"], tmp_path / "local", render_cfg=render_cfg,
                          progress=False)
    assert [a.bbox for a in ds.annotations] == [a.bbox for a in local.annotations]
    assert len(ds.images) == DOMAIN.num_images


def test_render_stage_renders_again_what_a_changed_synthetic_section_changes(tmp_path, render_cfg,
                                                                          caplog):
    """A finished data/synthetic is not a reason to skip: the stage reuses the images whose
    per-image key is unchanged (no Blender at all when nothing changed, and not a byte of
    data/synthetic rewritten) and renders again the ones a changed ``synthetic:`` section
    changes, naming the changed keys."""
    from synthloop.config import load_config
    from synthloop.stages import render as render_stage

    root = Path(__file__).parents[2]
    base = [f"workspace={tmp_path / 'ws'}", "synthetic.num_images=3", "synthetic.width=64",
            "synthetic.height=48", "synthetic.samples=1", "synthetic.denoise=false",
            f"render.blender_python={render_cfg.blender_python}"]
    cfg = load_config(root / "pipelines" / "demo.yaml", overrides=base)
    first = render_stage.run(cfg, "synthetic", progress=False)
    assert first.num_images == 3
    seeds = [im.meta["seed"] for im in CocoDataset.load(first.annotations).images]

    idle = load_config(root / "pipelines" / "demo.yaml",
                       overrides=base[:-1] + ["render.blender_python=/not/needed"])
    stamp = Path(first.annotations).stat().st_mtime_ns
    assert render_stage.run(idle, "synthetic", progress=False).md5 == first.md5
    assert Path(first.annotations).stat().st_mtime_ns == stamp  # not rewritten either

    caplog.set_level(logging.WARNING, logger="synthloop.stages.render")
    moved = load_config(root / "pipelines" / "demo.yaml", overrides=base + ["synthetic.seed=7"])
    again = render_stage.run(moved, "synthetic", progress=False)
    assert "synthetic.seed changed since the renders" in caplog.text
    assert again.md5 != first.md5
    reseeded = [im.meta["seed"] for im in CocoDataset.load(again.annotations).images]
    assert len(reseeded) == 3 and set(reseeded).isdisjoint(seeds)
