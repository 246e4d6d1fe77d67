"""A real Label Studio (1.23, in .venv-labelstudio) on 127.0.0.1: the query batch goes in through
label-studio-sdk with the model's boxes as predictions; an annotator completes the tasks through
the API (boxes kept, one moved, one image skipped); the export comes back through the strict
import, and the skipped image stays in the pool. With chromium installed, a screenshot of the
labelling view is taken (SYNTHLOOP_SCREENSHOT_DIR=docs keeps it for the docs).

Needs `make labelstudio` (about 2 minutes, ~1 GB; skipped where the environment is absent).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from synthloop.artifacts import QueryBatch
from synthloop.config import load_config
from synthloop.stages import label
from synthloop.stages.label_human import export_batch, export_folder, import_answers
from synthloop.stages.workspace import Workspace, write_record
from people_support import chromium_screenshot, make_pool, register_tiny_models
from tests_support import free_port
from tests_support import DEMO_CONFIG, ROOT

LS_VENV = Path(os.environ.get("SYNTHLOOP_LABELSTUDIO_VENV", ROOT / ".venv-labelstudio"))
pytestmark = [pytest.mark.slow, pytest.mark.labelstudio,
              pytest.mark.skipif(not (LS_VENV / "bin" / "label-studio").exists(),
                                 reason="no Label Studio environment: run `make labelstudio`")]
EMAIL, PASSWORD = "annotator@synthloop.test", "synthloop-test-password"


@pytest.fixture()
def labelstudio(tmp_path):
    """A fresh Label Studio serving <workspace>/data as local files; yields (url, session)."""
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(ws / "data"),
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "SENTRY_DSN": "",
           "FRONTEND_SENTRY_DSN": "", "LABEL_STUDIO_ENABLE_TELEMETRY": "false"}
    log = open(tmp_path / "labelstudio.log", "w")
    proc = subprocess.Popen([str(LS_VENV / "bin" / "label-studio"), "start", "--no-browser",
                             "--internal-host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(tmp_path / "ls-data"), "--username", EMAIL,
                             "--password", PASSWORD], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "labelstudio.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("Label Studio did not start in 240 s")
        session = httpx.Client(base_url=url, timeout=60, follow_redirects=True)
        session.get("/user/login/")
        r = session.post("/user/login/", data={"email": EMAIL, "password": PASSWORD,
                                               "csrfmiddlewaretoken": session.cookies["csrftoken"]})
        assert "sessionid" in session.cookies, r.text[:500]
        yield ws, url, session
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def api_token(session: httpx.Client) -> str:
    """A personal access token, made as a person would on "Account & Settings"."""
    r = session.post("/api/token/", headers={"X-CSRFToken": session.cookies["csrftoken"]})
    assert r.status_code in (200, 201), r.text
    return r.json()["token"]


def run_client(*args: str, token: str) -> str:
    """synthloop.data.labelstudio inside the Label Studio environment (it has the SDK)."""
    env = {**os.environ, "LABEL_STUDIO_API_KEY": token, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([str(LS_VENV / "bin" / "python"), "-m", "synthloop.data.labelstudio", *args],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def test_label_studio_round_trip(labelstudio, tmp_path):
    ws, url, session = labelstudio
    overrides = [f"workspace={ws}", "labeling.oracle=labelstudio",
                 "labeling.preannotation_min_score=0.0", "versioning.push=false"]
    cfg = load_config(DEMO_CONFIG, overrides=overrides)
    make_pool(cfg, 4, 320, 240)
    version = register_tiny_models(cfg, tmp_path / "models", 1)[0]
    batch = QueryBatch(strategy="dbal", params={"k": 3}, seed=0, model_version=version,
                       pool_md5="pool-v1", image_ids=(1, 2, 3), scores=(0.3, 0.2, 0.1),
                       new_label_ids=(1, 2, 3))
    write_record(Workspace.of(cfg).cycle_dir(1) / "query.json", batch.to_dict())
    manifest = export_batch(cfg, 1, batch)
    folder = export_folder(cfg, 1)

    token = api_token(session)
    project = int(run_client("push", "--url", url, "--export", str(folder), "--local-root",
                             str(ws / "data" / "pool" / "images"), token=token))
    access = httpx.post(f"{url}/api/token/refresh/", json={"refresh": token}).json()["access"]
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {access}"}, timeout=60)
    tasks = api.get("/api/tasks", params={"project": project, "fields": "all"}).json()["tasks"]
    assert len(tasks) == 3
    by_image = {t["data"]["synthloop_image_id"]: t for t in tasks}
    image = api.get(by_image[1]["data"]["image"])
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/")

    if shutil.which("chromium"):
        shot = chromium_screenshot(f"{url}/projects/{project}/data?task={by_image[1]['id']}",
                                   tmp_path / "labelstudio-preannotations.png",
                                   cookies={"sessionid": session.cookies["sessionid"]}, wait_s=12)
        assert shot.stat().st_size > 20_000
        if os.environ.get("SYNTHLOOP_SCREENSHOT_DIR"):
            shutil.copy(shot, Path(os.environ["SYNTHLOOP_SCREENSHOT_DIR"]) / shot.name)

    def predictions(image_id: int) -> list[dict]:
        task = api.get(f"/api/tasks/{by_image[image_id]['id']}").json()
        return task["predictions"][0]["result"]

    kept = predictions(1)[:2]  # accepted as the model drew them
    moved = json.loads(json.dumps(predictions(2)[0]))
    moved["value"].update(x=10.0, y=10.0, width=25.0, height=30.0)  # dragged to the real part
    for image_id, body in ((1, {"result": kept}), (2, {"result": [moved]}),
                           (3, {"result": [], "was_cancelled": True})):  # "Skip"
        r = api.post(f"/api/tasks/{by_image[image_id]['id']}/annotations/",
                     json={**body, "lead_time": 3.0})
        assert r.status_code == 201, r.text

    answers = tmp_path / "answers.json"
    run_client("pull", "--url", url, "--project", str(project), "--out", str(answers), token=token)
    rec = import_answers(cfg, 1, answers)
    assert rec["returned"] == [1, 2] and rec["skipped"] == [3] and rec["pending"] == []
    assert rec["savings"]["boxes_final"] == 3 and rec["savings"]["boxes_accepted"] == 2
    ref = label.run(cfg, cycle=1, batch=batch)
    assert ref.num_images == 2 and label.labeled_ids(cfg) == {1, 2}  # image 3 stays in the pool
    assert len(manifest.preannotations) >= 3


DEMO = ROOT / "workspace" / "demo"


@pytest.mark.allow_skip(reason="opt-in docs screenshot: needs SYNTHLOOP_SCREENSHOT_DIR, chromium "
                                "and a finished make demo")
@pytest.mark.skipif(not (os.environ.get("SYNTHLOOP_SCREENSHOT_DIR") and shutil.which("chromium")
                         and (DEMO / "checkpoints" / "cycle_3" / "checkpoint.pt").is_file()),
                    reason="docs screenshot: set SYNTHLOOP_SCREENSHOT_DIR, needs chromium and a "
                           "finished `make demo`")
def test_docs_screenshot_with_the_demo_champion(labelstudio, tmp_path):
    """The labelling view of a real query batch: demo pool images, the demo model's boxes."""
    import mlflow
    from mlflow import MlflowClient

    from synthloop import tracking
    from synthloop.data.coco import CocoDataset
    from synthloop.gating.registry import register_version

    ws, url, session = labelstudio
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={ws}", "labeling.oracle=labelstudio",
                                              "labeling.preannotation_min_score=0.5"])
    pool = CocoDataset.load(DEMO / "data" / "pool" / "annotations.json")
    chosen = pool.subset([im.id for im in pool.images[:6]])
    (ws / "data" / "pool" / "images").mkdir(parents=True)
    for im in chosen.images:
        shutil.copy(pool.image_path(im), ws / "data" / "pool" / "images" / im.file_name)
    chosen.with_image_root(ws / "data" / "pool" / "images").save(ws / "data" / "pool" / "annotations.json")
    tracking.setup(cfg)
    with mlflow.start_run() as run:
        uri = tracking.log_detector(DEMO / "checkpoints" / "cycle_3" / "checkpoint.pt")
    version = register_version(MlflowClient(), cfg.registered_model_name, uri, run.info.run_id, {})
    ids = tuple(im.id for im in chosen.images)
    batch = QueryBatch(strategy="dbal", params={}, seed=0, model_version=version, pool_md5="demo",
                       image_ids=ids, scores=tuple(0.0 for _ in ids), new_label_ids=ids)
    manifest = export_batch(cfg, 1, batch)
    best = max(ids, key=lambda i: sum(p.image_id == i for p in manifest.preannotations))
    project = int(run_client("push", "--url", url, "--export", str(export_folder(cfg, 1)),
                             "--local-root", str(ws / "data" / "pool" / "images"),
                             token=api_token(session)))
    tasks = session.get("/api/tasks", params={"project": project}).json()["tasks"]
    task = next(t for t in tasks if t["data"]["synthloop_image_id"] == best)
    shot = chromium_screenshot(f"{url}/projects/{project}/data?task={task['id']}",
                               Path(os.environ["SYNTHLOOP_SCREENSHOT_DIR"]) / "labelstudio-preannotations.png",
                               cookies={"sessionid": session.cookies["sessionid"]}, wait_s=12)
    assert shot.stat().st_size > 20_000
