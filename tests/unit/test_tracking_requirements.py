"""The logged model's pip requirements come from the installed distributions of what the model
needs (its backend's, the pyfunc's), not from a hand-copied list: an mmdet model names mmdet."""

from __future__ import annotations

from importlib.metadata import version
from types import SimpleNamespace

import mlflow
import mlflow.pyfunc
import pytest

from synthloop import __version__, tracking
from synthloop.config import DetectorConfig
from synthloop.detection.checkpoint import FORMAT, write_payload

MMDET = ("mmengine", "mmcv", "mmdet")


def pins(requirements: list[str]) -> dict[str, str]:
    return dict(line.split("==", 1) for line in requirements)


@pytest.mark.parametrize("backend", ["torchvision", pytest.param("mmdet", marks=pytest.mark.mmdet)])
def test_requirements_pin_the_installed_distributions_of_the_backend(backend):
    got = pins(tracking.model_requirements(DetectorConfig(backend=backend)))
    needed = ["torch", "torchvision", "numpy", "pillow", "pandas"]
    needed += list(MMDET) if backend == "mmdet" else []
    assert set(got) == {*needed, "synthloop"}
    for name in needed:
        assert got[name] == version(name).split("+")[0], name
    assert got["synthloop"] == __version__


def test_a_missing_distribution_is_named():
    with pytest.raises(Exception, match="no-such-dist-14 is needed by the logged model"):
        tracking.installed_pin("no-such-dist-14")


@pytest.mark.mmdet
def test_log_detector_gives_mlflow_the_requirements_of_the_checkpoints_backend(tmp_path,
                                                                               monkeypatch):
    """What ``log_detector`` hands MLflow for an mmdet checkpoint: the pins come from the
    checkpoint's own detector config (its weights are not read). MLflow's log_model is replaced
    by a recorder: the product code runs, nothing is written to a tracking store."""
    cfg = DetectorConfig(backend="mmdet")
    ckpt = write_payload({"format": FORMAT, "model": {}, "detector": cfg.model_dump(mode="json"),
                          "num_classes": 2, "extra": {}}, tmp_path / tracking.CHECKPOINT_NAME)
    seen = {}

    def record(**kwargs):
        seen.update(kwargs)
        return SimpleNamespace(model_uri="models:/m-recorded")

    monkeypatch.setattr(mlflow.pyfunc, "log_model", record)
    assert tracking.log_detector(ckpt) == "models:/m-recorded"
    lines = seen["pip_requirements"]
    assert {f"{n}=={version(n)}" for n in MMDET} <= set(lines), lines
    assert f"torch=={version('torch').split('+')[0]}" in lines
    assert seen["artifacts"] == {"checkpoint": str(ckpt)}
