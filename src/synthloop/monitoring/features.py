"""What the drift checks compare, per image: the champion's embedding and confidence (from ONE
forward pass, ``predict_with_probs_and_features``), cheap image statistics, and statistics of
the objects the champion detects (the same pass's boxes).

Image statistics (from the file alone, no model):
    brightness  mean luma, 0..255
    contrast    standard deviation of luma, 0..255
    sharpness   variance of the 4-neighbour Laplacian of luma (blur lowers it)
    width, height  pixels

Object statistics: a part that changes colour or size covers a few percent of the image, so
neither the embedding nor the image statistics move (docs/benchmarks.md, drift quality). These
look inside the champion's boxes instead: per image, its top ``max_objects`` detections with
score >= ``min_score``, averaged over those boxes (NaN when the image has none):
    object_L, object_a, object_b  mean CIELAB colour of the box's pixels (D65; L 0..100, a/b
                                  signed: a green->red, b blue->yellow)
    object_area     box area / image area
    object_aspect   log(box width / box height)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

STAT_COLUMNS = ("brightness", "contrast", "sharpness", "width", "height")
OBJECT_COLUMNS = ("object_L", "object_a", "object_b", "object_area", "object_aspect")
_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                         [0.0193, 0.1192, 0.9505]], np.float32)
_D65 = np.array([0.95047, 1.0, 1.08883], np.float32)


def image_statistics(rgb: np.ndarray) -> dict[str, float]:
    """Statistics of one (H, W, 3) uint8 RGB image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = (-4.0 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1]
           + luma[1:-1, :-2] + luma[1:-1, 2:])
    return {"brightness": float(luma.mean()), "contrast": float(luma.std()),
            "sharpness": float(lap.var()) if lap.size else 0.0,
            "width": float(rgb.shape[1]), "height": float(rgb.shape[0])}


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 sRGB -> (..., 3) float32 CIELAB (D65 white)."""
    c = np.asarray(rgb, np.float32) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _SRGB_TO_XYZ.T / _D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def object_statistics(rgb: np.ndarray, boxes: np.ndarray, scores: np.ndarray, *,
                      min_score: float, max_objects: int) -> dict[str, float]:
    """OBJECT_COLUMNS of one (H, W, 3) uint8 image from the detector's output on it.

    boxes: (N, 4) float, [x1, y1, x2, y2] pixels of this image; scores: (N,). The top
    ``max_objects`` boxes with score >= ``min_score`` (clipped to the image; boxes under 2 px
    a side are skipped) are averaged; every column is NaN when none is left.
    """
    h, w = rgb.shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    rows = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] < min_score or len(rows) == max_objects:
            break
        x1, y1 = (int(np.clip(np.floor(v), 0, s)) for v, s in zip(boxes[i, :2], (w, h)))
        x2, y2 = (int(np.clip(np.ceil(v), 0, s)) for v, s in zip(boxes[i, 2:], (w, h)))
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        lab = rgb_to_lab(rgb[y1:y2, x1:x2]).reshape(-1, 3).mean(axis=0)
        rows.append([*lab, (x2 - x1) * (y2 - y1) / float(w * h), np.log((x2 - x1) / (y2 - y1))])
    if not rows:
        return {c: float("nan") for c in OBJECT_COLUMNS}
    return dict(zip(OBJECT_COLUMNS, (float(v) for v in np.mean(rows, axis=0))))


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class FeatureTable:
    """Per-image features of one image set, rows aligned with ``image_ids``.

    embeddings (n, D) float32 (the detector's pooled finest FPN level); confidence (n,) the top
    detection score per image (0 without detections); stats: STAT_COLUMNS and OBJECT_COLUMNS
    -> (n,) float (object columns are NaN for an image without a qualifying detection).
    """

    image_ids: tuple[int, ...]
    embeddings: np.ndarray
    confidence: np.ndarray
    stats: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        if self.embeddings.shape[0] != n or self.confidence.shape[0] != n or any(
                v.shape[0] != n for v in self.stats.values()):
            raise ValueError("feature rows do not match the image ids")

    def __len__(self) -> int:
        return len(self.image_ids)

    def take(self, rows: Sequence[int]) -> "FeatureTable":
        rows = np.asarray(rows, dtype=np.int64)
        return FeatureTable(tuple(self.image_ids[i] for i in rows), self.embeddings[rows],
                            self.confidence[rows], {k: v[rows] for k, v in self.stats.items()})

    def save(self, path: Path) -> Path:
        from synthloop.io_utils import atomic_write_bytes
        import io

        buf = io.BytesIO()
        np.savez(buf, image_ids=np.array(self.image_ids, np.int64), embeddings=self.embeddings,
                 confidence=self.confidence, **{f"stat_{k}": v for k, v in self.stats.items()})
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> "FeatureTable":
        with np.load(path) as z:
            stats = {k[len("stat_"):]: z[k] for k in z.files if k.startswith("stat_")}
            return cls(tuple(int(i) for i in z["image_ids"]), z["embeddings"], z["confidence"],
                       stats)


def feature_table(scores: Sequence, image_paths: Sequence[Path], *, object_min_score: float = 0.05,
                  max_objects: int = 3) -> FeatureTable:
    """Combine ``ImageScores`` (one forward pass each) with statistics of the same image files
    and of the objects detected in them (``object_statistics``)."""
    if len(scores) != len(image_paths):
        raise ValueError(f"{len(scores)} scored images but {len(image_paths)} paths")
    stats = []
    for s, path in zip(scores, image_paths):
        rgb = read_rgb(path)
        stats.append({**image_statistics(rgb),
                      **object_statistics(rgb, s.boxes, s.scores, min_score=object_min_score,
                                          max_objects=max_objects)})
    return FeatureTable(
        image_ids=tuple(int(s.image_id) for s in scores),
        embeddings=np.stack([s.feature for s in scores]).astype(np.float32) if scores
        else np.zeros((0, 0), np.float32),
        confidence=np.array([float(np.max(s.scores)) if len(s.scores) else 0.0 for s in scores],
                            np.float32),
        stats={c: np.array([st[c] for st in stats], np.float64)
               for c in (*STAT_COLUMNS, *OBJECT_COLUMNS)})
