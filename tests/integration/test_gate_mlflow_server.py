"""The bootstrap gate against a real `mlflow server` on loopback (not just the SQLite file):
registry aliases, tags, nested gate run and its artifacts over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from gate_support import detections, register, val_set
from synthloop.config import load_config
from synthloop.stages import gate
from synthloop.versioning.dvc_repo import dataset_md5
from tests_support import DEMO_CONFIG, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    exe = Path(sys.executable).with_name("mlflow")
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([str(exe), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri",
                             f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination",
                             str(tmp / "artifacts")], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail((tmp / "server.log").read_text()[-2000:])
            time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        mlflow.set_tracking_uri(None)


def test_gate_with_bootstrap_over_http(tmp_path, mlflow_server):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              f"tracking.uri={mlflow_server}",
                                              "gate.bootstrap_resamples=30"])
    ds, boxes = val_set(n=20)
    val_dir = cfg.workspace / "data" / "val"
    ds.with_image_root(val_dir / "images").save(val_dir / "annotations.json")
    md5 = dataset_md5(val_dir)
    m0 = register(cfg, ds, detections(ds, boxes, jitter=6.0, seed=2, misses=0.3), md5)
    assert gate.run(cfg, cycle=0, candidate=m0[0], candidate_eval=m0[1])["promote"]
    m1 = register(cfg, ds, detections(ds, boxes, jitter=1.0, seed=1), md5)
    rec = gate.run(cfg, cycle=1, candidate=m1[0], candidate_eval=m1[1])
    assert rec["promote"] and rec["interval"]["lower"] > 0
    client = MlflowClient(tracking_uri=mlflow_server)
    name = cfg.registered_model_name
    assert client.get_model_version_by_alias(name, "champion").version == m1[0].version
    assert client.get_model_version_by_alias(name, "challenger").version == m1[0].version
    exp = client.get_experiment_by_name(cfg.experiment_name)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    files = {a.path for a in client.list_artifacts(runs["gate-cycle-1"].info.run_id)}
    assert "gate_report.png" in files
