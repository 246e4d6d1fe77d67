"""Stage: choose k images with the configured strategy; record the batch (state + MLflow)."""

from __future__ import annotations

import logging
from pathlib import Path

from mlflow import MlflowClient

from synthloop import tracking
from synthloop.active import strategy_from_config
from synthloop.artifacts import DatasetRef, ModelRef, QueryBatch
from synthloop.config import PipelineConfig
from synthloop.stages.score import load_scores
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, *, cycle: int, scores_path: Path, model: ModelRef, pool: DatasetRef,
        labeled_ids: set[int], parent_run_id: str | None = None) -> QueryBatch:
    record_path = Workspace.of(cfg).cycle_dir(cycle) / "query.json"
    done = read_record(record_path)
    if done:
        return QueryBatch(**{k: tuple(v) if isinstance(v, list) else v for k, v in done.items()})
    ids, probs, features = load_scores(scores_path)
    strategy = strategy_from_config(cfg.active)
    params = dict(strategy.params())
    seed = cfg.active.seed + cycle
    sel = strategy.select(ids, probs, features, k=cfg.active.k, rng_seed=seed,
                          labeled_ids=frozenset(labeled_ids))
    chosen = tuple(int(i) for i in sel.image_ids)
    batch = QueryBatch(strategy=cfg.active.strategy, params={**params, "k": cfg.active.k,
                                                             "scope": cfg.active.scope},
                       seed=seed, model_version=str(model.version), pool_md5=pool.md5,
                       image_ids=chosen, scores=tuple(float(s) for s in sel.scores),
                       new_label_ids=tuple(i for i in chosen if i not in labeled_ids))
    if parent_run_id:
        tracking.setup(cfg)
        client = MlflowClient()
        client.log_dict(parent_run_id, batch.to_dict(), "query_batch.json")
        client.log_metric(parent_run_id, "query_new_labels", float(len(batch.new_label_ids)))
    write_record(record_path, batch.to_dict())
    log.info("query (cycle %d, %s): %d images, %d new labels", cycle, batch.strategy,
             len(chosen), len(batch.new_label_ids))
    return batch
