"""Stage: compare a candidate with the champion on the same validation set; move the alias.

The decision is ``decide_promotion`` (pure); the registry writer applies it. A champion that was
evaluated on another validation-set version is re-evaluated on the candidate's set first, so
the two numbers always describe the same images. With ``gate.bootstrap_resamples`` > 0 both
models' per-image detections on that set (cached by the training stage; recomputed when
missing) give a paired bootstrap interval of the gain, and the decision uses its lower bound.
No class's AP may drop by more than ``gate.max_class_drop`` either.

Fail closed: when that evidence cannot be computed (a missing val file, a checkpoint that cannot
be downloaded or read) nothing is promoted and no alias moves; the refusal is recorded (rule
"refused: could not evaluate") and ``run`` raises ``GateRefused``, so the cycle ends with an
error. ``gate.allow_point_rule_on_error`` lets the point estimates decide instead, recorded so.

MLflow: a ``gate-cycle-<t>`` run (nested in the cycle's run) holds the decision, the rule that
made it, its reason and interval, and a PNG of both PR curves, the bootstrap histogram and the
per-class AP drops. The registry: the candidate version's description is the verdict
(gating/verdict.py: "promoted: AP +0.034, 90% interval [...] over 200 resamples; per-class ok"
or "refused: ..."); a promotion also rewrites the model's: which version serves, since when.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from synthloop import lineage, tracking, tracking_datasets, tracking_recovery
from synthloop.artifacts import ClassDrop, DatasetRef, EvalResult, ImprovementInterval, ModelRef
from synthloop.config import PipelineConfig
from synthloop.gating.decision import RULE_REFUSED, RULE_RESUMED, decide_promotion
from synthloop.gating.predictions import ImageDetections, load_predictions, predictions_path
from synthloop.gating import verdict
from synthloop.gating.registry import (CHAMPION, apply_decision, get_alias_version,
                                       write_descriptions)
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)


def val_dataset(cfg: PipelineConfig):
    from synthloop.data.coco import CocoDataset

    return CocoDataset.load(Workspace.of(cfg).dataset_dir("val") / "annotations.json")


def val_predictions(cfg: PipelineConfig, run_id: str, model_uri: str, val_md5: str
                    ) -> list[ImageDetections]:
    """Per-image detections of ``run_id``'s model on val version ``val_md5`` (cached)."""
    from synthloop.detection import load_checkpoint, predict_with_probs_and_features
    from synthloop.detection.device import resolve_device
    from synthloop.gating.predictions import save_predictions

    path = predictions_path(Workspace.of(cfg).root, run_id, val_md5)
    if not path.exists():
        try:
            with tempfile.TemporaryDirectory() as tmp:
                model = load_checkpoint(tracking.download_checkpoint(model_uri, Path(tmp)),
                                        device=resolve_device(cfg.runtime.device))
        except Exception as exc:  # say whose checkpoint, and why predictions were needed
            raise RuntimeError(f"no cached val predictions of run {run_id} and its checkpoint "
                               f"({model_uri}) cannot be loaded: {describe(exc)}") from exc
        save_predictions(path, predict_with_probs_and_features(
            model, val_dataset(cfg), batch_size=cfg.active.batch_size, progress=False))
    return load_predictions(path)


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 300 characters of message (for records/tags)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def current_val(cfg: PipelineConfig, val_md5: str):
    """data/val as a dataset, checked to be version ``val_md5``; raises ValueError if it moved."""
    from synthloop.versioning.dvc_repo import dataset_md5

    path = Workspace.of(cfg).dataset_dir("val") / "annotations.json"
    if not path.is_file():
        raise FileNotFoundError(f"the validation annotations are missing: {path}")
    now = dataset_md5(path.parent)
    if now != val_md5:
        raise ValueError(f"data/val is now {now}, the candidate was evaluated on {val_md5}")
    return val_dataset(cfg)


def reevaluate(cfg: PipelineConfig, run_id: str, model_uri: str, val_md5: str) -> dict[str, float]:
    """A model's COCO metrics on the CURRENT validation set (predictions cached for the gate)."""
    from synthloop.metrics import evaluate_predictions

    ds = current_val(cfg, val_md5)
    return evaluate_predictions(ds, val_predictions(cfg, run_id, model_uri, val_md5))


