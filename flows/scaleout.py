"""Flows `render-scaleout` and `score-scaleout`: render shards and pool-scoring chunks as Prefect
tasks on a DaskTaskRunner: a local cluster of ``dask.n_workers`` processes by default, the
scheduler at ``dask.address`` (e.g. ``tcp://dask-scheduler:8786``) for a real one.

The library side is the same as local runs (``synthloop.scaleout``): plain functions mapped over
picklable jobs; here the mapper is Prefect's ``task.map``, so each shard / chunk is a task run.

    .venv/bin/python flows/scaleout.py render pipelines/demo.yaml synthetic
    .venv/bin/python flows/scaleout.py score pipelines/demo.yaml models:/synthloop-demo@champion
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from flow_support import load
from synthloop.config import PipelineConfig
from synthloop.scaleout import render_domain_mapped, score_jobs, score_pool


def dask_task_runner(cfg: PipelineConfig) -> DaskTaskRunner:
    """``dask.address`` if set, else a local cluster (loopback, worker processes, no dashboard)."""
    if cfg.dask.address:
        return DaskTaskRunner(address=cfg.dask.address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": cfg.dask.n_workers, "threads_per_worker": cfg.dask.threads_per_worker,
        "processes": True, "host": "127.0.0.1", "dashboard_address": None})


def prefect_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """The ``synthloop.scaleout`` mapper as Prefect tasks (one task run per item, in order)."""
    mapped = task(fn, name=fn.__name__, retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
    return [future.result() for future in mapped.map(list(items))]


@flow(name="render-scaleout", log_prints=True)
def render_scaleout(config: str = "pipelines/demo.yaml", domain: str = "synthetic",
                    overrides: list[str] | None = None) -> dict:
    """Render ``domain`` with one task per shard (``render.workers`` shards at least)."""
    from synthloop.stages.render import dataset_ref, ingest_pool
    from synthloop.stages.workspace import Workspace

    cfg = load(config, overrides)
    ws = Workspace.of(cfg)
    out = ws.staging / "pool" if domain == "pool" else ws.dataset_dir(domain)
    ds = render_domain_mapped(getattr(cfg, domain), cfg.parts, cfg.class_names, out,
                              render_cfg=cfg.render, map_fn=prefect_map)
    ref = ingest_pool(ws, ds) if domain == "pool" else dataset_ref(domain, out)
    return {"domain": domain, "num_images": ref.num_images, "md5": ref.md5}


@flow(name="score-scaleout", log_prints=True)
def score_scaleout(config: str = "pipelines/demo.yaml", model: str = "", out: str = "",
                   overrides: list[str] | None = None) -> dict:
    """Score every pool image with ``model`` (checkpoint path or MLflow model URI), one task
    per ``dask.score_chunk_size`` images; writes the scores npz the query stage reads."""
    from synthloop import tracking
    from synthloop.data.coco import CocoDataset
    from synthloop.stages.render import ANNOTATIONS
    from synthloop.stages.score import save_scores
    from synthloop.stages.workspace import Workspace

    cfg = load(config, overrides)
    if not Path(model).is_file():
        tracking.setup(cfg)  # the workers download the model with their MLFLOW_TRACKING_URI
    pool_dir = Workspace.of(cfg).dataset_dir("pool")
    pool = CocoDataset.load(pool_dir / ANNOTATIONS)
    jobs = score_jobs(model, pool_dir / ANNOTATIONS, pool.image_root, [im.id for im in pool.images],
                      chunk_size=cfg.dask.score_chunk_size, batch_size=cfg.active.batch_size,
                      num_threads=cfg.dask.threads_per_worker, device=cfg.runtime.device)
    scores = score_pool(jobs, map_fn=prefect_map)
    path = Path(out) if out else Workspace.of(cfg).staging / "scores-scaleout.npz"
    save_scores(path, scores)
    return {"images": len(scores), "chunks": len(jobs), "scores": str(path)}


def run(kind: str, config: str, arg: str) -> dict:
    cfg = load(config)
    runner = dask_task_runner(cfg)
    if kind == "render":
        return render_scaleout.with_options(task_runner=runner)(config, arg)
    return score_scaleout.with_options(task_runner=runner)(config, arg)


if __name__ == "__main__":
    print(run(sys.argv[1], sys.argv[2], sys.argv[3]))
