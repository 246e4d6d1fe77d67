"""Stage: choose k images with the configured strategy; record the batch (state + MLflow).

Only images some oracle can label are candidates (stages/label_routing.py): with the simulated
oracle and no ``labeling.fallback_oracle``, pool images without ground truth are left out and
counted (``QueryBatch.excluded``); the batch records which oracle labels each new image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from synthloop import tracking
from synthloop.active import strategy_from_config
from synthloop.artifacts import DatasetRef, ModelRef, QueryBatch
from synthloop.config import PipelineConfig
from synthloop.stages.label_routing import OracleRouting, oracle_routing, unlabelable_message
from synthloop.stages.score import load_scores, scores_meta
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, *, cycle: int, scores_path: Path, model: ModelRef, pool: DatasetRef,
        labeled_ids: set[int], parent_run_id: str | None = None) -> QueryBatch:
    state = Workspace.of(cfg).cycle_dir(cycle)
    record_path = state / "query.json"
    routing = oracle_routing(cfg)
    done = read_record(record_path)
    if done:
        batch = QueryBatch.from_dict(done)
        stale = routing.unlabelable(batch.new_label_ids)
        if not stale or read_record(state / "label.json"):
            return batch
        # A batch recorded before routing existed (or under another labeling config), never
        # labelled: the label stage could not finish it, so choose again among labelable images.
        log.warning("query (cycle %d): the recorded batch cannot be labelled, choosing again: %s",
                    cycle, unlabelable_message(stale))
    ids, probs, features = load_scores(scores_path)
    ids, probs, features, excluded = labelable_candidates(ids, probs, features, routing,
                                                          labeled_ids, cycle=cycle)
    strategy = strategy_from_config(cfg.active)
    params = dict(strategy.params())
    seed = cfg.active.seed + cycle
    sel = strategy.select(ids, probs, features, k=cfg.active.k, rng_seed=seed,
                          labeled_ids=frozenset(labeled_ids))
    chosen = tuple(int(i) for i in sel.image_ids)
    new = tuple(i for i in chosen if i not in labeled_ids)
    meta = scores_meta(scores_path)
    # What was scored, and by what: a candidate subset (active.candidate_subset) is drawn with
    # this batch's seed; "scorer" is "torch" or the exported scorer's runtime.
    params.update(scorer=meta["scorer"], scored=meta["scored"], candidates=meta["candidates"])
    if cfg.active.candidate_subset:
        params["candidate_subset"] = cfg.active.candidate_subset
    batch = QueryBatch(strategy=cfg.active.strategy, params={**params, "k": cfg.active.k,
                                                             "scope": cfg.active.scope},
                       seed=seed, model_version=str(model.version), pool_md5=pool.md5,
                       image_ids=chosen, scores=tuple(float(s) for s in sel.scores),
                       new_label_ids=new, excluded=excluded, routes=routing.route(new))
    if parent_run_id:
        tracking.setup(cfg)
        client = MlflowClient()
        client.log_dict(parent_run_id, batch.to_dict(), "query_batch.json")
        client.log_metric(parent_run_id, "query_new_labels", float(len(batch.new_label_ids)))
        client.log_metric(parent_run_id, "query_excluded", float(excluded))
    write_record(record_path, batch.to_dict())
    log.info("query (cycle %d, %s): %d images, %d new labels (%s), %d candidates excluded",
             cycle, batch.strategy, len(chosen), len(new),
             ", ".join(f"{k}: {len(v)}" for k, v in batch.routes.items()) or "none", excluded)
    return batch


def labelable_candidates(ids: list[int], probs: list[np.ndarray], features: np.ndarray,
                         routing: OracleRouting, labeled_ids: set[int], *, cycle: int
                         ) -> tuple[list[int], list[np.ndarray], np.ndarray, int]:
    """The scored candidates some oracle can label (labelled ones stay: re-picks cost nothing),
    rows kept aligned; and how many were left out. Raises when none is left."""
    keep = [j for j, i in enumerate(ids) if int(i) in labeled_ids or routing.can_label(i)]
    dropped = [int(ids[j]) for j in sorted(set(range(len(ids))) - set(keep))]
    if not dropped:
        return ids, probs, features, 0
    if not keep:
        raise ValueError(f"query (cycle {cycle}): none of the {len(ids)} candidates can be "
                         f"labelled: {unlabelable_message(dropped)}")
    log.warning("query (cycle %d): %d of %d candidates left out: %s", cycle, len(dropped),
                len(ids), unlabelable_message(dropped))
    rows = np.asarray(keep, dtype=np.int64)
    return ([ids[j] for j in keep], [probs[j] for j in keep] if len(probs) else probs,
            features[rows], len(dropped))
