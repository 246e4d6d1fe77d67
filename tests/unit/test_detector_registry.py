"""Detector backends and architectures are looked up by name in ``detection/registry.py``: one
line there (plus the implementation) is all that adding one takes, config validation included."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from synthloop import tracking
from synthloop.config import DetectorConfig
from synthloop.detection import (build_detector, load_checkpoint, predict_with_probs_and_features,
                                 registry, save_checkpoint)
from synthloop.detection.architectures import build_mobilenet
from synthloop.detection.torchvision_backend import BACKEND as TORCHVISION, RoIHeadsWithProbs

CALLS: list[str] = []


def build_tiny(cfg, num_classes, kwargs):
    """An architecture defined in this test module only."""
    CALLS.append(f"arch:{cfg.architecture}")
    return build_mobilenet(cfg, num_classes, kwargs)


class RecordingBackend:
    """A backend defined in this test module only: torchvision's, recording what is asked."""

    name = "recording"
    exportable = False

    def build(self, *, cfg, num_classes):
        CALLS.append("build")
        model = TORCHVISION.build(cfg=cfg.model_copy(update={"weights": None}),
                                  num_classes=num_classes)
        if cfg.weights is not None:
            self.load_weights(model, cfg.weights, num_classes=num_classes)
        model.detector_cfg = cfg
        return model

    def load_weights(self, model, source, *, num_classes):
        CALLS.append("load_weights")
        TORCHVISION.load_weights(model, source, num_classes=num_classes)

    def open_scorer(self, model):
        CALLS.append("open_scorer")
        return TORCHVISION.open_scorer(model)

    def requirements(self, cfg):
        return ("torch", "torchvision", "pytest")


BACKEND = RecordingBackend()


@pytest.fixture
def added(monkeypatch):
    monkeypatch.setitem(registry.ARCHITECTURES, "tiny_test_fpn", f"{__name__}:build_tiny")
    monkeypatch.setitem(registry.BACKENDS, "recording", f"{__name__}:BACKEND")
    CALLS.clear()


def test_an_added_backend_and_architecture_go_through_config_build_checkpoint_and_scoring(
        added, tmp_path):
    cfg = DetectorConfig(backend="recording", architecture="tiny_test_fpn", min_size=64, max_size=64)
    torch.manual_seed(0)
    model = build_detector(cfg=cfg, num_classes=2)
    assert isinstance(model.roi_heads, RoIHeadsWithProbs)
    path = save_checkpoint(model, tmp_path / "c.pt", cfg=cfg, num_classes=2)
    again = load_checkpoint(path)
    assert again.detector_cfg == cfg
    fine_tuned = build_detector(cfg=cfg.model_copy(update={"weights": str(path)}), num_classes=2)
    scores = predict_with_probs_and_features(fine_tuned, [torch.rand(3, 64, 64)], batch_size=1,
                                             progress=False)
    assert scores[0].feature.shape == (256,) and scores[0].probs.shape[1] == 3
    assert CALLS == ["build", "arch:tiny_test_fpn",  # build_detector
                     "build", "arch:tiny_test_fpn",  # load_checkpoint rebuilds, then its weights
                     "build", "arch:tiny_test_fpn", "load_weights",  # weights: a checkpoint
                     "open_scorer"]
    assert any(r.startswith("pytest==") for r in tracking.model_requirements(cfg))


def test_unknown_names_are_config_errors_listing_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown detector backend 'nope'; known: mmdet, torchvision"):
        DetectorConfig(backend="nope")
    with pytest.raises(ValueError, match=r"unknown detector architecture 'nope'; known: .*resnet50_fpn"):
        DetectorConfig(architecture="nope")


def test_names_are_checked_without_importing_torch():
    code = ("import sys; from synthloop.config import DetectorConfig; "
            "DetectorConfig(backend='mmdet', architecture='efficientnet_lite0_fpn'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_only_the_torchvision_backend_is_exportable():
    """What training (export at registration) and scoring (exported_or_torch) ask of a backend."""
    from synthloop.detection import get_backend

    assert get_backend("torchvision").exportable and not get_backend("mmdet").exportable
