"""Stage: compare a candidate with the champion on the same validation set; move the alias.

The decision is ``decide_promotion`` (pure); the registry writer applies it. A champion that was
evaluated on another validation-set version is re-evaluated on the candidate's set first, so
the two numbers always describe the same images.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from synthloop import tracking
from synthloop.artifacts import EvalResult, ModelRef
from synthloop.config import PipelineConfig
from synthloop.gating.decision import decide_promotion
from synthloop.gating.registry import CHAMPION, apply_decision, get_alias_version
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)


def champion_eval(cfg: PipelineConfig, client: MlflowClient, candidate_eval: EvalResult
                  ) -> tuple[Any | None, EvalResult | None]:
    """The champion's version and its metrics on the candidate's validation set."""
    champ = get_alias_version(client, cfg.registered_model_name, CHAMPION)
    if champ is None:
        return None, None
    run = client.get_run(champ.run_id)
    metrics = {k[len("val_"):]: v for k, v in run.data.metrics.items() if k.startswith("val_")}
    md5 = run.data.params.get("val.md5", "")
    if md5 != candidate_eval.dataset_md5:
        log.warning("champion v%s was evaluated on another validation set (%s); re-evaluating "
                    "it on %s before comparing", champ.version, md5, candidate_eval.dataset_md5)
        metrics = reevaluate(cfg, champ.source)
        md5 = candidate_eval.dataset_md5
    return champ, EvalResult(metrics=metrics, dataset_md5=md5, num_images=candidate_eval.num_images)


def reevaluate(cfg: PipelineConfig, model_uri: str) -> dict[str, float]:
    from synthloop.data.coco import CocoDataset
    from synthloop.detection import evaluate, load_checkpoint

    val_dir = Workspace.of(cfg).dataset_dir("val")
    with tempfile.TemporaryDirectory() as tmp:
        model = load_checkpoint(tracking.download_checkpoint(model_uri, Path(tmp)))
    return evaluate(model, CocoDataset.load(val_dir / "annotations.json"),
                    batch_size=cfg.active.batch_size)


def run(cfg: PipelineConfig, *, cycle: int, candidate: ModelRef, candidate_eval: EvalResult,
        parent_run_id: str | None = None) -> dict[str, Any]:
    """Decide and apply; returns the decision record (also written to the cycle's state)."""
    record_path = Workspace.of(cfg).cycle_dir(cycle) / "gate.json"
    done = read_record(record_path)
    if done:
        return done
    tracking.setup(cfg)
    client = MlflowClient()
    champ, champ_eval = champion_eval(cfg, client, candidate_eval)
    if champ is not None and str(champ.version) == str(candidate.version):
        # A rerun after a crash between moving the alias and writing this record.
        record = {"promote": True, "reason": "already champion (resumed after the alias move)"}
    else:
        decision = decide_promotion(candidate_eval, champ_eval, cfg.gate)
        apply_decision(client, cfg.registered_model_name, str(candidate.version),
                       promote=decision.promote)
        record = dataclasses.asdict(decision)
    record.update(cycle=cycle, candidate_version=candidate.version,
                  champion_version_before=None if champ is None else str(champ.version))
    for run_id in filter(None, (candidate.run_id, parent_run_id)):
        client.set_tag(run_id, "gate.promote", str(record["promote"]))
        client.set_tag(run_id, "gate.reason", record["reason"][:5000])
        client.log_metric(run_id, "promoted", float(record["promote"]))
    if parent_run_id:
        client.log_dict(parent_run_id, record, "gate_decision.json")
    write_record(record_path, record)
    log.info("gate (cycle %d): %s - %s", cycle, "PROMOTED" if record["promote"] else "kept champion",
             record["reason"])
    return record
