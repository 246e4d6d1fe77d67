"""Host-side finishing of one rendered image: background, sensor effects, boxes from the ids.

Boxes are tight boxes of the *visible* pixels in the worker's instance map, returned as COCO
``[x, y, w, h]`` pixels. Visibility = visible pixels / pixels of the part's own unoccluded
silhouette on an enlarged canvas (rasterised by the worker), so occlusion by distractors or
other parts and truncation at the image border both lower it; truncation alone is the share of
that silhouette outside the image (the paper's filter on parts "more than X% outside").
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from synthloop.synthesis.backgrounds import render_background


def composite(rgba: Image.Image, plan: dict) -> Image.Image:
    """Straight-alpha RGBA render over the plan's background, then the plan's sensor effects."""
    w, h = rgba.size
    fg = np.asarray(rgba.convert("RGBA"), np.float32)
    bg = np.asarray(render_background(plan["background"], w, h), np.float32)
    alpha = fg[..., 3:4] / 255.0
    out = fg[..., :3] * alpha + bg * (1.0 - alpha)
    s = plan["sensor"]
    out *= np.asarray(s["color_gain"], np.float32)
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    if s["blur_sigma"] > 0:
        img = img.filter(ImageFilter.GaussianBlur(s["blur_sigma"]))
    if s["noise_std"] > 0:
        rng = np.random.default_rng(s["seed"])
        arr = np.asarray(img, np.float32) + rng.normal(0.0, s["noise_std"], (h, w, 3))
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    return img


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def mask_box_xywh(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight box of a boolean (H, W) mask as COCO [x, y, w, h] pixels, or None if empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    x1, y1, x2, y2 = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    return float(x1), float(y1), float(x2 - x1), float(y2 - y1)


def _rle(mask: np.ndarray) -> dict | None:
    try:
        from pycocotools import mask as mask_utils
    except ImportError:  # optional: boxes do not need it
        return None
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _clipped_xywh(xyxy, width: int, height: int) -> tuple[float, float, float, float] | None:
    if xyxy is None:
        return None
    x1, y1 = min(max(xyxy[0], 0.0), width), min(max(xyxy[1], 0.0), height)
    x2, y2 = min(max(xyxy[2], 0.0), width), min(max(xyxy[3], 0.0), height)
    return (x1, y1, x2 - x1, y2 - y1) if x2 > x1 and y2 > y1 else None


def truncation(part: dict) -> float:
    """Share of a part's unoccluded silhouette that falls outside the image (0..1)."""
    full = int(part.get("unoccluded_pixels", 0))
    inside = int(part.get("unoccluded_pixels_in_image", full))
    return 0.0 if full <= 0 else round(1.0 - inside / full, 4)


DROP_REASONS = ("off-frame", "too small", "occluded", "truncated")


def _drop_reason(part: dict, width: int, height: int, visible: int, visibility: float,
                 trunc: float) -> str:
    """Why a part got no box: one of ``DROP_REASONS``."""
    full = int(part.get("unoccluded_pixels", 0))
    inside = int(part.get("unoccluded_pixels_in_image", full))
    if not part.get("on_table", True):
        return "off-frame"
    if full == 0:  # no silhouette pixel: below a pixel if its 3D box projects into the image
        corners = _clipped_xywh(part.get("corners_bbox_xyxy"), width, height)
        return "too small" if corners is not None else "off-frame"
    if inside == 0:
        return "off-frame"
    if visible == 0:
        return "occluded"
    occluded_share = 1.0 - visible / max(inside, 1)
    return "truncated" if trunc >= occluded_share else "occluded"


def part_instances(ids: np.ndarray, record: dict, *, min_visibility: float,
                   max_truncation: float = 1.0, box_mode: str = "visible",
                   dropped: list | None = None) -> list[dict]:
    """Annotatable parts of one image from its (H, W) uint16 instance map and worker record.

    Returns dicts with ``class_index`` (0-based), ``pass_index`` (its id in the map), ``bbox``
    [x, y, w, h] pixels, ``area`` (visible pixels), ``visibility``, ``truncation`` and
    ``segmentation`` (RLE or None). ``box_mode``: ``visible`` (tight box of the visible
    pixels), ``projected`` / ``corners`` (all vertices / 3D box corners projected, clipped to
    the image: the paper's "tight" and "fast" boxes, for comparison). Fully hidden parts, parts
    below ``min_visibility`` and parts above ``max_truncation`` are dropped; distractors are
    never returned.
    ``dropped``, if given, gets ``{"class_index", "reason"}`` for every part left without a box
    (reason in ``DROP_REASONS``).
    """
    height, width = ids.shape
    out = []
    for part in record["parts"]:
        mask = ids == part["pass_index"]
        visible = int(mask.sum())
        box = mask_box_xywh(mask)
        full = max(int(part["unoccluded_pixels"]), visible)
        visibility = visible / full if full else 0.0
        trunc = truncation(part)
        if box is None or visibility < min_visibility or trunc > max_truncation:
            if dropped is not None:
                reason = ("truncated" if box is not None and trunc > max_truncation else
                          _drop_reason(part, width, height, visible, visibility, trunc))
                dropped.append({"class_index": part["class_index"], "reason": reason})
            continue
        if box_mode != "visible":
            key = "projected_bbox_xyxy" if box_mode == "projected" else "corners_bbox_xyxy"
            box = _clipped_xywh(part[key], width, height) or box
        out.append({"class_index": part["class_index"], "pass_index": part["pass_index"],
                    "bbox": box, "area": float(visible), "visibility": round(visibility, 4),
                    "truncation": trunc, "segmentation": _rle(mask)})
    return out
