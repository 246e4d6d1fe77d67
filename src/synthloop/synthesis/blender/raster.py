"""Silhouette rasteriser (numpy only): how many pixels an object would cover unoccluded.

Used by the worker for the visibility fraction: visible pixels (from the instance map) over the
pixels of the object's own silhouette, counted on a canvas larger than the image so that
truncation at the border also lowers visibility. Pixel centres are sampled, like the renderer.
"""

from __future__ import annotations

import numpy as np

_MAX_CELLS = 2_000_000  # evaluate at most this many (triangle, pixel) pairs at once


def project(points_h: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip-space points (N, 4) -> pixel coords (N, 2) [x right, y down] and in-front mask (N,)."""
    w = points_h[:, 3]
    front = w > 1e-6
    safe = np.where(front, w, 1.0)
    x = (points_h[:, 0] / safe + 1.0) * 0.5 * width
    y = (1.0 - points_h[:, 1] / safe) * 0.5 * height
    return np.stack([x, y], 1), front


def silhouette(uv: np.ndarray, faces: np.ndarray, width: int, height: int,
               front: np.ndarray | None = None) -> dict:
    """Rasterise triangles ``faces`` (F, 3) of pixel points ``uv`` (V, 2).

    Returns ``pixels`` (silhouette area on a canvas up to 3x the image each way),
    ``pixels_in_image`` and ``bbox_xyxy`` (unclipped projected box, [x1, y1, x2, y2] pixels).
    Triangles with a vertex behind the camera are skipped.
    """
    if front is not None:
        faces = faces[front[faces].all(1)]
    if len(faces) == 0:
        return {"pixels": 0, "pixels_in_image": 0, "bbox_xyxy": None}
    used = uv[np.unique(faces)]
    bbox = [float(v) for v in (*used.min(0), *used.max(0))]
    x0c, y0c = max(int(np.floor(bbox[0])), -width), max(int(np.floor(bbox[1])), -height)
    x1c, y1c = min(int(np.ceil(bbox[2])), 2 * width), min(int(np.ceil(bbox[3])), 2 * height)
    if x1c <= x0c or y1c <= y0c:
        return {"pixels": 0, "pixels_in_image": 0, "bbox_xyxy": bbox}
    mask = np.zeros((y1c - y0c, x1c - x0c), bool)
    tri = uv[faces]  # (F, 3, 2)
    lo = np.ceil(tri.min(1) - 0.5).astype(np.int64)  # first pixel whose centre may be inside
    hi = np.floor(tri.max(1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, [x0c, y0c])
    hi = np.minimum(hi, [x1c - 1, y1c - 1])
    size = hi - lo + 1
    keep = (size > 0).all(1)
    tri, lo, size = tri[keep], lo[keep], size[keep]
    # bucket triangles by padded box size so each batch evaluates a small dense grid
    bw = 2 ** np.ceil(np.log2(size[:, 0])).astype(int)
    bh = 2 ** np.ceil(np.log2(size[:, 1])).astype(int)
    for key in np.unique(bw * 100_000 + bh):
        sel = np.nonzero(bw * 100_000 + bh == key)[0]
        gw, gh = int(key // 100_000), int(key % 100_000)
        oy, ox = np.mgrid[0:gh, 0:gw]
        step = max(1, _MAX_CELLS // (gw * gh))
        for s in range(0, len(sel), step):
            idx = sel[s:s + step]
            px = lo[idx, 0, None, None] + ox  # (C, gh, gw)
            py = lo[idx, 1, None, None] + oy
            cx, cy = px + 0.5, py + 0.5
            t = tri[idx]
            e = []
            for a, b in ((0, 1), (1, 2), (2, 0)):
                ax, ay = t[:, a, 0, None, None], t[:, a, 1, None, None]
                bx, by = t[:, b, 0, None, None], t[:, b, 1, None, None]
                e.append((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))
            inside = ((e[0] >= 0) & (e[1] >= 0) & (e[2] >= 0)) | \
                     ((e[0] <= 0) & (e[1] <= 0) & (e[2] <= 0))
            inside &= (ox < size[idx, 0, None, None]) & (oy < size[idx, 1, None, None])
            mask[py[inside] - y0c, px[inside] - x0c] = True
    ix0, iy0 = max(0, -x0c), max(0, -y0c)
    in_image = mask[iy0:iy0 + height - max(0, y0c), ix0:ix0 + width - max(0, x0c)]
    return {"pixels": int(mask.sum()), "pixels_in_image": int(in_image.sum()), "bbox_xyxy": bbox}
