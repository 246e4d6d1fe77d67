"""What the drift checks compare, per image: the champion's embedding and confidence (from ONE
forward pass, ``predict_with_probs_and_features``) and cheap image statistics.

Image statistics (from the file alone, no model):
    brightness  mean luma, 0..255
    contrast    standard deviation of luma, 0..255
    sharpness   variance of the 4-neighbour Laplacian of luma (blur lowers it)
    width, height  pixels
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

STAT_COLUMNS = ("brightness", "contrast", "sharpness", "width", "height")


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


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class FeatureTable:
    """Per-image features of one image set, rows aligned with ``image_ids``.

    embeddings (n, D) float32 (the detector's pooled finest FPN level); confidence (n,) the top
    detection score per image (0 without detections); stats: STAT_COLUMNS -> (n,) float.
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


def feature_table(scores: Sequence, image_paths: Sequence[Path]) -> FeatureTable:
    """Combine ``ImageScores`` (one forward pass each) with statistics of the same image files."""
    if len(scores) != len(image_paths):
        raise ValueError(f"{len(scores)} scored images but {len(image_paths)} paths")
    stats = [image_statistics(read_rgb(p)) for p in image_paths]
    return FeatureTable(
        image_ids=tuple(int(s.image_id) for s in scores),
        embeddings=np.stack([s.feature for s in scores]).astype(np.float32) if scores
        else np.zeros((0, 0), np.float32),
        confidence=np.array([float(np.max(s.scores)) if len(s.scores) else 0.0 for s in scores],
                            np.float32),
        stats={c: np.array([st[c] for st in stats], np.float64) for c in STAT_COLUMNS})
