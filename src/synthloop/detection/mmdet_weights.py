"""Loading weights into the mmdet backend: mmdet model-zoo / mmengine checkpoints, or ours.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls
``torch.load`` without saying otherwise, so an mmengine checkpoint (whose ``message_hub`` holds
``HistoryBuffer`` objects with numpy arrays) is refused. We allow exactly the types such a
checkpoint holds (``torch.serialization.safe_globals``), still never arbitrary code. A file
that needs more is refused with a message; for a file you trust, set
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# Parameters of the box predictor: their shapes depend on the number of classes.
CLASS_DEPENDENT = ("roi_head.bbox_head.fc_cls.", "roi_head.bbox_head.fc_reg.")


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` while unpickling: a ``HistoryBuffer`` pickles its
    statistics methods as ``getattr(HistoryBuffer, "mean")``; a free ``getattr`` would let a
    crafted file reach any attribute (and from there run code), so only those lookups pass."""
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in ("min", "max", "mean", "current"):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"refusing getattr({obj!r}, {name!r}) in a checkpoint")


def mmengine_safe_globals() -> list[Any]:
    """The non-tensor globals in checkpoints written by mmengine's Runner (0.10.x, numpy 2)."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    core = getattr(np, "_core", None) or np.core
    types: list[Any] = [HistoryBuffer, np.ndarray, np.dtype, core.multiarray._reconstruct,
                        core.multiarray.scalar, (_history_buffer_getattr, "builtins.getattr")]
    # numpy 2 pickles dtypes by class (np.dtypes.Float64DType, ...)
    types += [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"]
    return types


def load_mmengine_checkpoint(source: str | Path) -> dict[str, Any]:
    """``mmengine.runner.checkpoint._load_checkpoint`` (paths, URLs, ``torchvision://``,
    ``open-mmlab://``) on torch >= 2.6, with the mmengine types allowed."""
    from mmengine.runner.checkpoint import _load_checkpoint

    try:
        with torch.serialization.safe_globals(mmengine_safe_globals()):
            return _load_checkpoint(str(source), map_location="cpu")
    except Exception as exc:  # torch reports the disallowed global in an UnpicklingError
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ValueError(f"{source}: this checkpoint holds types that weights-only loading does "
                             "not allow; if you trust the file, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "
                             f"({str(exc).splitlines()[0]})") from exc
        raise


def _detector_state(source: str | Path) -> dict[str, torch.Tensor]:
    """The mmdet detector's state_dict (keys as in ``MMDetDetector.detector``) from a synthloop
    checkpoint of the mmdet backend or from an mmengine/mmdet checkpoint."""
    from synthloop.detection.checkpoint import read_checkpoint

    text = str(source)
    ours = None
    if not text.startswith(("torchvision://", "open-mmlab://", "mmcls://")):
        try:
            ours = read_checkpoint(source)
        except Exception:  # noqa: BLE001  not ours (or not weights-only): try mmengine's format
            ours = None
    if ours is not None and str(ours.get("format", "")).startswith("synthloop-"):
        if (ours.get("detector") or {}).get("backend", "torchvision") != "mmdet":
            raise ValueError(f"{source} is a torchvision-backend checkpoint; the mmdet backend "
                             "cannot load it")
        return {k[len("detector."):]: v for k, v in ours["model"].items() if k.startswith("detector.")}
    ckpt = load_mmengine_checkpoint(source)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{source} holds no state_dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights_into(model: torch.nn.Module, source: str | Path) -> None:
    """Load ``source`` into an ``MMDetDetector``: a model-zoo ``.pth`` (path or URL), an
    mmengine ``work_dirs`` checkpoint, or a synthloop checkpoint of the mmdet backend.

    A box predictor trained for another number of classes is left fresh (fine-tuning onto our
    classes, as mmdet's ``load_from`` does); any other missing or misfit weight is an error.
    """
    state = _detector_state(source)
    own = model.detector.state_dict()
    skipped = [k for k, v in state.items()
               if k in own and tuple(v.shape) != tuple(own[k].shape) and k.startswith(CLASS_DEPENDENT)]
    if skipped:
        log.warning("%s: box predictor is for another class count: %s start fresh", source, skipped)
    state = {k: v for k, v in state.items() if k not in skipped}
    try:
        missing, unexpected = model.detector.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {source} does not fit this model: {exc}") from None
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ValueError(f"checkpoint {source} does not fit {model.detector_cfg.mmdet_config}: "
                         f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}")
