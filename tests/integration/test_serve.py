"""`synthloop serve` on loopback against a real (SQLite) registry: limits, health, and a champion
swap while clients keep sending requests (none may fail)."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest
from mlflow import MlflowClient

from synthloop.config import load_config
from people_support import image_bytes, register_tiny_models
from serve_support import loopback_server
from tests_support import DEMO_CONFIG, free_port

pytestmark = pytest.mark.slow


def jpeg(width: int = 80, height: int = 60, fmt: str = "JPEG", noise: bool = True) -> bytes:
    return image_bytes(width, height, fmt, noise)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from synthloop.serve.app import build_app

    ws = tmp_path_factory.mktemp("serve")
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={ws}", "serve.max_image_bytes=100000",
                                              "serve.max_image_pixels=250000", "serve.min_score=0.0"])
    versions = register_tiny_models(cfg, ws)
    client = MlflowClient()
    client.set_registered_model_alias(cfg.registered_model_name, "champion", versions[0])
    with loopback_server(build_app(cfg, poll_seconds=0.2)) as base:
        yield {"url": base, "cfg": cfg, "versions": versions, "client": client}


def test_health_reports_version_and_val_ap(server):
    body = httpx.get(f"{server['url']}/health").json()
    assert body["status"] == "ok" and body["version"] == "1" and body["alias"] == "champion"
    assert body["val_AP"] == pytest.approx(0.1) and body["classes"] == ["blade"]


def test_predict_answers_boxes_classes_scores(server):
    r = httpx.post(f"{server['url']}/predict", content=jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1" and (body["width"], body["height"]) == (80, 60)
    for det in body["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 60
        assert det["class_name"] == "blade" and 0 <= det["score"] <= 1
    as_json = httpx.post(f"{server['url']}/predict?min_score=1.0",
                         json={"image_b64": base64.b64encode(jpeg(fmt="PNG")).decode()})
    assert as_json.status_code == 200 and as_json.json()["detections"] == []


@pytest.mark.parametrize("content, ctype, status, words", [
    (b"hello", "text/plain", 415, "unsupported content type"),
    (b"", "", 415, "unsupported content type"),
    (b"\xff\xd8 not really a jpeg", "image/jpeg", 400, "not a JPEG or PNG"),
    (b"x" * 100_001, "image/jpeg", 413, "limit is 100000"),
    (None, "image/png", 413, "pixels; the limit is 250000"),  # 600x600 PNG: small file, many pixels
    (b"{\"image\": 1}", "application/json", 400, "image_b64"),
    (b"{\"image_b64\": \"@@@\"}", "application/json", 400, "image_b64"),
    ("gif", "image/png", 400, "unsupported image format GIF"),
])
def test_input_limits_give_clear_4xx(server, content, ctype, status, words):
    if content is None:
        content = jpeg(600, 600, "PNG", noise=False)
    elif content == "gif":
        content = jpeg(20, 20, "GIF")
    headers = {"content-type": ctype} if ctype else {}
    r = httpx.post(f"{server['url']}/predict", content=content, headers=headers)
    assert r.status_code == status and words in r.json()["detail"], r.text


def test_bad_min_score_is_422(server):
    r = httpx.post(f"{server['url']}/predict?min_score=2", content=jpeg(),
                   headers={"content-type": "image/jpeg"})
    assert r.status_code == 422


def test_new_champion_is_served_without_dropping_requests(server):
    url, image = f"{server['url']}/predict", jpeg()
    seen: list[list[tuple[int, str | None]]] = [[] for _ in range(3)]
    stop = threading.Event()

    def client_loop(out: list) -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(2000):  # bounded; the test stops it much earlier
                if stop.is_set():
                    return
                r = http.post(url, content=image, headers={"content-type": "image/jpeg"})
                out.append((r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text))

    threads = [threading.Thread(target=client_loop, args=(s,)) for s in seen]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 30
        while sum(map(len, seen)) < 6 and time.time() < deadline:
            time.sleep(0.05)
        server["client"].set_registered_model_alias(server["cfg"].registered_model_name, "champion",
                                                    server["versions"][1])
        deadline = time.time() + 60
        while time.time() < deadline:
            if httpx.get(f"{server['url']}/health").json()["version"] == "2":
                break
            time.sleep(0.1)
        after = sum(map(len, seen))
        deadline = time.time() + 30
        while sum(map(len, seen)) < after + 6 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    answers = [a for s in seen for a in s]
    assert answers and all(code == 200 for code, _ in answers), [a for a in answers if a[0] != 200][:3]
    for s in seen:  # each client sees v1 then v2, never back
        versions = [v for _, v in s]
        assert versions == sorted(versions)
    assert {v for _, v in answers} == {"1", "2"}
    health = httpx.get(f"{server['url']}/health").json()
    assert health["version"] == "2" and health["val_AP"] == pytest.approx(0.2)
    assert health["swaps"] == 1 and health["last_error"] is None


def test_mlflow_models_serve_answers_with_the_registry_model(server, tmp_path):
    """The registry model is a pyfunc with a signature: MLflow's own scoring server runs it."""
    import json
    import os
    import subprocess
    import sys

    from mlflow.models import get_model_info

    cfg = server["cfg"]
    uri = f"models:/{cfg.registered_model_name}@champion"
    info = get_model_info(uri)
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["image_b64", "image_path"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["boxes", "labels", "scores"]
    port = free_port()
    mlflow_cli = os.path.join(os.path.dirname(sys.executable), "mlflow")
    # mlflow starts `uvicorn` by name: the environment's bin folder must be on PATH (activated venv)
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking_uri,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.Popen([mlflow_cli, "models", "serve", "-m", uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "-w", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        body = {"dataframe_records": [{"image_b64": base64.b64encode(jpeg()).decode()}]}
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert r.status_code == 200, r.text
        (row,) = json.loads(r.text)["predictions"]
        assert set(row) == {"boxes", "labels", "scores"} and len(row["boxes"]) == len(row["scores"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
