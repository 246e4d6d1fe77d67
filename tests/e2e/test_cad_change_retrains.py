"""A changed CAD retrains itself, end to end at toy size: real Blender, training, MLflow, DVC.

Two parts from STL files -> pipeline (renders, M0, one DAL cycle) -> the vane's STL is edited
in place -> the monitor reports the change -> `synthloop cad retrain` (what the cad-retrain
deployment runs on `synthloop.cad.changed`) re-renders only the vane's images, versions the set,
fine-tunes the champion on renders + real labels and gates it; the lineage shows both hashes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest

from synthloop.synthesis.mesh_io import write_stl
from synthloop.synthesis.meshes import turbine_blade
from tests_support import write_toy_pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.render]


def _invoke(args):
    from typer.testing import CliRunner

    from synthloop.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"synthloop {' '.join(args)}:\n{result.output}\n{result.exception!r}"
    return result.stdout  # logs go to stderr


def _snapshot(images):
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(images.glob("*.jpg"))}


def test_an_edited_mesh_rerenders_its_images_retrains_and_gates(tmp_path, render_python,
                                                                 monkeypatch):
    from mlflow import MlflowClient

    from synthloop import lineage, tracking
    from synthloop.config import load_config
    from synthloop.stages import monitor
    from synthloop.stages.cad_retrain import stems_to_rerender
    from synthloop.stages.pipeline import run_pipeline

    t0, cpu0 = time.time(), time.process_time()
    monkeypatch.setenv("SYNTHLOOP_BLENDER_PYTHON", render_python)
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    write_stl(meshes / "blade.stl", *turbine_blade())
    write_stl(meshes / "vane.stl", *turbine_blade(span=0.08, twist_deg=10.0))
    config = write_toy_pipeline(tmp_path, sizes=(12, 8, 6), update={
        "synthetic": {"parts_per_image": {"min": 1, "max": 1}},
        "pretrain": {"epochs": 1}, "active": {"k": 2}, "cad_retrain": {"epochs": 1}},
        replace={"parts": [{"name": "blade", "mesh": str(meshes / "blade.stl"), "unit": "m"},
                           {"name": "vane", "mesh": str(meshes / "vane.stl"), "unit": "m"}]})
    cfg = load_config(config)
    run_pipeline(cfg, cycles=1, progress=False)
    ws = cfg.workspace.resolve()
    images = ws / "data" / "synthetic" / "images"
    before = _snapshot(images)
    old = lineage.cad_hashes(cfg)
    data_dvc_before = (ws / "data.dvc").read_text()

    # the CAD revision: the vane's file edited in place (longer, more twisted)
    time.sleep(0.01)
    write_stl(meshes / "vane.stl", *turbine_blade(span=0.1, twist_deg=35.0))
    new = lineage.cad_hashes(cfg)
    assert new["vane"] != old["vane"] and new["blade"] == old["blade"]
    record = monitor.check(cfg)  # what the pool watcher emits synthloop.cad.changed from
    assert record["cad_changed"] == {"vane": [old["vane"], new["vane"]]}
    expected = stems_to_rerender(cfg, ["vane"])
    assert 0 < len(expected) < len(before)
    dry = json.loads(_invoke(["cad", "retrain", "--config", str(config), "--dry-run"]))
    assert dry["rerender"] == expected
    assert _snapshot(images) == before  # a dry run changes nothing

    result = _last_json(_invoke(["cad", "retrain", "--config", str(config)]))
    assert result["outcome"] in ("promoted", "kept champion"), result

    # only the vane's images were rendered again; the blade's are the same files, untouched
    after = _snapshot(images)
    redone = {f"{s}.jpg" for s in result["rerendered"]}
    assert sorted(result["rerendered"]) == sorted(expected)
    kept = {n for n in before if n not in redone}
    assert kept and all(after[n] == before[n] for n in kept)  # bytes and mtime
    changed = [n for n in redone if n in after and after[n][0] != before.get(n, ("",))[0]]
    assert changed, "an edited mesh must change the images that show it"
    plans = {im["file_name"]: im for im in json.loads(
        (ws / "data" / "synthetic" / "annotations.json").read_text())["images"]}
    for name in redone & set(plans):  # same seeds: the plan recorded with each image
        assert [p["class_index"] for p in plans[name]["parts"]] == [1]

    # a new dataset version: data.dvc moved, committed and tagged in the workspace repo
    assert (ws / "data.dvc").read_text() != data_dvc_before
    tag = f"cad-{result['revision']}"
    tags = subprocess.run(["git", "tag", "--list", tag], cwd=ws, capture_output=True,
                          text=True, check=True).stdout.split()
    assert tags == [tag]

    # a fine-tune run from the champion on renders + real labels, and a gate decision
    tracking.setup(cfg)
    client = MlflowClient()
    mv = client.get_model_version(cfg.registered_model_name, result["candidate_version"])
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "cad-retrain"
    assert int(run.data.params["train.num_images"]) == 12 + result["labels_used"]
    assert result["labels_used"] >= 2
    gate = json.loads((ws / "state" / "cad_retrain" / result["revision"] / "gate.json")
                      .read_text())
    assert gate["candidate_version"] == result["candidate_version"]
    assert gate["promote"] == (result["outcome"] == "promoted") and gate["rule"]
    requests = (ws / "state" / "cycle_runs.jsonl").read_text().splitlines()
    assert json.loads(requests[-1])["outcome"] == result["outcome"]

    # lineage: the new version carries the new hash, its ancestors the old one
    shown = _invoke(["lineage", result["candidate_version"], "--config", str(config)])
    assert f"CAD vane       sha256 {new['vane']}  (same file now)" in shown
    assert f"CAD vane       sha256 {old['vane']}  CHANGED: now {new['vane']}" in shown
    assert f"parent: v{result['champion_before']}" in shown

    # the same revision again: nothing rendered or trained twice
    again = _last_json(_invoke(["cad", "retrain", "--config", str(config)]))
    assert again["candidate_version"] == result["candidate_version"]
    assert _snapshot(images) == after
    if result["outcome"] == "promoted":  # the champion is on the new meshes: nothing to report
        assert monitor.check(cfg)["cad_changed"] == {}
    print(f"cad retrain e2e: {time.time() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s "
          f"CPU (this process); {len(redone)} of {len(before)} renders redone")


def _last_json(text):
    return json.loads(text[text.index("{"):])
