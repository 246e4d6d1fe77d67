"""Per-image arrays of varying length in one ``.npz``: the format of the pool scores
(stages/score.py) and of the cached validation detections (gating/predictions.py).

Layout: ``image_ids`` (n,) int64; ``counts`` (n,) int64, rows per image; every ragged array is
the per-image arrays concatenated along axis 0 (image i owns rows ``counts[:i].sum()`` onwards,
``counts[i]`` of them); anything else is stored as given (per-file arrays and scalars).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from synthloop.io_utils import atomic_write_bytes

RESERVED = ("image_ids", "counts")


def save_ragged(path: Path | str, image_ids: Sequence[int], counts: Sequence[int],
                ragged: Mapping[str, Sequence[np.ndarray]], *, empty: Mapping[str, np.ndarray],
                **extra: Any) -> Path:
    """Write atomically. ``ragged[key][i]``: image i's rows (``counts[i]`` of them);
    ``empty[key]``: what is stored when there are no per-image arrays at all (keeps the
    dtype and trailing shape); ``extra``: stored as they are."""
    if any(k in RESERVED for k in (*ragged, *extra)):
        raise ValueError(f"{', '.join(RESERVED)} are the format's own keys")
    arrays = {k: np.concatenate(list(v)) if len(v) else empty[k] for k, v in ragged.items()}
    buf = io.BytesIO()
    np.savez(buf, image_ids=np.asarray(list(image_ids), np.int64),
             counts=np.asarray(list(counts), np.int64), **arrays, **extra)
    return atomic_write_bytes(Path(path), buf.getvalue())


def load_ragged(path: Path | str, keys: Sequence[str]
                ) -> tuple[list[int], dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """``(image ids, {key: per-image arrays} for the ragged ``keys``, {other key: array})``;
    the file is closed on return."""
    with np.load(path) as z:
        counts = z["counts"]
        splits = np.cumsum(counts)[:-1]
        ragged = {k: list(np.split(z[k], splits)) if len(counts) else [] for k in keys}
        rest = {k: z[k] for k in z.files if k not in keys and k not in RESERVED}
        return z["image_ids"].tolist(), ragged, rest
