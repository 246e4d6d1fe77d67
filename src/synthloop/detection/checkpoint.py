"""Detector checkpoints: the state_dict plus the ``DetectorConfig`` that rebuilds the model.

File I/O only: rebuilding the model from a checkpoint is ``backends.load_checkpoint``'s (it
knows the backends; this module imports none of them).

Files are written atomically and read with ``torch.load(weights_only=True)``: a checkpoint holds
tensors, numbers, strings, lists and dicts only, never pickled code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthloop.config import DetectorConfig
from synthloop.io_utils import atomic_write_bytes

FORMAT = "synthloop-detector/1"


def save_checkpoint(model: nn.Module, path: Path | str, *, cfg: DetectorConfig, num_classes: int,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``{format, model, detector, num_classes, extra}`` to ``path`` atomically.

    ``extra`` (e.g. class names, metrics, optimizer state) must hold only tensors and plain
    Python values so that ``weights_only`` loading accepts it.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "model": state, "detector": cfg.model_dump(mode="json"),
               "num_classes": int(num_classes), "extra": dict(extra or {})}
    return write_payload(payload, path)


def write_payload(payload: dict[str, Any], path: Path | str) -> Path:
    """``torch.save`` to memory, then an atomic write: a crash never leaves half a file."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(source: Path | str) -> dict[str, Any]:
    """Load a checkpoint dict from a path or an http(s) URL (cached by torch.hub)."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        ckpt = torch.hub.load_state_dict_from_url(text, map_location="cpu", weights_only=True)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{source} is not a synthloop detector checkpoint (no 'model' entry)")
    return ckpt


def rebuild_configs(ckpt: dict[str, Any], source: Path | str = "<checkpoint>"
                    ) -> tuple[DetectorConfig, DetectorConfig]:
    """(the config to build the model with before loading ``ckpt``'s weights, the saved config
    the model carries after). ``backends.load_checkpoint`` does both."""
    if "detector" not in ckpt or "num_classes" not in ckpt:
        raise ValueError(f"{source} lacks the detector config; was it written by save_checkpoint?")
    # The weights come from this file: do not follow the path the model was first built from.
    # Nor the backbone's first weights; but build its BatchNorm as it was trained (frozen or not).
    saved = DetectorConfig.model_validate(ckpt["detector"])
    build = saved.model_copy(update={"weights": None, "backbone_weights": None,
                                     "frozen_bn": saved.resolved_frozen_bn()})
    return build, saved


def read_detector_config(path: Path | str) -> DetectorConfig:
    """The ``DetectorConfig`` saved in a checkpoint file, without reading its weights (mmap)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(ckpt, dict) or "detector" not in ckpt:
        raise ValueError(f"{path} lacks the detector config; was it written by save_checkpoint?")
    return DetectorConfig.model_validate(ckpt["detector"])
