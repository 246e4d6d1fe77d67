"""Stage: compare a candidate with the champion on the same validation set; move the alias.

The decision is ``decide_promotion`` (pure); the registry writer applies it. A champion that was
evaluated on another validation-set version is re-evaluated on the candidate's set first, so
the two numbers always describe the same images. With ``gate.bootstrap_resamples`` > 0 both
models' per-image detections on that set (cached by the training stage; recomputed when
missing) give a paired bootstrap interval of the gain, and the decision uses its lower bound.

MLflow: a ``gate-cycle-<t>`` run (nested in the cycle's run) holds the decision, its reason and
interval, and a PNG of both PR curves and the bootstrap histogram.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from synthloop import lineage, tracking
from synthloop.artifacts import EvalResult, ImprovementInterval, ModelRef
from synthloop.config import PipelineConfig
from synthloop.gating.decision import decide_promotion
from synthloop.gating.predictions import ImageDetections, load_predictions, predictions_path
from synthloop.gating.registry import CHAMPION, apply_decision, get_alias_version
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)


def val_dataset(cfg: PipelineConfig):
    from synthloop.data.coco import CocoDataset

    return CocoDataset.load(Workspace.of(cfg).dataset_dir("val") / "annotations.json")


def val_predictions(cfg: PipelineConfig, run_id: str, model_uri: str, val_md5: str
                    ) -> list[ImageDetections]:
    """Per-image detections of ``run_id``'s model on val version ``val_md5`` (cached)."""
    from synthloop.detection import load_checkpoint, predict_with_probs_and_features
    from synthloop.gating.predictions import save_predictions

    path = predictions_path(Workspace.of(cfg).root, run_id, val_md5)
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            model = load_checkpoint(tracking.download_checkpoint(model_uri, Path(tmp)))
        save_predictions(path, predict_with_probs_and_features(
            model, val_dataset(cfg), batch_size=cfg.active.batch_size, progress=False))
    return load_predictions(path)


def reevaluate(cfg: PipelineConfig, run_id: str, model_uri: str, val_md5: str) -> dict[str, float]:
    """A model's COCO metrics on the CURRENT validation set (predictions cached for the gate)."""
    from synthloop.detection import evaluate_predictions

    return evaluate_predictions(val_dataset(cfg), val_predictions(cfg, run_id, model_uri, val_md5))


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
        metrics = reevaluate(cfg, champ.run_id, champ.source, candidate_eval.dataset_md5)
        md5 = candidate_eval.dataset_md5
    return champ, EvalResult(metrics=metrics, dataset_md5=md5, num_images=candidate_eval.num_images)


def bootstrap_interval(cfg: PipelineConfig, candidate: ModelRef, champ: Any, val_md5: str
                       ) -> tuple[ImprovementInterval, Any, dict[str, Any]]:
    """Paired bootstrap of the gain on the current val set; raises when it cannot be computed."""
    from synthloop.gating.bootstrap import paired_bootstrap
    from synthloop.versioning.dvc_repo import dataset_md5

    now = dataset_md5(Workspace.of(cfg).dataset_dir("val"))
    if now != val_md5:
        raise ValueError(f"data/val is now {now}, the candidate was evaluated on {val_md5}")
    ds = val_dataset(cfg)
    cand = val_predictions(cfg, candidate.run_id, candidate.uri, val_md5)
    champion = val_predictions(cfg, champ.run_id, champ.source, val_md5)
    g = cfg.gate
    interval, samples = paired_bootstrap(ds, cand, champion, metric=g.metric,
                                         resamples=g.bootstrap_resamples,
                                         confidence=g.confidence, seed=g.bootstrap_seed)
    return interval, samples, {"ds": ds, "candidate_preds": cand, "champion_preds": champion}


