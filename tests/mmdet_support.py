"""Helpers for the tests of the mmdet backend (marker ``mmdet``)."""

from __future__ import annotations

import pytest

from tests_support import make_coco  # the tiny detection set, shared with torchvision's tests

__all__ = ["make_coco", "require_mmdet"]


def require_mmdet() -> None:
    """Skip the calling test where the mmdet extra is not installed (core CI without it)."""
    try:
        from synthloop.detection.mmdet_backend import require_mmdet as load
        load()
    except ImportError as exc:
        pytest.skip(f"mmdet extra not installed (`make setup-mmdet`): {exc}")
