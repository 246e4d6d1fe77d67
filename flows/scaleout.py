"""Flows `render-scaleout` and `score-scaleout`: render shards and pool-scoring chunks as Prefect
tasks on a DaskTaskRunner: a local cluster of ``dask.n_workers`` processes by default, the
scheduler at ``dask.address`` (e.g. ``tcp://dask-scheduler:8786``) for a real one.

The stage side is the same as local runs (``synthloop.stages.scaleout`` over
``synthloop.scaleout``): plain functions mapped over picklable jobs; here the mapper is
Prefect's ``task.map``, so each shard / chunk is a task run.

    .venv/bin/python flows/scaleout.py render pipelines/demo.yaml synthetic
    .venv/bin/python flows/scaleout.py score pipelines/demo.yaml models:/synthloop-demo@champion
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from flow_support import load
from synthloop.config import PipelineConfig
from synthloop.stages.scaleout import render_mapped, score_mapped


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
    ref = render_mapped(load(config, overrides), domain, map_fn=prefect_map)
    return {"domain": domain, "num_images": ref.num_images, "md5": ref.md5}


@flow(name="score-scaleout", log_prints=True)
def score_scaleout(config: str = "pipelines/demo.yaml", model: str = "", out: str = "",
                   overrides: list[str] | None = None) -> dict:
    """Score every pool image with ``model`` (checkpoint path or MLflow model URI), one task
    per ``dask.score_chunk_size`` images; writes the scores npz the query stage reads."""
    return score_mapped(load(config, overrides), model, out or None, map_fn=prefect_map)


def run(kind: str, config: str, arg: str) -> dict:
    cfg = load(config)
    runner = dask_task_runner(cfg)
    if kind == "render":
        return render_scaleout.with_options(task_runner=runner)(config, arg)
    return score_scaleout.with_options(task_runner=runner)(config, arg)


if __name__ == "__main__":
    print(run(sys.argv[1], sys.argv[2], sys.argv[3]))
