"""A `synthloop stack` for tests: free ports, a data folder under /tmp, always brought down.

The data folder is NOT under pytest's tmp_path: that lives in a private folder (0700) that the
`postgres` user, which runs PostgreSQL when the tests run as root, cannot enter.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import yaml

from tests_support import DEMO_CONFIG, ROOT, free_ports


@contextlib.contextmanager
def stack_folder() -> Iterator[Path]:
    """A fresh folder under /tmp that the postgres user can enter; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="synthloop-stack-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_stack_config(folder: Path, *, pipeline: Path = DEMO_CONFIG, **sections: dict) -> Path:
    """infra/stack.yaml with free ports, data_dir=<folder>/data, this repository's prefect.yaml."""
    tree = yaml.safe_load((ROOT / "infra" / "stack.yaml").read_text())
    pg, s3, mlflow, prefect, serve = free_ports(5)
    tree.update(data_dir=str(folder / "data"), project_dir=str(ROOT))
    tree["postgres"]["port"] = pg
    tree["s3"]["port"] = s3
    tree["mlflow"]["port"] = mlflow
    tree["prefect"]["port"] = prefect
    tree["serve"].update(port=serve, pipeline=str(pipeline))
    for key, values in sections.items():
        tree[key].update(values)
    path = folder / "stack.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def toy_pipeline_on_stack(tmp_path: Path, folder: Path, *, model: str, **sections: dict
                          ) -> tuple[Path, object]:
    """A toy pipeline (``tmp_path/toy.yaml``, workspace ``tmp_path/ws``) whose tracking and
    registry (``model``) live on the stack of ``folder``, ingesting from ``tmp_path/camera``
    and gated so that any cycle promotes (these tests are about plumbing); ``sections`` merge
    into the pipeline. Returns (the stack config, its settings)."""
    from synthloop.stack.settings import load_stack
    from tests_support import write_toy_pipeline

    config = write_stack_config(folder, pipeline=tmp_path / "toy.yaml")
    st = load_stack(config)
    write_toy_pipeline(tmp_path, update={
        "tracking": {"uri": st.mlflow_url, "registered_model": model},
        "ingest": {"source": str(tmp_path / "camera")}, "trigger": {"pool_growth_min": 3},
        "gate": {"min_improvement": -1.0, "bootstrap_resamples": 0, "max_class_drop": 1.0},
        **sections})
    return config, st


@contextlib.contextmanager
def running_stack(config: Path) -> Iterator[object]:
    """``stack up`` (in this process); ``stack down`` whatever happens. Yields the settings."""
    from synthloop.stack.lifecycle import down, up
    from synthloop.stack.settings import load_stack

    settings = load_stack(config)
    try:
        up(settings, echo=lambda line: None)
        yield settings
    finally:
        down(settings, echo=lambda line: None)


def synthloop(*args: str, env: dict | None = None, check: bool = True) -> str:
    """``synthloop ARGS`` in a subprocess; its stdout (asserts exit 0 when ``check``)."""
    proc = subprocess.run([sys.executable, "-m", "synthloop", *args], capture_output=True,
                          text=True, timeout=1200, env={**os.environ, **(env or {})})
    assert proc.returncode == 0 or not check, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def mirrored_camera_images(ws: Path, camera: Path, n: int, *, vertical: bool = False,
                           rotated: bool = False) -> None:
    """``n`` validation renders, mirrored (``vertical``: flipped upside down; ``rotated``: both,
    a half turn) so they are new pixels, not duplicates, with their boxes moved too: the
    simulated camera's ground truth."""
    from PIL import Image, ImageOps

    val = json.loads((ws / "data" / "val" / "annotations.json").read_text())
    camera.mkdir(parents=True)
    images, anns = [], []
    for im in val["images"][:n]:
        src = ws / "data" / "val" / "images" / im["file_name"]
        name = f"cam_{im['id']}.png"
        flip = (lambda img: ImageOps.flip(ImageOps.mirror(img))) if rotated else (
            ImageOps.flip if vertical else ImageOps.mirror)
        flip(Image.open(src).convert("RGB")).save(camera / name)
        images.append({**im, "file_name": name})
        for a in val["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, w, h = a["bbox"]
                box = ([im["width"] - x - w, im["height"] - y - h, w, h] if rotated else
                       [x, im["height"] - y - h, w, h] if vertical else
                       [im["width"] - x - w, y, w, h])
                anns.append({**a, "bbox": box})
    (camera / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": val["categories"]}))


def get_json(url: str) -> dict:
    """GET ``url`` as JSON (the error body for 4xx/5xx)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def wait_for(what: str, fn, timeout_s: float, every_s: float = 3.0):
    """Poll ``fn`` until it returns something truthy; returns that."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        value = fn()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
