"""render.device with real Blender (bpy, Cycles) at toy size: the device each image rendered on is
in its marker and in the shard's log; a GPU that fails mid-shard falls back to the CPU.

There is no GPU here: the GPU failure is injected (SYNTHLOOP_FAULT=render.gpu_failure@N makes
the worker believe it has a GPU and makes its N-th render on it raise, as a driver error would);
everything else is the real worker rendering real images.
"""

import json

import pytest

from synthloop.config import DomainConfig, PartSpec, RenderConfig
from synthloop.data.coco import CocoDataset
from synthloop.synthesis.render import render_domain

pytestmark = pytest.mark.render

PARTS = [PartSpec(name="blade", procedural="turbine_blade")]
DOMAIN = DomainConfig(num_images=3, seed=5, width=48, height=32, samples=1, min_visibility=0.0)


@pytest.fixture(scope="module")
def python(render_python):
    return render_python  # conftest's: .venv-render with bpy (a failure under CI when missing)


def _render(tmp_path, python, device):
    out = tmp_path / device
    cfg = RenderConfig(blender_python=python, workers=1, shard_size=DOMAIN.num_images,
                       threads=1, device=device)
    render_domain(DOMAIN, PARTS, ["blade"], out, render_cfg=cfg, progress=False)
    markers = [json.loads((out / "raw" / f"{i:06d}.json").read_text())
               for i in range(DOMAIN.num_images)]
    log = "\n".join(p.read_text() for p in (out / "raw" / "logs").glob("*.log"))
    return out, markers, log


def test_cpu_renders_on_the_cpu_and_says_so(tmp_path, python):
    out, markers, log = _render(tmp_path, python, "cpu")
    assert [m["render_device"]["device"] for m in markers] == ["CPU"] * 3
    assert all(m["render_device"]["requested"] == "cpu" for m in markers)
    assert "rendering on CPU (render.device cpu)" in log
    assert len(CocoDataset.load(out / "annotations.json").images) == 3


def test_gpu_without_a_gpu_renders_on_the_cpu_with_a_log_line(tmp_path, python):
    _, markers, log = _render(tmp_path, python, "gpu")
    record = markers[0]["render_device"]
    if record["device"] == "GPU":  # a machine with a GPU: it was used
        assert record["backend"] in ("OPTIX", "CUDA") and record["devices"]
        assert f"rendering on {record['label']}" in log
    else:
        assert record["note"] == "no OptiX or CUDA device found"
        assert "render.device is gpu but Blender found no GPU" in log
        assert all(m["render_device"]["device"] == "CPU" for m in markers)


def test_a_gpu_failure_mid_shard_falls_back_to_the_cpu(tmp_path, python, monkeypatch):
    monkeypatch.setenv("SYNTHLOOP_FAULT", "render.gpu_failure@2")  # the 2nd GPU render fails
    out, markers, log = _render(tmp_path, python, "auto")
    devices = sorted(m["render_device"]["device"] for m in markers)
    assert devices == ["CPU", "CPU", "GPU"]  # one on the "GPU", then the CPU for the rest
    fallen = [m["render_device"] for m in markers if m["render_device"]["device"] == "CPU"]
    assert all("fell back from GPU (CUDA" in r["note"] and "injected" in r["note"]
               for r in fallen)
    assert "GPU render failed on GPU (CUDA" in log and "falling back to the CPU" in log
    # the shard finished: every image rendered and annotated, none lost to the failure
    ds = CocoDataset.load(out / "annotations.json")
    assert len(ds.images) == 3
    assert all((out / "raw" / f"{i:06d}.png").is_file() for i in range(3))
