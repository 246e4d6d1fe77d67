"""The cycle report stage (stages/cycle_report.py) over real records: a real gate on a 12-image
validation set (its run logs the gate figure), a cycle run in an MLflow store in tmp_path,
a query batch of two images on disk, monitor checks. No training: the models are exact
detections whose predictions are cached as the training stage caches them (gate_support)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image

from gate_support import exact_detections, exact_set, register, save_val_set
from report_support import Page
from synthloop.config import load_config
from synthloop.data.coco import CocoDataset
from synthloop.gating.predictions import predictions_path
from synthloop.stages import cycle_report, gate, pipeline
from synthloop.stages.workspace import Workspace, read_record, write_record
from synthloop.tracking_recovery import NOTE_TAG
from tests_support import DEMO_CONFIG


def candidate_record(model, ev) -> dict:
    """What stages/finetune.py writes as state/cycle_<t>/candidate.json."""
    return {"model": {"run_id": model.run_id, "uri": model.uri, "version": model.version,
                      "metrics": ev.metrics},
            "eval": {"metrics": ev.metrics, "dataset_md5": ev.dataset_md5,
                     "num_images": ev.num_images}}


def labeled_images(cfg, ids: list[int]) -> None:
    """data/labeled: ``ids`` as 100x100 JPEGs with one box each (the oracle's labels)."""
    folder = Workspace.of(cfg).dataset_dir("labeled")
    (folder / "images").mkdir(parents=True)
    ds = exact_set(len(ids), tuple(cfg.class_names))
    for im in ds.images:
        Image.new("RGB", (100, 100), (30, 30, 30)).save(folder / "images" / im.file_name)
    raw = ds.to_dict()
    remap = {old.id: new for old, new in zip(ds.images, ids)}
    for im in raw["images"]:
        im["id"] = remap[im["id"]]
    for a in raw["annotations"]:
        a["image_id"] = remap[a["image_id"]]
    (folder / "annotations.json").write_text(json.dumps(raw))


@pytest.fixture(scope="module")
def cycle_one(tmp_path_factory):
    """M0 (half the boxes found) gated in cycle 0, a perfect candidate gated in cycle 1 under
    the cycle's run, its batch labelled; returns (cfg, the cycle run's id). Module-scoped (the
    store and the gates take ~10 s): a test that changes the workspace puts it back."""
    tmp_path = tmp_path_factory.mktemp("cycle-report")
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              "gate.bootstrap_resamples=40"])
    ws = Workspace.of(cfg)
    ds = exact_set(12, tuple(cfg.class_names))
    md5 = save_val_set(cfg, ds)
    m0 = register(cfg, ds, exact_detections(ds, {1: set(range(1, 7))}), md5)
    gate.run(cfg, cycle=0, candidate=m0[0], candidate_eval=m0[1])
    write_record(ws.cycle_dir(0) / "candidate.json", candidate_record(*m0))
    parent = pipeline.cycle_run_id(cfg, 1)
    m1 = register(cfg, ds, exact_detections(ds, {1: set(range(1, 13))}), md5)
    gate.run(cfg, cycle=1, candidate=m1[0], candidate_eval=m1[1], parent_run_id=parent)
    write_record(ws.cycle_dir(1) / "candidate.json", candidate_record(*m1))
    write_record(ws.cycle_dir(1) / "query.json", {
        "strategy": "margin", "params": {"k": 2}, "seed": 1, "model_version": m0[0].version,
        "pool_md5": "feedfacecafe", "image_ids": [4, 9], "scores": [0.75, 0.5],
        "new_label_ids": [4, 9], "routes": {"simulated": [4, 9]}})
    write_record(ws.cycle_dir(1) / "label.json", {"total": 2, "new": [4, 9],
                                                 "routes": {"simulated": 2}})
    labeled_images(cfg, [4, 9])
    client = MlflowClient()
    for key, value in {"labels_total": 2.0, "labels_new": 2.0,
                       **{f"val_{k}": v for k, v in m1[1].metrics.items()}}.items():
        client.log_metric(parent, key, value)
    return cfg, parent


