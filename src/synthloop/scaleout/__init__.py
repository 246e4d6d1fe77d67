"""Scale-out on existing engines: the same plain functions, mapped locally or over Dask.

Every fan-out here is ``map_fn(fn, items) -> results`` (in order) over picklable items:

* rendering: ``synthesis.render.plan_shards`` -> map ``render_shard`` -> ``merge_shards``
  (``render_domain_mapped``);
* pool scoring: ``score_jobs`` cuts the pool into chunks -> map ``score_chunk`` (one forward
  pass per image, ``predict_with_probs_and_features``) -> results in pool order (``score_pool``).

``local_map`` runs them here; ``dask_map`` (a context manager) on a local Dask cluster or a
real one (``address="tcp://scheduler:8786"``); flows/scaleout.py hands Prefect's task map on a
``DaskTaskRunner`` to the very same functions. Workers need the package and a filesystem (or
S3-backed paths / MLflow URIs) that they share with the driver. This package never imports
Prefect. Multi-GPU training: ``synthloop.scaleout.ddp`` (torchrun).
"""

from __future__ import annotations

from typing import Any

from synthloop.scaleout.mapping import Mapper, dask_map, local_map
from synthloop.scaleout.scoring import ScoreJob, score_chunk, score_jobs, score_pool

__all__ = ["Mapper", "local_map", "dask_map", "render_domain_mapped", "ScoreJob", "score_jobs",
           "score_chunk", "score_pool"]


def render_domain_mapped(domain: Any, parts: list[Any], class_names: list[str], out_dir: Any, *,
                         render_cfg: Any, map_fn: Mapper = local_map) -> Any:
    """Render a domain with ``render_shard`` mapped by ``map_fn``; returns the merged COCO set.

    ``render_cfg.workers`` sets how many shards (and Blender threads per shard: cores /
    workers): give it the number of Dask workers. Without ``drop_empty_images`` top-ups
    (``render_domain`` does those locally).
    """
    from synthloop.synthesis.render import merge_shards, plan_shards, render_shard

    if domain.drop_empty_images:
        raise ValueError("render_domain_mapped does not top up dropped empty images; use "
                         "render_domain, or set drop_empty_images: false")
    jobs = plan_shards(domain, parts, out_dir, render_cfg=render_cfg)
    results = map_fn(render_shard, jobs)
    return merge_shards(results, class_names=class_names, out_dir=out_dir,
                        num_images=domain.num_images)
