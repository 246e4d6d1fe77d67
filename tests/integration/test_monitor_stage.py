"""The monitor stage end to end with a real (tiny, untrained) champion: features from one
forward pass, Evidently checks with the HTML report in MLflow, the trigger decision, and the
ingest -> drift path on blurred / brightened camera images."""

from __future__ import annotations

import io

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image, ImageFilter

from synthloop import tracking
from synthloop.config import load_config
from synthloop.data.coco import CocoDataset, CocoImage, categories_for
from synthloop.gating.registry import register_version
from synthloop.stages import ingest, monitor
from tests_support import DEMO_CONFIG

pytestmark = pytest.mark.slow


def scene(seed: int) -> Image.Image:
    """A 96x72 "workshop" image: smooth gradient, a bright blob, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:72, 0:96]
    base = 90 + 40 * np.sin(x / rng.uniform(8, 20)) + 30 * np.cos(y / rng.uniform(6, 15))
    cx, cy = rng.uniform(20, 76), rng.uniform(15, 57)
    blob = 90 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 60)
    img = np.stack([base + blob, base * 0.9 + blob, base * 0.8 + blob], -1)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def cfg(tmp_path):
    from synthloop.detection import build_detector, save_checkpoint

    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", "detector.min_size=72", "detector.max_size=96",
        "monitoring.min_current=10", "monitoring.permutations=30", "trigger.pool_growth_min=100",
        f"ingest.source={tmp_path / 'camera'}"])
    pool = cfg.workspace / "data" / "pool"
    (pool / "images").mkdir(parents=True)
    images = []
    for i in range(40):
        (pool / "images" / f"{i:06d}.jpg").write_bytes(jpeg(scene(i)))
        images.append(CocoImage(i + 1, f"{i:06d}.jpg", 96, 72))
    CocoDataset(images, [], categories_for(cfg.class_names), pool / "images").save(
        pool / "annotations.json")
    tracking.setup(cfg)
    model = build_detector(cfg=cfg.detector, num_classes=1)
    ckpt = save_checkpoint(model, tmp_path / "checkpoint.pt", cfg=cfg.detector, num_classes=1,
                           extra={"class_names": cfg.class_names})
    with mlflow.start_run(run_name="pretrain") as run:
        uri = tracking.log_detector(ckpt)
    version = register_version(MlflowClient(), cfg.registered_model_name, uri, run.info.run_id, {})
    MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion", version)
    (tmp_path / "camera").mkdir()
    return cfg


def test_quiet_then_blurred_camera_images_fire_the_drift_trigger(cfg, tmp_path):
    quiet = monitor.check(cfg)
    assert quiet["pool_growth"] == 0 and quiet["drift"] is None
    assert not quiet["trigger"]["fire"]

    for i in range(12):  # the camera's focus drifted: blurred, a little darker
        img = scene(100 + i).filter(ImageFilter.GaussianBlur(2.5))
        (tmp_path / "camera" / f"cam_{i}.jpg").write_bytes(jpeg(img))
    added = ingest.run(cfg)
    assert len(added.added) == 12
    record = monitor.check(cfg, ingest_result=added.to_dict())
    assert record["pool_growth"] == 12 and record["drift"] is not None
    decision = record["drift"]["decision"]
    fired = [c["name"] for c in decision["checks"] if c["drifted"]]
    assert "sharpness" in fired, decision["reason"]
    assert record["trigger"]["fire"] and record["trigger"]["event"] == "synthloop.drift.detected"
    run = MlflowClient().get_run(record["run_id"])
    assert run.data.metrics["drift_detected"] == 1.0 and "drift_sharpness" in run.data.metrics
    # the objects check (colour, size inside the champion's boxes) is part of every check
    assert decision["checks"][-1]["name"] == "objects"
    assert "drift_objects_threshold" in run.data.metrics
    files = {a.path for a in MlflowClient().list_artifacts(record["run_id"])}
    assert {"drift_report.html", "drift_decision.json", "monitor_record.json"} <= files

    # after a cycle has seen them, the same images are the baseline: nothing new, no trigger
    monitor.set_baseline(cfg, monitor.pool_ids(cfg), cycle=1)
    again = monitor.check(cfg)
    assert again["pool_growth"] == 0 and not again["trigger"]["fire"]
