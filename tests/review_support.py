"""A pipeline workspace without Blender, and a headless Chromium that reads MLflow's pages.

``tiny_workspace`` writes data/synthetic, data/val and data/pool (ground truth kept in
oracle/pool.json) as the render stage leaves them: 96x72 images of bright boxes on noise. The
render stage then finds them and skips, so ``run_pipeline`` runs every other stage for real
(pretrain, score, query, label, finetune, gate; MLflow, DVC): M0 and one cycle in about two
minutes on 2 busy cores.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from tests_support import write_toy_pipeline

SIZES = {"synthetic": 16, "val": 6, "pool": 12}
W, H = 96, 72


def _images(folder: Path, n: int, *, seed: int, class_names: list[str]):
    """``n`` images of 1-2 boxes; returns the COCO dataset (boxes [x, y, w, h] pixels)."""
    from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for

    rng = np.random.default_rng(seed)
    images, anns = [], []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        arr = (rng.random((H, W, 3)) * 90).astype(np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            w, h = int(rng.integers(18, 34)), int(rng.integers(14, 26))
            x, y = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
            arr[y:y + h, x:x + w] = (230, 200, 60)
            anns.append(CocoAnnotation(len(anns) + 1, i, 1, (float(x), float(y), float(w),
                                                             float(h)), float(w * h)))
        name = f"{i:06d}.jpg"
        Image.fromarray(arr).save(folder / "images" / name, quality=92)
        images.append(CocoImage(i, name, W, H))
    return CocoDataset(images, anns, categories_for(class_names), folder / "images")


def tiny_workspace(folder: Path, *, cycles: int = 1, update: dict | None = None):
    """The toy demo pipeline's config with its data already in place; returns the config."""
    from synthloop.config import load_config
    from synthloop.stages.workspace import Workspace

    path = write_toy_pipeline(folder, update={"active": {"cycles": cycles},
                                              **(update or {})})
    cfg = load_config(path)
    ws = Workspace.of(cfg)
    names = list(cfg.class_names)
    for seed, (domain, n) in enumerate(SIZES.items()):
        target = ws.dataset_dir(domain)
        ds = _images(target, n, seed=seed, class_names=names)
        if domain == "pool":
            ds.save(ws.oracle / "pool.json")
            ds = ds.without_annotations()
        ds.save(target / "annotations.json")
    return cfg


# ------------------------------------------------------------------------- MLflow UI + browser
def start_mlflow_ui(tracking_uri: str, port: int, log: Path) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port`` over ``tracking_uri`` (one worker, no job
    runner: STACK.md's settings for 2 cores); returns once it answers /health."""
    import os
    import sys

    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"mlflow server did not answer in 120 s: {log.read_text()[-2000:]}")
