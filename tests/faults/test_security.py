"""Security promises: checkpoints never run pickled code, serving enforces size and type limits.

(Secrets never reaching MLflow, logs or reports: test_kill_matrix.py greps a whole toy run.
Paths confined to their roots: test_bad_inputs.py, COCO file names and label imports.)
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest


class _Payload:
    """Unpickling this runs ``touch <marker>``: what a poisoned checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path, report):
    import torch

    from synthloop.detection import load_checkpoint, read_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "synthloop-detector/1", "model": {}, "extra": _Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError) as err:
        read_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    assert not marker.exists(), "the checkpoint ran code"
    assert "weights_only" in str(err.value) or "Unsupported global" in str(err.value)
    report("security: a checkpoint carrying pickled code (os.system in __reduce__)",
           "refused by torch.load(weights_only=True) with UnpicklingError; the code never ran",
           "n/a")


@pytest.mark.slow
@pytest.mark.parametrize("what, body, ctype, status, words", [
    ("an oversized body (100001 bytes > 100000)", b"x" * 100_001, "image/jpeg", 413,
     "limit is 100000"),
    ("too many pixels (600x600 PNG > 250000 px)", "big", "image/png", 413, "the limit is 250000"),
    ("a non-image content type (text/plain)", b"hello", "text/plain", 415,
     "unsupported content type"),
    ("an image format outside JPEG/PNG (GIF)", "gif", "image/png", 400,
     "unsupported image format GIF"),
    ("bytes that are not an image", b"\xff\xd8 not a jpeg", "image/jpeg", 400, "not a JPEG or PNG"),
])
def test_serving_enforces_size_and_type_limits(served, what, body, ctype, status, words, report):
    import httpx

    from people_support import image_bytes

    if body == "big":
        body = image_bytes(600, 600, "PNG", False)
    elif body == "gif":
        body = image_bytes(20, 20, "GIF", False)
    r = httpx.post(f"{served}/predict", content=body, headers={"content-type": ctype})
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert httpx.get(f"{served}/health").status_code == 200  # and the server is still up
    report(f"serving: {what}", f"HTTP {status}: {r.json()['detail'][:120]}; server keeps serving",
           "n/a")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from mlflow import MlflowClient

    from people_support import register_tiny_models
    from serve_support import loopback_server
    from synthloop.config import load_config
    from synthloop.serve.app import build_app
    from tests_support import DEMO_CONFIG

    ws = tmp_path_factory.mktemp("serve")
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={ws}", "serve.max_image_bytes=100000",
                                              "serve.max_image_pixels=250000"])
    versions = register_tiny_models(cfg, ws)
    MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion", versions[0])
    with loopback_server(build_app(cfg, poll_seconds=5)) as base:
        yield base