def decide(cfg: PipelineConfig, client: MlflowClient, candidate: ModelRef,
           candidate_eval: EvalResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """Gather the evidence and decide; returns (record, evidence for the report)."""
    champ, champ_eval = champion_eval(cfg, client, candidate_eval)
    evidence: dict[str, Any] = {"champion": champ, "candidate_run_id": candidate.run_id,
                                "val_md5": candidate_eval.dataset_md5}
    if champ is not None and str(champ.version) == str(candidate.version):
        # A rerun after a crash between moving the alias and writing this record.
        return {"promote": True, "reason": "already champion (resumed after the alias move)",
                "interval": None}, evidence
    interval, note = None, None
    if champ is not None and cfg.gate.bootstrap_resamples > 0:
        try:
            interval, samples, preds = bootstrap_interval(cfg, candidate, champ,
                                                          candidate_eval.dataset_md5)
            evidence.update(preds, samples=samples)
        except Exception as exc:  # missing weights or val files: say so, compare the points
            note = f"bootstrap unavailable ({type(exc).__name__}: {exc}); point estimates compared"
            log.warning("gate: %s", note)
    decision = decide_promotion(candidate_eval, champ_eval, cfg.gate, interval=interval)
    record = dataclasses.asdict(decision)
    if note:
        record["reason"] = f"{record['reason']} [{note}]"
        record["bootstrap"] = note
    return record, evidence


def run(cfg: PipelineConfig, *, cycle: int, candidate: ModelRef, candidate_eval: EvalResult,
        parent_run_id: str | None = None) -> dict[str, Any]:
    """Decide and apply; returns the decision record (also written to the cycle's state)."""
    record_path = Workspace.of(cfg).cycle_dir(cycle) / "gate.json"
    done = read_record(record_path)
    if done:
        return done
    exp_id = tracking.setup(cfg)
    client = MlflowClient()
    record, evidence = decide(cfg, client, candidate, candidate_eval)
    if not record["reason"].startswith("already champion"):
        apply_decision(client, cfg.registered_model_name, str(candidate.version),
                       promote=record["promote"])
    champ = evidence["champion"]
    record.update(cycle=cycle, candidate_version=candidate.version,
                  champion_version_before=None if champ is None else str(champ.version))
    for run_id in filter(None, (candidate.run_id, parent_run_id)):
        client.set_tag(run_id, "gate.promote", str(record["promote"]))
        client.set_tag(run_id, "gate.reason", record["reason"][:5000])
        client.log_metric(run_id, "promoted", float(record["promote"]))
    if parent_run_id:
        client.log_dict(parent_run_id, record, "gate_decision.json")
    log_gate_run(cfg, client, exp_id, record, evidence, parent_run_id)
    write_record(record_path, record)
    log.info("gate (cycle %d): %s - %s", cycle, "PROMOTED" if record["promote"] else "kept champion",
             record["reason"])
    return record


def log_gate_run(cfg: PipelineConfig, client: MlflowClient, exp_id: str, record: dict[str, Any],
                 evidence: dict[str, Any], parent_run_id: str | None) -> None:
    """A ``gate-cycle-<t>`` run: params of the gate, the interval as metrics, decision + plot."""
    from synthloop.gating.report import gate_figure

    tags = {"stage": "gate", "cycle": str(record["cycle"]),
            "gate.promote": str(record["promote"]),
            **lineage.run_tags(cfg, datasets={})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=f"gate-cycle-{record['cycle']}", tags=tags)
    rid = run.info.run_id
    g = cfg.gate
    for key, value in {"metric": g.metric, "min_improvement": g.min_improvement,
                       "bootstrap_resamples": g.bootstrap_resamples, "confidence": g.confidence,
                       "candidate_version": record["candidate_version"],
                       "champion_version_before": record["champion_version_before"]}.items():
        client.log_param(rid, f"gate.{key}", value)
    metrics = {"promoted": float(record["promote"])}
    for key in ("candidate_value", "champion_value", "improvement"):
        if record.get(key) is not None:
            metrics[f"gate_{key}"] = float(record[key])
    interval = record.get("interval")
    if interval:
        metrics.update(gate_ci_lower=interval["lower"], gate_ci_upper=interval["upper"],
                       gate_bootstrap_seconds=interval["seconds"])
    for key, value in metrics.items():
        client.log_metric(rid, key, value)
    client.log_dict(rid, record, "gate_decision.json")
    client.log_text(rid, record["reason"], "gate_reason.txt")
    if "ds" not in evidence:  # no bootstrap: still show the candidate's PR curve when we can
        try:
            path = predictions_path(Workspace.of(cfg).root, evidence["candidate_run_id"],
                                    evidence["val_md5"])
            if path.exists():
                evidence.update(ds=val_dataset(cfg), candidate_preds=load_predictions(path),
                                champion_preds=None)
        except Exception as exc:  # the report is a courtesy: never fail the gate over it
            log.warning("gate: no PR curve (%s)", exc)
    if "ds" in evidence:
        with tempfile.TemporaryDirectory() as tmp:
            path = gate_figure(Path(tmp) / "gate_report.png", evidence["ds"],
                               evidence["candidate_preds"], evidence["champion_preds"],
                               labels=(f"candidate v{record['candidate_version']}",
                                       f"champion v{record['champion_version_before']}"),
                               interval=ImprovementInterval(**interval) if interval else None,
                               samples=evidence.get("samples"), min_improvement=g.min_improvement)
            client.log_artifact(rid, str(path))
    client.set_terminated(rid)
