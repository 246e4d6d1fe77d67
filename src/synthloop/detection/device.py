"""Where the detector runs: ``runtime.device`` (``auto | cpu | cuda | cuda:N``) resolved once, and
what a device changes in training (mixed precision, DataLoader workers, determinism).

``resolve_device`` is the one place that turns the setting into a ``torch.device``; every stage
that builds or loads a detector goes through it (``build_detector``/``load_checkpoint`` take its
result). Models are always built on the CPU first (the seeded initialisation is then the same on
every device) and moved; images, targets and outputs follow ``model_device(model)``; whatever a
stage stores (checkpoints, predictions, scores) is moved back to the CPU.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
from torch import nn

from synthloop.config import DEVICE_SPEC_PATTERN, ConfigError

log = logging.getLogger(__name__)

DEVICE_SPEC = re.compile(DEVICE_SPEC_PATTERN)
_LOGGED: set[str] = set()


class DeviceUnavailableError(ConfigError):
    """``runtime.device`` asks for a device this machine does not have."""


def check_device_spec(spec: str) -> str:
    """``spec`` unchanged when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; else ValueError."""
    if not isinstance(spec, str) or not DEVICE_SPEC.match(spec):
        raise ValueError(f"runtime.device {spec!r}: give auto, cpu, cuda or cuda:N")
    return spec


def resolve_device(spec: str = "auto") -> torch.device:
    """The ``torch.device`` for a ``runtime.device`` setting.

    ``auto``: ``cuda`` when ``torch.cuda.is_available()``, else ``cpu`` (the choice is logged once
    per process). ``cuda`` / ``cuda:N`` without that GPU raise ``DeviceUnavailableError`` (a
    ``ConfigError``: the CLI ends with one line and exit status 2).
    """
    check_device_spec(spec)
    if spec == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if spec == "auto":
        device = torch.device("cuda" if available else "cpu")
        if spec not in _LOGGED:
            _LOGGED.add(spec)
            name = torch.cuda.get_device_name(device) if available else "no CUDA GPU visible"
            log.info("runtime.device auto: using %s (%s)", device, name)
        return device
    if not available:
        raise DeviceUnavailableError(
            f"runtime.device is {spec!r} but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'}, CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): "
            "set runtime.device to auto or cpu")
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceUnavailableError(f"runtime.device is {spec!r} but this machine has {count} "
                                     f"CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    return device


def model_device(model: nn.Module | Any) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither,
    or for something that is no ``nn.Module`` (an exported scorer runs on the CPU)."""
    if isinstance(model, nn.Module):
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            return tensor.device
    return torch.device("cpu")


def autocast_dtype(device: torch.device, *, enabled: bool = True,
                   bf16_supported: bool | None = None) -> torch.dtype | None:
    """The mixed-precision dtype on ``device``: bfloat16 where the GPU supports it, else float16;
    None (full float32) on the CPU or when ``enabled`` is False."""
    if not enabled or device.type != "cuda":
        return None
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else torch.float16


@dataclass
class Precision:
    """Mixed precision for one training run: ``autocast()`` around the forward pass and
    ``scaler`` (a ``torch.amp.GradScaler``, float16 only) around backward and the step.
    On the CPU both are no-ops: the loop is exactly the float32 loop."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: Any | None

    def autocast(self) -> ContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Before gradient clipping: gradients back at their true scale."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)  # skips the step when a gradient overflowed
            self.scaler.update()


def training_precision(device: torch.device, *, enabled: bool = True) -> Precision:
    """bf16 autocast (no scaler) or fp16 autocast with a GradScaler on CUDA; float32 on the CPU."""
    dtype = autocast_dtype(device, enabled=enabled)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return Precision(device=device, dtype=dtype, scaler=scaler)


def loader_options(device: torch.device, *, workers: int | None = None) -> dict[str, Any]:
    """DataLoader keyword arguments for ``device``: on CUDA ``workers`` processes (None: up to 4,
    at most the CPU count) and pinned memory; on the CPU none of either (decoding in the main
    process keeps the CPU results exactly as they were)."""
    if device.type != "cuda":
        return {"num_workers": 0, "pin_memory": False}
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    return {"num_workers": int(workers), "pin_memory": True}


def configure_determinism(device: torch.device) -> None:
    """On CUDA: cuDNN picks the same (deterministic) kernels every run. Seeds themselves come
    from ``seed_everything`` (``torch.manual_seed`` seeds every CUDA device too). Some CUDA
    kernels (RoIAlign's backward uses atomic adds) may still differ in the last bits between
    runs; the data order, augmentations and initial weights do not."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
