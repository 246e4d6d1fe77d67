"""Pool scoring in chunks: ``score_jobs`` -> map ``score_chunk`` -> flatten (``score_pool``).

A ``ScoreJob`` names the model (a checkpoint path, or an MLflow model URI the worker downloads
with its own ``MLFLOW_TRACKING_URI``), the pool's COCO file and image root, and the chunk's
image ids. Each worker process loads a model once and keeps it for later chunks.
Results are ``detection.ImageScores`` (boxes [x1, y1, x2, y2] pixels, probs (N, C+1),
feature (256,)), in the order of the ids given.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ScoreJob:
    model: str  # checkpoint path, or runs:/ models:/ URI
    annotations: str
    image_root: str
    image_ids: tuple[int, ...]
    batch_size: int = 8
    num_threads: int = 1
    device: str = "cpu"  # runtime.device, resolved on the worker (its GPU, if any)
    # export.runtime: an MLflow model logged with an exported scorer is scored with it on CPU
    # workers (detection/export.py); None: torch
    export_runtime: str | None = None


def score_jobs(model: str | Path, annotations: str | Path, image_root: str | Path,
               image_ids: Sequence[int], *, chunk_size: int, batch_size: int = 8,
               num_threads: int = 1, device: str = "cpu",
               export_runtime: str | None = None) -> list[ScoreJob]:
    """Cut ``image_ids`` into chunks of at most ``chunk_size`` (order kept)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    ids = [int(i) for i in image_ids]
    return [ScoreJob(str(model), str(annotations), str(image_root), tuple(ids[s:s + chunk_size]),
                     batch_size, num_threads, device, export_runtime)
            for s in range(0, len(ids), chunk_size)]


def _model(source: str, device: str = "cpu", export_runtime: str | None = None) -> Any:
    from synthloop.detection.device import resolve_device

    where = resolve_device(device)
    with _MODELS_LOCK:
        key = f"{source}@{where}@{export_runtime}"
        if key not in _MODELS:
            from synthloop.detection import load_checkpoint

            if Path(source).is_file():
                _MODELS[key] = load_checkpoint(source, device=where)
            else:  # an MLflow model URI
                from synthloop import tracking

                with tempfile.TemporaryDirectory() as tmp:
                    _MODELS[key] = load_checkpoint(tracking.download_checkpoint(source, Path(tmp)),
                                                   device=where)
                if export_runtime is not None:
                    _MODELS[key] = tracking.exported_or_torch(source, _MODELS[key],
                                                              runtime=export_runtime)[0]
        return _MODELS[key]


def score_chunk(job: ScoreJob) -> list[Any]:
    """One forward pass per image of the chunk; returns ``ImageScores`` in the chunk's order."""
    import torch

    from synthloop.data.coco import CocoDataset
    from synthloop.detection import predict_with_probs_and_features

    torch.set_num_threads(job.num_threads)
    ds = CocoDataset.load(job.annotations, job.image_root).subset(job.image_ids)
    model = _model(job.model, job.device, job.export_runtime)
    return predict_with_probs_and_features(model, ds, batch_size=job.batch_size,
                                           progress=False)


def score_pool(jobs: list[ScoreJob], *, map_fn: Callable[..., list[Any]] | None = None) -> list[Any]:
    """Map ``score_chunk`` over ``jobs`` (``local_map`` by default) and flatten in order."""
    from synthloop.scaleout.mapping import local_map

    return [s for chunk in (map_fn or local_map)(score_chunk, jobs) for s in chunk]
