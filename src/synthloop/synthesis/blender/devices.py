"""Which device Cycles renders on (``render.device``: auto | gpu | cpu), set through bpy's
preferences in the worker, and the fall-back to the CPU when a GPU render fails.

``choose`` looks for GPUs in the order OptiX, CUDA (the first back-end with a device wins, all
of its devices are used); ``cpu`` never looks. ``gpu`` without a GPU renders on the CPU with a
log line (a shard never dies for want of a GPU). ``render_with_fallback`` redoes an image on the
CPU when the GPU render raised, and the rest of the shard stays on the CPU.

Call ``apply`` after ``scene.build``: ``read_factory_settings`` resets the preferences.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Callable

GPU_BACKENDS = ("OPTIX", "CUDA")
MODES = ("auto", "gpu", "cpu")
# Fault injection for the tests (tests/integration/test_render_devices.py), like
# synthloop.faults: SYNTHLOOP_FAULT=render.gpu_failure@N makes this worker believe it has a GPU
# and makes its N-th render (default 1) on it raise, as a driver failure would.
FAULT = "render.gpu_failure"


@dataclass
class DeviceChoice:
    """``device``: "GPU" or "CPU" (``scene.cycles.device``); ``backend``: OPTIX, CUDA or NONE;
    ``devices``: the names Blender lists for it; ``note``: why, when not what was asked."""

    requested: str
    device: str = "CPU"
    backend: str = "NONE"
    devices: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def label(self) -> str:
        if self.device == "CPU":
            return "CPU"
        return f"GPU ({self.backend}: {', '.join(self.devices)})"

    def record(self) -> dict:
        return {**asdict(self), "label": self.label}


def _say(message: str) -> None:
    print(f"synthloop-worker: {message}", flush=True)


def _injected_gpu_failure() -> int | None:
    """The render number (1-based) the fault injection fails at, or None."""
    wanted = os.environ.get("SYNTHLOOP_FAULT", "")
    target, _, nth = wanted.partition("@")
    return (int(nth) if nth else 1) if target == FAULT else None


def choose(mode: str) -> DeviceChoice:
    """Enable the GPUs of the first back-end that has one (OptiX, then CUDA) in the Cycles
    preferences, unless ``mode`` is ``cpu``. Prints the choice (the shard's log)."""
    import bpy

    if mode not in MODES:
        raise ValueError(f"render.device {mode!r}: give one of {', '.join(MODES)}")
    choice = DeviceChoice(requested=mode)
    if mode != "cpu":
        if _injected_gpu_failure() is not None:
            choice.device, choice.backend = "GPU", "CUDA"
            choice.devices = ["fault-injected GPU (SYNTHLOOP_FAULT)"]
        else:
            prefs = bpy.context.preferences.addons["cycles"].preferences
            for backend in GPU_BACKENDS:
                try:
                    prefs.compute_device_type = backend
                    prefs.refresh_devices()
                    found = [d for d in prefs.get_devices_for_type(backend) if d.type != "CPU"]
                except (TypeError, RuntimeError, ValueError) as exc:  # a build without it
                    _say(f"Cycles back-end {backend} unavailable ({exc})")
                    continue
                if found:
                    for dev in prefs.get_devices_for_type(backend):
                        dev.use = dev.type != "CPU"  # the GPUs only: the CPU would slow them
                    choice.device, choice.backend = "GPU", backend
                    choice.devices = [d.name for d in found]
                    break
            else:
                prefs.compute_device_type = "NONE"
                choice.note = "no OptiX or CUDA device found"
    if mode == "gpu" and choice.device == "CPU":
        _say(f"render.device is gpu but Blender found no GPU ({choice.note}): rendering on the CPU")
    _say(f"rendering on {choice.label} (render.device {mode})")
    return choice


def apply(scene, choice: DeviceChoice) -> None:
    """Point ``scene``'s Cycles at the chosen device."""
    scene.cycles.device = choice.device


def fall_back_to_cpu(scene, choice: DeviceChoice, error: BaseException) -> DeviceChoice:
    """The CPU from now on for this worker, with the reason in the log and the record."""
    import bpy

    reason = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    _say(f"GPU render failed on {choice.label} ({reason}): falling back to the CPU "
         "for the rest of this shard")
    bpy.context.preferences.addons["cycles"].preferences.compute_device_type = "NONE"
    cpu = DeviceChoice(requested=choice.requested,
                       note=f"fell back from {choice.label} after: {reason}")
    apply(scene, cpu)
    return cpu


class Renderer:
    """Renders with the current choice; a GPU failure switches to the CPU and redoes the image.
    ``current`` is the choice that rendered the last image (record it)."""

    def __init__(self, scene, choice: DeviceChoice, render: Callable[[], None]) -> None:
        self.scene, self.current, self._render = scene, choice, render
        self._gpu_renders = 0
        self._fail_at = _injected_gpu_failure()
        apply(scene, choice)

    def use_scene(self, scene) -> None:
        """A rebuilt scene (``read_factory_settings`` reset the preferences): same device."""
        self.scene = scene
        if self.current.device == "GPU" and self._fail_at is None:
            import bpy

            prefs = bpy.context.preferences.addons["cycles"].preferences
            prefs.compute_device_type = self.current.backend
            prefs.refresh_devices()
            for dev in prefs.get_devices_for_type(self.current.backend):
                dev.use = dev.type != "CPU"
        apply(scene, self.current)

    def render(self) -> DeviceChoice:
        if self.current.device == "GPU":
            self._gpu_renders += 1
            try:
                if self._fail_at is not None and self._gpu_renders >= self._fail_at:
                    raise RuntimeError("CUDA error: an illegal memory access was encountered "
                                       "(injected by SYNTHLOOP_FAULT)")
                self._render()
                return self.current
            except Exception as exc:  # any GPU-side failure: this image again, on the CPU
                self.current = fall_back_to_cpu(self.scene, self.current, exc)
        self._render()
        return self.current
