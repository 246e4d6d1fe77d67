"""runtime.device at the command line: asking for a GPU this machine lacks is one line and exit
status 2 before any work starts; `synthloop evaluate --device` picks where the model runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from synthloop.cli import app
from synthloop.config import DetectorConfig
from synthloop.detection import build_detector, save_checkpoint
from test_evaluate_cli import MODEL_CLASSES, write_yolo
from tests_support import DEMO_CONFIG, ROOT

NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    det = DetectorConfig(min_size=64, max_size=96)
    return save_checkpoint(build_detector(cfg=det, num_classes=2),
                           tmp_path_factory.mktemp("model") / "tiny.pt", cfg=det, num_classes=2,
                           extra={"class_names": MODEL_CLASSES})


@pytest.mark.slow
@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
@pytest.mark.allow_skip(reason="with a GPU, cuda is not an error")
def test_cuda_without_a_gpu_stops_the_cli_before_any_work(tmp_path):
    ws = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "synthloop", "render", "synthetic", "-c",
                           str(DEMO_CONFIG), "-w", str(ws), "--set", "runtime.device=cuda"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "runtime.device is 'cuda' but torch sees no CUDA GPU" in lines[0]
    assert not ws.exists()  # nothing half-written


def test_a_bad_device_name_is_a_config_error(tmp_path):
    result = CliRunner().invoke(app, ["render", "synthetic", "-c", str(DEMO_CONFIG), "-w",
                                      str(tmp_path / "ws"), "--set", "runtime.device=gpu"])
    assert result.exit_code == 2
    assert "runtime" in result.output and "give auto, cpu, cuda or cuda:N" in result.output
    assert not (tmp_path / "ws").exists()


@pytest.mark.slow
@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
@pytest.mark.allow_skip(reason="with a GPU, cuda:N may exist")
def test_evaluate_device_flag(tmp_path, checkpoint):
    data = write_yolo(tmp_path / "photos", MODEL_CLASSES)
    refused = CliRunner().invoke(app, ["evaluate", "-m", str(checkpoint), "-d", str(data),
                                       "--device", "cuda:1", "-o", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "no CUDA GPU" in refused.output
    assert not (tmp_path / "no").exists()
    ok = CliRunner().invoke(app, ["evaluate", "-m", str(checkpoint), "-d", str(data),
                                  "--device", "cpu", "-o", str(tmp_path / "out"),
                                  "--examples", "0"])
    assert ok.exit_code == 0, ok.output
    assert "AP" in json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