def test_the_report_is_written_logged_linked_and_holds_the_runs_numbers(cycle_one):
    cfg, parent = cycle_one
    done = cycle_report.run(cfg, cycle=1, parent_run_id=parent)
    path = Workspace.of(cfg).cycle_dir(1) / cycle_report.REPORT
    assert done["path"] == str(path) and done["seconds"] > 0 and "error" not in done
    client = MlflowClient()
    run = client.get_run(parent)
    assert [a.path for a in client.list_artifacts(parent)].count(cycle_report.REPORT) == 1
    logged = Path(client.download_artifacts(parent, cycle_report.REPORT, str(path.parent.parent)))
    text = path.read_text()
    assert logged.read_text() == text
    assert run.data.tags[cycle_report.TAG] == cycle_report.REPORT
    assert (f"(#/experiments/{run.info.experiment_id}/runs/{parent}/artifacts/"
            f"{cycle_report.REPORT})") in run.data.tags[NOTE_TAG]
    page = Page(text)
    shown = {k: float(v) for k, v, _ in page.metrics}
    assert shown == run.data.metrics  # every metric of the run, each its exact value
    pngs = [s for s in page.images if s.startswith("data:image/png;base64,")]
    jpegs = [s for s in page.images if s.startswith("data:image/jpeg;base64,")]
    assert len(pngs) == 1 and len(jpegs) == 2  # the gate's figure; the two queried images
    assert "PROMOTED v2" in text and "image 4, score 0.75, 1 boxes" in text
    # the perfect candidate's AP is 1 on every resample; M0's interval holds its AP
    assert text.count("[1.0000, 1.0000]") == 2
    m0 = read_record(Workspace.of(cfg).cycle_dir(0) / cycle_report.RECORD)["intervals"]
    m0_ap = read_record(Workspace.of(cfg).cycle_dir(0) / "candidate.json")["eval"]["metrics"]
    assert m0["AP"][0] < m0_ap["AP"] < m0["AP"][1]
    assert ("90% percentile intervals of each model&#x27;s AP and AP50 over 40 resamples"
            in text)


def test_intervals_are_computed_once_per_model(cycle_one):
    cfg, parent = cycle_one
    first = cycle_report.run(cfg, cycle=1, parent_run_id=parent)
    text = Path(first["path"]).read_text()
    for t in (0, 1):  # without the cached predictions only the report's own cache can answer
        cand = read_record(Workspace.of(cfg).cycle_dir(t) / "candidate.json")
        predictions_path(Workspace.of(cfg).root, cand["model"]["run_id"],
                         cand["eval"]["dataset_md5"]).unlink()
    cycle_report.run(cfg, cycle=1, parent_run_id=parent)
    assert text.count("[1.0000, 1.0000]") == Path(first["path"]).read_text().count(
        "[1.0000, 1.0000]") == 2
    assert [a.path for a in MlflowClient().list_artifacts(parent)].count(
        cycle_report.REPORT) == 1  # the rerun replaced the artifact


def test_drift_shows_the_checks_since_the_previous_report(cycle_one):
    cfg, parent = cycle_one
    folder = Workspace.of(cfg).root / "state" / "monitor"
    for stamp, growth in (("20261130T000000Z", 5), ("20261202T000000Z", 7),
                          ("20261203T000000Z", 9)):
        write_record(folder / f"check-{stamp}.json", {"time": stamp, "pool_growth": growth,
                                                      "drift": None, "trigger": {"fire": False}})
    text = Path(cycle_report.run(cfg, cycle=1, parent_run_id=parent)["path"]).read_text()
    assert "pool grew by 9 images" in text and "pool grew by 7" not in text  # the latest only
    cycle_report.update_record(cfg, 0, {"made": "20261201T000000Z"})
    try:
        text = Path(cycle_report.run(cfg, cycle=1, parent_run_id=parent)["path"]).read_text()
        assert "pool grew by 7 images" in text and "pool grew by 9 images" in text
        assert "pool grew by 5" not in text
    finally:
        cycle_report.update_record(cfg, 0, {"made": None})
        for p in folder.iterdir():
            p.unlink()


def test_a_report_that_cannot_be_made_is_a_tag_not_a_failed_cycle(cycle_one, caplog):
    cfg, parent = cycle_one
    images = sorted((Workspace.of(cfg).dataset_dir("labeled") / "images").iterdir())
    kept = [p.read_bytes() for p in images]
    try:
        for p in images:
            p.write_bytes(b"not an image")
        done = cycle_report.run(cfg, cycle=1, parent_run_id=parent)
    finally:
        for p, data in zip(images, kept):
            p.write_bytes(data)
    assert done["error"].startswith("UnidentifiedImageError")
    assert MlflowClient().get_run(parent).data.tags[cycle_report.ERROR_TAG] == done["error"]
    assert "cycle 1: no report" in caplog.text
    cycle_report.run(cfg, cycle=1, parent_run_id=parent)  # fixed: the next report clears it
    assert cycle_report.ERROR_TAG not in MlflowClient().get_run(parent).data.tags


def test_the_labelled_set_draws_the_oracles_boxes(cycle_one):
    cfg, _ = cycle_one
    thumbs, left_out = cycle_report.thumbnails(cfg, read_record(
        Workspace.of(cfg).cycle_dir(1) / "query.json"))
    assert [t.image_id for t in thumbs] == [4, 9] and left_out == 0
    ds = CocoDataset.load(Workspace.of(cfg).dataset_dir("labeled") / "annotations.json")
    assert [t.boxes for t in thumbs] == [len(ds.boxes_xyxy(i)[1]) for i in (4, 9)]
    assert Image.open(io.BytesIO(thumbs[0].jpeg)).size == (320, 320)
