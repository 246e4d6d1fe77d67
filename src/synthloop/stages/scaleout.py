"""Stage side of the scale-out flows (flows/scaleout.py): render a domain and score the pool
with any mapper (``map_fn(fn, items) -> results``, e.g. Prefect's task map on Dask).

The flow only wires these calls to its task runner; workspace paths, the tracking setup and
what is written where are decided here, the same way as for local runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthloop.artifacts import DatasetRef
from synthloop.config import PipelineConfig
from synthloop.scaleout import Mapper, local_map, render_domain_mapped, score_jobs, score_pool
from synthloop.stages.render import ANNOTATIONS, dataset_ref, ingest_pool
from synthloop.stages.workspace import Workspace


def render_mapped(cfg: PipelineConfig, domain: str, *, map_fn: Mapper = local_map) -> DatasetRef:
    """Render ``domain`` (synthetic | pool | val) with one ``map_fn`` item per shard; the pool
    goes through staging into data/pool (ground truth kept aside), the others in place."""
    ws = Workspace.of(cfg)
    out = ws.staging / "pool" if domain == "pool" else ws.dataset_dir(domain)
    ds = render_domain_mapped(getattr(cfg, domain), cfg.parts, cfg.class_names, out,
                              render_cfg=cfg.render, map_fn=map_fn)
    return ingest_pool(ws, ds) if domain == "pool" else dataset_ref(domain, out)


def score_mapped(cfg: PipelineConfig, model: str, out: Path | str | None = None, *,
                 map_fn: Mapper = local_map) -> dict[str, Any]:
    """Score every pool image with ``model`` (checkpoint path or MLflow model URI), one
    ``map_fn`` item per ``dask.score_chunk_size`` images; writes the scores npz the query stage
    reads (default ``<workspace>/staging/scores-scaleout.npz``).
    Returns ``{"images", "chunks", "scores"}`` (scores: the npz path as a string)."""
    from synthloop import tracking
    from synthloop.data.coco import CocoDataset
    from synthloop.stages.score import save_scores

    if not Path(model).is_file():
        tracking.setup(cfg)  # the workers download the model with their MLFLOW_TRACKING_URI
    pool_dir = Workspace.of(cfg).dataset_dir("pool")
    pool = CocoDataset.load(pool_dir / ANNOTATIONS)
    jobs = score_jobs(model, pool_dir / ANNOTATIONS, pool.image_root, [im.id for im in pool.images],
                      chunk_size=cfg.dask.score_chunk_size, batch_size=cfg.active.batch_size,
                      num_threads=cfg.dask.threads_per_worker, device=cfg.runtime.device)
    scores = score_pool(jobs, map_fn=map_fn)
    path = Path(out) if out else Workspace.of(cfg).staging / "scores-scaleout.npz"
    save_scores(path, scores)
    return {"images": len(scores), "chunks": len(jobs), "scores": str(path)}
