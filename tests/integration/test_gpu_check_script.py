"""benchmarks/gpu_check.py, the script a GPU session runs (issue 19), at toy size on the CPU:
every section runs through the product code and lands in the JSON with its images/s."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests_support import ROOT


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.render
def test_gpu_check_runs_at_toy_size_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    assert _script().main(["--tiny", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tiny"] and result["machine"]["device"] == "cpu"
    sections = result["sections"]
    assert set(sections) == {"train", "score", "render"}
    for name, per_device in sections.items():
        assert list(per_device) == ["cpu"], (name, per_device)  # no GPU: no second column
        rec = per_device["cpu"]
        assert "error" not in rec, (name, rec)
        assert rec["images_per_s"] > 0
    assert sections["train"]["cpu"]["precision"] == "float32"  # no mixed precision on the CPU
    assert sections["train"]["cpu"]["loader_workers"] == 0
    assert sections["score"]["cpu"]["images"] == 4
    assert sections["render"]["cpu"]["devices"] == {"CPU": sections["render"]["cpu"]["images"]}
