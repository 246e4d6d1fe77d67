"""The steer stage on a hand-made workspace (no torch, no Blender): the model's detections are
the cached ones the stage would have made; it writes failure_analysis.json, logs the weights
to the cycle's MLflow run, is idempotent, and the cycle report shows what changed."""

from __future__ import annotations

import json

import numpy as np

from synthloop.artifacts import DatasetRef, ModelRef
from synthloop.config import load_config
from synthloop.data.coco import CocoDataset
from synthloop.gating.predictions import predictions_path, save_predictions
from synthloop.metrics import ImageDetections
from synthloop.reports.cycle_report import CycleRecords, failure_section
from synthloop.stages import steer
from synthloop.stages.pretrain import HOLDOUT_FRACTION, split_holdout
from synthloop.stages.workspace import Workspace
from synthloop.versioning.dvc_repo import dataset_md5
from tests_support import DEMO_CONFIG

BOX = [100.0, 100.0, 40.0, 40.0]


def _save(folder, images, num):
    folder.mkdir(parents=True, exist_ok=True)
    CocoDataset.from_dict({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 320, "height": 240, **meta}
                   for i, meta in images],
        "annotations": [{"id": k + 1, "image_id": i, "category_id": 1, "bbox": BOX,
                         "area": 1600.0, "iscrowd": 0} for k, (i, _) in enumerate(images)],
        "categories": [{"id": c + 1, "name": n} for c, n in enumerate(num)]},
        image_root=folder / "images").save(folder / "annotations.json")
    return DatasetRef(name=folder.name, annotations=folder / "annotations.json",
                      image_root=folder / "images", md5=dataset_md5(folder),
                      num_images=len(images), num_annotations=len(images))


def _hit(i):
    x, y, w, h = BOX
    return ImageDetections(i, np.array([[x, y, x + w, y + h]], np.float32),
                           np.array([1]), np.array([0.9], np.float32))


def _miss(i):
    return ImageDetections(i, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                           np.zeros(0, np.float32))


def _workspace(tmp_path, *extra):
    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
        "steer.enabled=true", "steer.topup_images=0", "steer.bins=2", "steer.prior=0",
        "steer.variables=[camera_distance,distractors]", *extra])
    ws = Workspace.of(cfg)
    r = cfg.synthetic.camera_distance
    far = r.min + 0.75 * (r.max - r.min)
    near = r.min + 0.25 * (r.max - r.min)
    renders = [(i, {"camera_plan": {"distance": far if i % 2 else near},
                    "distractors": [{}] * (i % 4)}) for i in range(1, 81)]
    synthetic = _save(ws.dataset_dir("synthetic"), renders, cfg.class_names)
    val = _save(ws.dataset_dir("val"), [(1, {}), (2, {})], cfg.class_names)
    model = ModelRef(run_id="m1run", uri="models:/none", version="1")
    save_predictions(predictions_path(ws.root, model.run_id, val.md5), [_hit(1), _miss(2)])
    holdout = split_holdout(CocoDataset.load(synthetic.annotations), fraction=HOLDOUT_FRACTION,
                            seed=cfg.pretrain.seed)[1]
    save_predictions(ws.cycle_dir(1) / f"holdout_predictions-{model.run_id}.npz",
                     [_miss(im.id) if im.id % 2 else _hit(im.id) for im in holdout.images])
    return cfg, ws, model, synthetic, val


def test_the_stage_records_logs_and_is_idempotent(tmp_path):
    from mlflow import MlflowClient

    from synthloop import tracking

    cfg, ws, model, synthetic, val = _workspace(tmp_path)
    exp = tracking.setup(cfg)
    run = MlflowClient().create_run(exp, run_name="cycle-1").info.run_id
    rec = steer.run(cfg, cycle=1, model=model, synthetic=synthetic, val=val, parent_run_id=run)
    on_disk = json.loads((ws.cycle_dir(1) / steer.RECORD).read_text())
    assert on_disk == json.loads(json.dumps(rec))
    # far renders all missed, near all found: the far bin takes the ceiling... within bounds
    assert rec["weights"]["camera_distance"] == [0.5, 1.5]
    assert rec["changes"]["camera_distance"] == {"from": [1.0, 1.0], "to": [0.5, 1.5]}
    assert len(rec["weights"]["distractors"]) == 2  # runs 0..1 and 2..3 of the values 0..3
    assert rec["photos"]["totals"]["missed"] == 1 and rec["photos"]["by"]["class"]
    assert rec["renders"]["totals"]["failure_rate"] == 0.5
    assert rec["topup"]["domain"]["sampling_weights"] == rec["weights"]
    data = MlflowClient().get_run(run).data
    assert json.loads(data.params["steer.weights.camera_distance"]) == [0.5, 1.5]
    assert data.params["steer.mode"] == "failures"
    assert data.metrics["steer_holdout_failure_rate"] == 0.5
    logged = {a.path for a in MlflowClient().list_artifacts(run, "steer")}
    assert logged == {"steer/failure_analysis.json", "steer/render_config.yaml"}
    again = steer.run(cfg, cycle=1, model=model, synthetic=synthetic, val=val, parent_run_id=run)
    assert again == rec
    assert steer.topup_dataset(cfg, 1) is None  # no top-up asked (topup_images=0)
    page = failure_section(CycleRecords(
        pipeline="demo", cycle=1, run_id=run, run_metrics={}, history=[], gate={}, query={},
        label={}, label_cost=None, class_names=cfg.class_names, failure_analysis=rec))
    assert "<td>camera_distance</td><td>[1.0, 1.0]</td><td>[0.5, 1.5]</td>" in page


def test_uniform_mode_same_top_up_without_weights_and_off_does_nothing(tmp_path):
    cfg, ws, model, synthetic, val = _workspace(tmp_path, "steer.mode=uniform")
    rec = steer.run(cfg, cycle=1, model=model, synthetic=synthetic, val=val)
    assert rec["weights"] == {} and rec["changes"] == {}
    steered = steer.topup_domain(cfg, 1, {"camera_distance": [0.5, 1.5]})
    uniform = steer.topup_domain(cfg, 1, {})
    assert steered.seed == uniform.seed != cfg.synthetic.seed  # paired: only the weights differ
    assert steered.model_copy(update={"sampling_weights": {}}) == uniform
    off = cfg.model_copy(update={"steer": cfg.steer.model_copy(update={"enabled": False})})
    assert steer.run(off, cycle=2, model=model, synthetic=synthetic, val=val) is None
    assert not (ws.cycle_dir(2) / steer.RECORD).exists()
    assert steer.topup_dataset(off, 1) is None


def test_the_fine_tune_gets_the_top_up_when_there_is_one(tmp_path):
    cfg, ws, model, synthetic, val = _workspace(tmp_path, "steer.topup_images=2")
    labeled = CocoDataset.load(val.annotations)
    assert steer.with_topup(labeled, steer.topup_dataset(cfg, 1)) is labeled  # not rendered
    _save(steer.topup_dir(cfg, 1), [(1, {}), (2, {}), (3, {})], cfg.class_names)
    assert steer.topup_dataset(cfg, 1).num_images == 3
    both = steer.with_topup(labeled, steer.topup_dataset(cfg, 1))
    assert len(both.images) == 5 and len(both.annotations) == 5
    assert steer.with_topup(labeled, steer.topup_dataset(cfg, 2)) is labeled
