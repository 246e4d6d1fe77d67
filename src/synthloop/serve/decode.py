"""The one image decoder of both serving paths: ``synthloop serve`` (REST) and the MLflow pyfunc.

Both must hand the model the picture it was trained on, so both go through
``synthloop.data.images.to_rgb`` as training does: EXIF orientation applied, 16-bit gray kept
to its top 8 bits (not clipped to white), CMYK/palette/gray converted to RGB.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

FORMATS = ("JPEG", "PNG")


def decode_image(source: bytes | str | Path, *, max_pixels: int) -> Any:
    """JPEG/PNG bytes (or a file path) -> (3, H, W) float tensor in 0..1, H x W upright.

    Raises ``ValueError`` (not a JPEG/PNG, undecodable) or ``OverflowError`` (more than
    ``max_pixels`` pixels; checked from the header, before the pixels are decoded).
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from synthloop.data.images import to_rgb

    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)  # header only
    except (UnidentifiedImageError, OSError):
        raise ValueError("the body is not a JPEG or PNG image") from None
    if img.format not in FORMATS:
        raise ValueError(f"unsupported image format {img.format}; send JPEG or PNG")
    w, h = img.size
    if w * h > max_pixels:
        raise OverflowError(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    try:
        rgb = to_rgb(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"the image could not be decoded ({exc})") from None
    arr = np.array(rgb, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
