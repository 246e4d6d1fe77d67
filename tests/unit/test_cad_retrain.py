"""A changed CAD retrains itself (stages/cad_retrain.py): which renders a changed part
invalidates, that the rest are left alone, and the renders + real labels training set."""

from __future__ import annotations

import json

import pytest

from synthloop.config import load_config
from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for, union
from synthloop.stages import cad_retrain
from synthloop.synthesis.mesh_io import write_stl
from synthloop.synthesis.meshes import turbine_blade
from synthloop.synthesis.plan import plan_scenes
from tests_support import write_toy_pipeline


def _plan(index, classes):
    return {"index": index, "parts": [{"class_index": c} for c in classes]}


def test_images_showing_a_changed_class_include_mixed_images():
    plans = [_plan(0, [0]), _plan(1, [1]), _plan(2, [0, 1]), _plan(3, [0, 0]), _plan(4, [])]
    assert cad_retrain.images_showing(plans, {1}) == ["000001", "000002"]
    assert cad_retrain.images_showing(plans, {0}) == ["000000", "000002", "000003"]
    assert cad_retrain.images_showing(plans, set()) == []


def _fake_render(out, stems):
    raw = out / "raw"
    (raw / "jobs").mkdir(parents=True)
    (out / "images").mkdir()
    for stem in stems:
        for name in (f"{stem}.json", f"{stem}.png", f"{stem}.ids.npz", f"{stem}.anns.json"):
            (raw / name).write_text(stem)
        (out / "images" / f"{stem}.jpg").write_text(stem)
    (raw / "jobs" / "shard_000000.json").write_text("{}")
    (out / "annotations.json").write_text("{}")