def champion_eval(cfg: PipelineConfig, client: MlflowClient, champ: Any,
                  candidate_eval: EvalResult) -> tuple[EvalResult, str | None]:
    """The champion's metrics on the candidate's validation set, and None; or, when the
    champion was evaluated on another val version and cannot be re-evaluated on this one, its
    recorded metrics (on that other version) and why the re-evaluation failed."""
    run = client.get_run(champ.run_id)
    metrics = {k[len("val_"):]: v for k, v in run.data.metrics.items() if k.startswith("val_")}
    md5 = run.data.params.get("val.md5", "")
    recorded = EvalResult(metrics=metrics, dataset_md5=md5, num_images=candidate_eval.num_images)
    if md5 == candidate_eval.dataset_md5:
        return recorded, None
    log.warning("champion v%s was evaluated on another validation set (%s); re-evaluating "
                "it on %s before comparing", champ.version, md5, candidate_eval.dataset_md5)
    try:
        metrics = reevaluate(cfg, champ.run_id, champ.source, candidate_eval.dataset_md5)
    except Exception as exc:  # fail closed: decide_promotion refuses on this error
        return recorded, (f"champion v{champ.version} could not be re-evaluated on val set "
                          f"{candidate_eval.dataset_md5}: {describe(exc)}")
    return EvalResult(metrics=metrics, dataset_md5=candidate_eval.dataset_md5,
                      num_images=candidate_eval.num_images), None


def bootstrap_interval(cfg: PipelineConfig, candidate: ModelRef, champ: Any, val_md5: str
                       ) -> tuple[ImprovementInterval, Any, dict[str, Any]]:
    """Paired bootstrap of the gain on the current val set; raises when it cannot be computed."""
    from synthloop.gating.bootstrap import paired_bootstrap

    ds = current_val(cfg, val_md5)
    cand = val_predictions(cfg, candidate.run_id, candidate.uri, val_md5)
    champion = val_predictions(cfg, champ.run_id, champ.source, val_md5)
    g = cfg.gate
    interval, samples = paired_bootstrap(ds, cand, champion, metric=g.metric,
                                         resamples=g.bootstrap_resamples,
                                         confidence=g.confidence, seed=g.bootstrap_seed)
    return interval, samples, {"ds": ds, "candidate_preds": cand, "champion_preds": champion}


