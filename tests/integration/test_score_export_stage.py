"""Scoring with the exported scorer of a registry version, end to end through MLflow: the
training stages' export is logged with the version (``tracking.log_detector(export_files=)``),
``score.run`` finds it and uses it, the query batch records what scored and the candidate
subset; without an export (or with ``export.use=false``) the same stage scores with torch.

A tiny untrained MobileNetV3-FPN at 96x72 (the serving tests' model): what is tested is the
plumbing; parity on the bolts detector is tests/unit/test_score_export.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from synthloop import tracking
from synthloop.artifacts import ModelRef
from synthloop.config import DetectorConfig, load_config
from synthloop.data.coco import CocoAnnotation, CocoDataset
from synthloop.detection import build_detector, save_checkpoint
from synthloop.detection.export import _RuntimeBackbone, export_onnx
from synthloop.gating.registry import register_version
from synthloop.scaleout.scoring import _model, score_jobs, score_pool
from synthloop.stages import query, score
from synthloop.stages.render import dataset_ref
from synthloop.stages.workspace import Workspace
from people_support import make_pool
from tests_support import DEMO_CONFIG

pytestmark = pytest.mark.slow
POOL = 8


def setup(tmp_path: Path, *overrides: str):
    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", "versioning.push=false", "active.strategy=dbal",
        "active.k=2", "active.scope=unlabeled", *overrides])
    folder = make_pool(cfg, POOL)
    pool = CocoDataset.load(folder / "annotations.json")
    truth = [CocoAnnotation(i, i, 1, (10.0, 10.0, 30.0, 20.0), 600.0) for i in range(1, POOL + 1)]
    CocoDataset(pool.images, truth, pool.categories, folder / "images").save(
        Workspace.of(cfg).oracle / "pool.json")
    return cfg


def register(cfg, folder: Path, *, export: bool) -> ModelRef:
    tracking.setup(cfg)
    det = DetectorConfig(min_size=64, max_size=96, box_score_thresh=0.0)
    torch.manual_seed(0)
    model = build_detector(cfg=det, num_classes=len(cfg.class_names))
    ckpt = save_checkpoint(model, folder / tracking.CHECKPOINT_NAME, cfg=det,
                           num_classes=len(cfg.class_names),
                           extra={"class_names": list(cfg.class_names)})
    files = export_onnx(model, folder / "export") if export else None
    with mlflow.start_run() as run:
        uri = tracking.log_detector(ckpt, export_files=files)
    version = register_version(MlflowClient(), cfg.registered_model_name, uri, run.info.run_id, {})
    return ModelRef(run_id=run.info.run_id, uri=uri, version=version)


def pool_ref(cfg):
    return dataset_ref("pool", Workspace.of(cfg).dataset_dir("pool"))


def test_score_uses_the_versions_export_and_the_batch_records_it(tmp_path, caplog):
    cfg = setup(tmp_path, "active.candidate_subset=3")
    model = register(cfg, tmp_path / "m", export=True)
    with caplog.at_level(logging.INFO):
        path = score.run(cfg, cycle=1, model=model, pool=pool_ref(cfg), labeled_ids=set(),
                         progress=False)
    assert "scoring with the exported scorer (onnx:openvino)" in caplog.text
    assert score.scores_meta(path) == {"scorer": "onnx:openvino", "candidates": POOL, "scored": 6}
    ids, probs, features = score.load_scores(path)
    expected = score.candidate_subset(list(range(1, POOL + 1)), m=3, k=2, seed=cfg.active.seed + 1)
    assert ids == expected
    batch = query.run(cfg, cycle=1, scores_path=path, model=model, pool=pool_ref(cfg),
                      labeled_ids=set())
    assert set(batch.image_ids) <= set(ids) and len(batch.image_ids) == 2
    assert batch.params["scorer"] == "onnx:openvino" and batch.params["candidate_subset"] == 3
    assert (batch.params["scored"], batch.params["candidates"], batch.seed) == (6, POOL, 1)

    # The same version scored by torch (export.use=false): the same numbers, the same picks.
    torch_cfg = cfg.model_copy(update={"export": cfg.export.model_copy(update={"use": False})})
    path.unlink()
    (Workspace.of(cfg).cycle_dir(1) / "query.json").unlink()
    torch_path = score.run(torch_cfg, cycle=1, model=model, pool=pool_ref(cfg),
                           labeled_ids=set(), progress=False)
    assert score.scores_meta(torch_path)["scorer"] == "torch"
    t_ids, t_probs, t_features = score.load_scores(torch_path)
    assert t_ids == ids and [p.shape for p in t_probs] == [p.shape for p in probs]
    assert max(float(np.abs(a - b).max()) for a, b in zip(t_probs, probs) if a.size) < 1e-3
    assert float(np.abs(t_features - features).max()) < 1e-3
    again = query.run(torch_cfg, cycle=1, scores_path=torch_path, model=model,
                      pool=pool_ref(cfg), labeled_ids=set())
    assert again.image_ids == batch.image_ids

    # Pool scoring in chunks (the Dask path) takes the export too.
    pool = pool_ref(cfg)
    chunks = score_pool(score_jobs(model.uri, pool.annotations, pool.image_root, ids,
                                   chunk_size=4, export_runtime="onnxruntime"))
    assert [s.image_id for s in chunks] == ids
    assert max(float(np.abs(s.probs - p).max()) for s, p in zip(chunks, probs) if p.size) < 1e-3
    assert isinstance(_model(model.uri, "cpu", "onnxruntime").backbone, _RuntimeBackbone)


def test_a_version_without_export_is_scored_by_torch_with_a_log_line(tmp_path, caplog):
    cfg = setup(tmp_path)
    model = register(cfg, tmp_path / "m", export=False)
    with caplog.at_level(logging.INFO):
        path = score.run(cfg, cycle=1, model=model, pool=pool_ref(cfg), labeled_ids=set(),
                         progress=False)
    assert f"scoring with torch: {model.uri} was logged without an exported scorer" in caplog.text
    assert score.scores_meta(path) == {"scorer": "torch", "candidates": POOL, "scored": POOL}


def test_serving_answers_with_the_champions_export(tmp_path):
    from fastapi.testclient import TestClient

    from people_support import image_bytes
    from synthloop.serve.app import create_app
    from synthloop.serve.champion import ChampionWatcher, load_registry_version

    cfg = setup(tmp_path)
    model = register(cfg, tmp_path / "m", export=True)
    client = MlflowClient()
    version = client.get_model_version(cfg.registered_model_name, model.version)
    answers = {}
    for runtime in (None, "openvino"):
        loaded = load_registry_version(client, cfg.registered_model_name, version,
                                       export_runtime=runtime)
        watcher = ChampionWatcher(client, cfg.registered_model_name)
        watcher.current = loaded
        with TestClient(create_app(watcher, cfg.serve, start_watcher=False)) as http:
            assert http.get("/health").json()["scorer"] == loaded.scorer
            r = http.post("/predict?min_score=0", content=image_bytes(96, 72, seed=3),
                          headers={"content-type": "image/jpeg"})
        assert r.status_code == 200, r.text
        answers[loaded.scorer] = r.json()["detections"]
    assert set(answers) == {"torch", "onnx:openvino"}
    ref, got = answers["torch"], answers["onnx:openvino"]
    assert len(ref) == len(got) > 0
    for a, b in zip(sorted(ref, key=lambda d: d["box"]), sorted(got, key=lambda d: d["box"])):
        assert a["class_id"] == b["class_id"] and abs(a["score"] - b["score"]) < 1e-3
        assert max(abs(x - y) for x, y in zip(a["box"], b["box"])) < 0.05