def test_invalidate_deletes_exactly_the_given_renders(tmp_path):
    out = tmp_path / "synthetic"
    _fake_render(out, ["000000", "000001", "000002"])
    assert cad_retrain.rendered_stems(out) == ["000000", "000001", "000002"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    cad_retrain.invalidate(out, ["000001"])
    left = {p for p in out.rglob("*") if p.is_file()}
    assert not any("000001" in p.name for p in left)
    assert not (out / "annotations.json").exists()  # the render stage must run again
    kept = {p for p in before if "000001" not in p.name and p.name != "annotations.json"}
    assert left == kept and all(p.stat().st_mtime_ns == before[p] for p in kept)
    assert cad_retrain.rendered_stems(out) == ["000000", "000002"]
    cad_retrain.invalidate(out, ["000001"])  # idempotent (a rerun after a crash)


def _two_part_config(tmp_path, parts_per_image=(1, 2)):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    write_stl(meshes / "blade.stl", *turbine_blade())
    write_stl(meshes / "vane.stl", *turbine_blade(span=0.08, twist_deg=10.0))
    lo, hi = parts_per_image
    path = write_toy_pipeline(tmp_path, sizes=(12, 4, 4), update={
        "synthetic": {"parts_per_image": {"min": lo, "max": hi}}}, replace={"parts": [
            {"name": "blade", "mesh": str(meshes / "blade.stl"), "unit": "m"},
            {"name": "vane", "mesh": str(meshes / "vane.stl"), "unit": "m"}]})
    return load_config(path)


def test_stems_to_rerender_follow_the_plan_and_only_rendered_images(tmp_path):
    cfg = _two_part_config(tmp_path)
    out = tmp_path / "ws" / "data" / "synthetic"
    rendered = [f"{i:06d}" for i in range(10)]  # 10 of 12 rendered so far
    _fake_render(out, rendered)
    plans = plan_scenes(cfg.synthetic, cfg.parts)
    vane = [f"{p['index']:06d}" for p in plans if any(q["class_index"] == 1 for q in p["parts"])]
    got = cad_retrain.stems_to_rerender(cfg, ["vane"])
    assert got == [s for s in vane if s in rendered]
    assert 0 < len(got) < len(rendered)  # some images show only the blade: kept
    both = cad_retrain.stems_to_rerender(cfg, ["vane", "blade"])
    assert both == rendered  # every image shows one of the two
    with pytest.raises(ValueError, match="unknown parts \\['bolt'\\]; known: blade, vane"):
        cad_retrain.stems_to_rerender(cfg, ["bolt"])


def test_the_plan_of_an_image_does_not_depend_on_the_mesh(tmp_path):
    """Same seeds, new mesh: re-rendering image i after a CAD change redraws the same scene."""
    cfg = _two_part_config(tmp_path)
    before = plan_scenes(cfg.synthetic, cfg.parts)
    write_stl(tmp_path / "meshes" / "vane.stl", *turbine_blade(span=0.1, twist_deg=30.0))
    assert plan_scenes(cfg.synthetic, cfg.parts) == before


def _dataset(root, names, cats):
    root.mkdir(parents=True)
    for name in names:
        (root / name).write_bytes(name.encode())
    images = [CocoImage(i + 1, n, 10, 10, {}) for i, n in enumerate(names)]
    anns = [CocoAnnotation(i + 1, i + 1, 1, (1.0, 1.0, 3.0, 3.0), 9.0, 0, None, {})
            for i in range(len(names))]
    return CocoDataset(images, anns, categories_for(cats), root)


def test_union_of_renders_and_labelled_photos_keeps_every_file(tmp_path):
    synth = _dataset(tmp_path / "data" / "synthetic" / "images", ["000000.jpg", "000001.jpg"],
                     ["blade", "vane"])
    real = _dataset(tmp_path / "data" / "labeled" / "images", ["cam_1.jpg"], ["blade", "vane"])
    joined = union([synth, real])
    assert joined.image_root == (tmp_path / "data").resolve()
    assert [joined.image_path(im).read_bytes() for im in joined.images] == [
        b"000000.jpg", b"000001.jpg", b"cam_1.jpg"]
    assert [im.id for im in joined.images] == [1, 2, 3]
    assert [a.image_id for a in joined.annotations] == [1, 2, 3]
    other = _dataset(tmp_path / "other", ["x.jpg"], ["bolt", "vane"])
    with pytest.raises(Exception, match="different categories"):
        union([synth, other])


def test_revision_names_the_set_of_hashes():
    from synthloop.stages.cad_records import cad_revision

    a = cad_revision({"blade": "1" * 16, "vane": "2" * 16})
    assert a == cad_revision({"vane": "2" * 16, "blade": "1" * 16}) and len(a) == 12
    assert a != cad_revision({"blade": "1" * 16, "vane": "3" * 16})


def test_the_switch_turns_the_reaction_off(tmp_path):
    cfg = _two_part_config(tmp_path)
    off = cfg.model_copy(update={"cad_retrain": cfg.cad_retrain.model_copy(
        update={"enabled": False})})
    entry = cad_retrain.run(off, trigger="cad-changed")
    assert entry["outcome"] == "disabled"
    log = (tmp_path / "ws" / "state" / "cycle_runs.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["outcome"] == "disabled"
    assert not (tmp_path / "ws" / "data").exists()  # nothing rendered, nothing trained


def test_a_new_mesh_path_changes_the_render_key_of_its_images_only(tmp_path):
    """A cad: part's new parameters (or a re-tessellated STEP) give its mesh a new path: only
    the images that show that part get a new render key; the others stay finished."""
    import shutil
    import sys

    from synthloop.config import RenderConfig
    from synthloop.synthesis.render import plan_shards

    cfg = _two_part_config(tmp_path)
    render_cfg = RenderConfig(blender_python=sys.executable)  # plans only: nothing renders

    def keys(parts):
        jobs = plan_shards(cfg.synthetic, parts, tmp_path / "out", render_cfg=render_cfg)
        return {it["stem"]: it["key"] for job in jobs for it in job.items}

    before = keys(cfg.parts)
    moved = tmp_path / "meshes" / "rev_b"
    moved.mkdir()
    shutil.copy(tmp_path / "meshes" / "vane.stl", moved / "vane.stl")
    parts = [cfg.parts[0], cfg.parts[1].model_copy(update={"mesh": moved / "vane.stl"})]
    after = keys(parts)
    vane = set(cad_retrain.images_showing(plan_scenes(cfg.synthetic, cfg.parts), {1}))
    assert 0 < len(vane) < len(before)
    assert {s for s in before if before[s] != after[s]} == vane


def test_the_next_cycle_starts_from_the_newest_retrain_promoted_since_the_last_cycle(tmp_path):
    """M_t fine-tunes from a CAD retrain promoted after cycle t-1 (its renders show the new
    mesh), not from M_{t-1}; refused retrains and those of other cycles do not count."""
    from synthloop.stages import cad_records

    cfg = load_config(write_toy_pipeline(tmp_path))

    def retrain(rev, *, after_cycle, outcome, finished, version):
        folder = cfg.workspace / "state" / "cad_retrain" / rev
        folder.mkdir(parents=True)
        (folder / "retrain.json").write_text(json.dumps(
            {"outcome": outcome, "after_cycle": after_cycle, "finished": finished}))
        (folder / "candidate.json").write_text(json.dumps({"model": {
            "run_id": f"run-{version}", "uri": f"models:/x/{version}", "version": version,
            "metrics": {}}}))

    assert cad_records.promoted_after(cfg, 2) is None
    retrain("a", after_cycle=1, outcome="promoted", finished=1.0, version="5")
    retrain("b", after_cycle=2, outcome="promoted", finished=2.0, version="7")
    retrain("c", after_cycle=2, outcome="promoted", finished=3.0, version="8")
    retrain("d", after_cycle=2, outcome="kept champion", finished=4.0, version="9")
    assert cad_records.promoted_after(cfg, 2).version == "8"
    assert cad_records.promoted_after(cfg, 1).version == "5"
    assert cad_records.promoted_after(cfg, 3) is None
