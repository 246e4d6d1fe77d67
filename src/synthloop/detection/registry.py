"""The detector backends and architectures, by name: the one list of each.

An entry names the object that implements it as ``"module:attribute"``; the module is imported
the first time the name is looked up. So the config checks names without importing torch or
the optional mmdet extra, and this module imports nothing of synthloop (the backend modules
import ``checkpoint``, never the other way round).

- A backend (``BACKENDS``) is an object with ``build``, ``load_weights``, ``open_scorer``,
  ``requirements`` and ``exportable`` (``backends.DetectorBackend``), one per module
  (``torchvision_backend.BACKEND``, ``mmdet_backend.BACKEND``).
- An architecture (``ARCHITECTURES``) is a builder of the torchvision backend (``architectures``,
  ``lite_fpn``),
  ``build(cfg, num_classes, kwargs) -> FasterRCNN`` (``kwargs``: the FasterRCNN keyword
  arguments the config sets). The mmdet backend takes its architecture from ``mmdet_config``
  (mmdet's own registry builds it).

Adding a backend or an architecture: write it, and add its line here.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

BACKENDS: dict[str, str] = {
    "torchvision": "synthloop.detection.torchvision_backend:BACKEND",
    "mmdet": "synthloop.detection.mmdet_backend:BACKEND",
}

ARCHITECTURES: dict[str, str] = {
    "mobilenet_v3_fpn": "synthloop.detection.architectures:build_mobilenet",
    "mobilenet_v3_hr_fpn": "synthloop.detection.architectures:build_mobilenet_hr",
    "resnet18_fpn": "synthloop.detection.architectures:build_resnet18",
    "resnet50_fpn": "synthloop.detection.architectures:build_resnet50",
    "efficientnet_lite0_fpn": "synthloop.detection.lite_fpn:build_efficientnet_lite",
    "efficientnet_lite1_fpn": "synthloop.detection.lite_fpn:build_efficientnet_lite",
    "efficientnet_lite2_fpn": "synthloop.detection.lite_fpn:build_efficientnet_lite",
}


def check_name(table: dict[str, str], kind: str, name: str) -> str:
    """``name`` if ``table`` has it, else ValueError listing the known names."""
    if name not in table:
        raise ValueError(f"unknown detector {kind} {name!r}; known: {', '.join(sorted(table))}")
    return name


def _load(table: dict[str, str], kind: str, name: str) -> Any:
    module, _, attribute = table[check_name(table, kind, name)].partition(":")
    return getattr(import_module(module), attribute)


def get_backend(name: str) -> Any:
    """The backend object registered as ``name`` (imports its module)."""
    return _load(BACKENDS, "backend", name)


def get_architecture(name: str) -> Any:
    """The torchvision-backend builder registered as ``name`` (imports its module)."""
    return _load(ARCHITECTURES, "architecture", name)
