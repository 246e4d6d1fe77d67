"""Decoding photos the way a person sees them: one place for every reader of pixels.

Cameras and tools hand us more than 8-bit RGB: EXIF-rotated JPEGs (a phone held upright),
16-bit PNGs (machine-vision cameras), CMYK JPEGs (print workflows), grayscale and palette
images. ``to_rgb`` turns each into the upright 8-bit RGB picture a labelling tool shows, so
boxes drawn by people, the model's input and the COCO width/height all agree.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def to_rgb(im: Image.Image) -> Image.Image:
    """Upright (EXIF orientation applied) 8-bit RGB; 16-bit gray keeps its top 8 bits."""
    im = ImageOps.exif_transpose(im)
    if im.mode in _SIXTEEN_BIT:  # convert("RGB") would clip every value above 255 to white
        arr = np.asarray(im).astype(np.uint32)
        im = Image.fromarray((arr >> 8).clip(0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def upright_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) after the EXIF orientation is applied (without decoding pixels)."""
    w, h = im.size
    orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in _TRANSPOSED else (w, h)