def decide(cfg: PipelineConfig, client: MlflowClient, candidate: ModelRef,
           candidate_eval: EvalResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """Gather the evidence and decide; returns (record, evidence for the report).

    Missing evidence never raises here and never promotes: a champion that cannot be
    re-evaluated or a bootstrap that cannot be computed (missing val file, unreadable
    checkpoint) goes to ``decide_promotion`` as ``evaluation_error``, which refuses (rule
    "refused: could not evaluate") unless ``gate.allow_point_rule_on_error``.
    """
    champ = get_alias_version(client, cfg.registered_model_name, CHAMPION)
    evidence: dict[str, Any] = {"champion": champ, "candidate_run_id": candidate.run_id,
                                "val_md5": candidate_eval.dataset_md5}
    if champ is not None and str(champ.version) == str(candidate.version):
        # A rerun after a crash between moving the alias and writing this record.
        return {"promote": True, "reason": "already champion (resumed after the alias move)",
                "rule": RULE_RESUMED, "interval": None, "class_drops": []}, evidence
    champ_eval, error, interval = None, None, None
    if champ is not None:
        champ_eval, error = champion_eval(cfg, client, champ, candidate_eval)
    if champ is not None and error is None and cfg.gate.bootstrap_resamples > 0:
        try:
            interval, samples, preds = bootstrap_interval(cfg, candidate, champ,
                                                          candidate_eval.dataset_md5)
            evidence.update(preds, samples=samples)
        except Exception as exc:  # fail closed: decide_promotion refuses on this error
            error = f"bootstrap failed: {describe(exc)}"
    if error:
        log.warning("gate: %s", error)
    decision = decide_promotion(candidate_eval, champ_eval, cfg.gate, interval=interval,
                                evaluation_error=error)
    # as json holds it (lists, not tuples): a rerun's record read back equals this one
    return json.loads(json.dumps(dataclasses.asdict(decision))), evidence


class GateRefused(RuntimeError):
    """The gate could not evaluate the candidate: nothing was promoted and no alias moved; the
    refusal is recorded (``record``) and the cycle must end with an error. A rerun decides
    again (the refusal is kept in ``gate_refused.json``, not in the cycle's ``gate.json``)."""

    def __init__(self, record: dict[str, Any], where: str):
        self.record = record
        super().__init__(
            f"cycle {record['cycle']}, candidate v{record['candidate_version']}: "
            f"{' '.join(str(record['reason']).split())}. Nothing was promoted; recorded in "
            f"{where}. Fix the cause and rerun to resume, or set "
            "gate.allow_point_rule_on_error=true to let the point estimates decide")


def run(cfg: PipelineConfig, *, cycle: int, candidate: ModelRef, candidate_eval: EvalResult,
        parent_run_id: str | None = None, record_dir: Path | None = None) -> dict[str, Any]:
    """Decide and apply; returns the decision record (also written to the cycle's state, or
    to ``record_dir`` for a candidate that is not a cycle's: stages/cad_retrain.py).

    Raises ``GateRefused`` (after recording it in MLflow and in ``gate_refused.json``) when
    the evidence could not be computed: the cycle fails instead of promoting on a guess.
    """
    record_path = (record_dir or Workspace.of(cfg).cycle_dir(cycle)) / "gate.json"
    done = read_record(record_path)
    if done:
        return done
    exp_id = tracking.setup(cfg)
    client = MlflowClient()
    record, evidence = decide(cfg, client, candidate, candidate_eval)
    refused = record["rule"] == RULE_REFUSED
    if record["rule"] != RULE_RESUMED and not refused:
        apply_decision(client, cfg.registered_model_name, str(candidate.version),
                       promote=record["promote"])
    champ = evidence["champion"]
    record.update(cycle=cycle, candidate_version=candidate.version,
                  champion_version_before=None if champ is None else str(champ.version))
    for run_id in filter(None, (candidate.run_id, parent_run_id)):
        client.set_tag(run_id, "gate.promote", str(record["promote"]))
        client.set_tag(run_id, "gate.rule", record["rule"])
        client.set_tag(run_id, "gate.reason", record["reason"][:5000])
        client.log_metric(run_id, "promoted", float(record["promote"]))
    if parent_run_id:
        client.log_dict(parent_run_id, record, "gate_decision.json")
    gate_run_id = log_gate_run(cfg, client, exp_id, record, evidence, parent_run_id,
                               val=val_ref(cfg, candidate_eval))
    describe_decision(cfg, client, record)
    if refused:
        refused_path = record_path.with_name("gate_refused.json")
        write_record(refused_path, record)
        if parent_run_id:  # the cycle ends here; a rerun reuses this run and finishes it
            client.set_terminated(parent_run_id, status="FAILED")
        log.error("gate (cycle %d): %s", cycle, record["reason"])
        raise GateRefused(record, f"{refused_path} and MLflow run {gate_run_id}")
    write_record(record_path, record)
    log.info("gate (cycle %d): %s by rule %r - %s", cycle,
             "PROMOTED" if record["promote"] else "kept champion", record["rule"],
             record["reason"])
    return record


def val_ref(cfg: PipelineConfig, candidate_eval: EvalResult) -> DatasetRef:
    """The validation set the decision compared on (its md5 as the candidate's evaluation)."""
    folder = Workspace.of(cfg).dataset_dir("val")
    return DatasetRef(name="val", annotations=folder / "annotations.json",
                      image_root=folder / "images", md5=candidate_eval.dataset_md5,
                      num_images=candidate_eval.num_images, num_annotations=0)


def describe_decision(cfg: PipelineConfig, client: MlflowClient, record: dict[str, Any]) -> None:
    """The verdict as the candidate version's description; on a promotion the registered
    model's description says that this version serves, since now."""
    from datetime import datetime, timezone

    name, version = cfg.registered_model_name, str(record["candidate_version"])
    if record["rule"] == RULE_RESUMED and client.get_model_version(name, version).description:
        return  # written before the crash, with the interval the resumed record lacks
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    bar = cfg.gate.min_improvement
    serving = None
    if record["promote"]:
        serving = verdict.serving_description(
            pipeline=cfg.name, version=version, since=when, cycle=record["cycle"],
            verdict=verdict.version_verdict(record, min_improvement=bar))
    write_descriptions(client, name, version, model_text=serving,
                       version_text=verdict.version_description(record, min_improvement=bar,
                                                                when=when))


def log_gate_run(cfg: PipelineConfig, client: MlflowClient, exp_id: str, record: dict[str, Any],
                 evidence: dict[str, Any], parent_run_id: str | None,
                 val: DatasetRef | None = None) -> str:
    """A ``gate-cycle-<t>`` run: params of the gate, the interval and per-class drops as
    metrics, the decision (with the rule that made it), the plot and ``val`` as its input;
    returns its run id. A refused gate's run ends FAILED (as does one whose logging raised)."""
    tags = {"stage": "gate", "cycle": str(record["cycle"]),
            "gate.promote": str(record["promote"]), "gate.rule": record["rule"],
            **lineage.run_tags(cfg, datasets={})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=f"gate-cycle-{record['cycle']}", tags=tags)
    rid = run.info.run_id
    with tracking_recovery.ends_failed(rid, client):
        if val is not None:
            tracking_datasets.log_datasets(cfg, rid, {"val": val}, client)
        g = cfg.gate
        for key, value in {"metric": g.metric, "min_improvement": g.min_improvement,
                           "bootstrap_resamples": g.bootstrap_resamples, "confidence": g.confidence,
                           "max_class_drop": g.max_class_drop,
                           "allow_point_rule_on_error": g.allow_point_rule_on_error,
                           "candidate_version": record["candidate_version"],
                           "champion_version_before": record["champion_version_before"]}.items():
            client.log_param(rid, f"gate.{key}", value)
        for key, value in gate_metrics(record).items():
            client.log_metric(rid, key, value)
        client.log_dict(rid, record, "gate_decision.json")
        client.log_text(rid, record["reason"], "gate_reason.txt")
        log_gate_figure(cfg, client, rid, record, evidence)
        if record["rule"] == RULE_REFUSED:  # the FAILED run says why, as a failed stage's does
            client.set_tag(rid, tracking_recovery.ERROR_TAG, record["reason"][:4000])
        client.set_terminated(rid, status="FAILED" if record["rule"] == RULE_REFUSED
                              else "FINISHED")
    return rid


def gate_metrics(record: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of a decision record: values, interval, and each class's AP drop."""
    metrics = {"promoted": float(record["promote"])}
    for key in ("candidate_value", "champion_value", "improvement"):
        if record.get(key) is not None:
            metrics[f"gate_{key}"] = float(record[key])
    interval = record.get("interval")
    if interval:
        metrics.update(gate_ci_lower=interval["lower"], gate_ci_upper=interval["upper"],
                       gate_bootstrap_seconds=interval["seconds"])
    for d in record.get("class_drops") or ():
        key = "gate_class_drop_" + re.sub(r"[^\w\-. /]", "_", d["name"])
        metrics[key] = float(d["drop"])
        if d.get("lower") is not None and d.get("upper") is not None:
            metrics.update({f"{key}_lower": float(d["lower"]), f"{key}_upper": float(d["upper"])})
    return metrics


def log_gate_figure(cfg: PipelineConfig, client: MlflowClient, rid: str, record: dict[str, Any],
                    evidence: dict[str, Any]) -> None:
    """``gate_report.png``: PR curves, the bootstrap histogram, the per-class AP drops."""
    from synthloop.gating.report import gate_figure

    if "ds" not in evidence:  # no bootstrap: still show the candidate's PR curve when we can
        try:
            path = predictions_path(Workspace.of(cfg).root, evidence["candidate_run_id"],
                                    evidence["val_md5"])
            if path.exists():
                evidence.update(ds=val_dataset(cfg), candidate_preds=load_predictions(path),
                                champion_preds=None)
        except Exception as exc:  # the report is a courtesy: never fail the gate over it
            log.warning("gate: no PR curve (%s)", exc)
    drops = [ClassDrop(**d) for d in record.get("class_drops") or ()]
    if "ds" not in evidence and not drops:
        return
    interval = record.get("interval")
    with tempfile.TemporaryDirectory() as tmp:
        path = gate_figure(Path(tmp) / "gate_report.png", evidence.get("ds"),
                           evidence.get("candidate_preds"), evidence.get("champion_preds"),
                           labels=(f"candidate v{record['candidate_version']}",
                                   f"champion v{record['champion_version_before']}"),
                           interval=ImprovementInterval(**interval) if interval else None,
                           samples=evidence.get("samples"),
                           min_improvement=cfg.gate.min_improvement, class_drops=drops,
                           max_class_drop=cfg.gate.max_class_drop, rule=record["rule"])
        client.log_artifact(rid, str(path))
