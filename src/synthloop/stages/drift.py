"""Stage: drift of new pool images against the reference set, seen through the champion.

The champion scores both sets with one forward pass per image (embedding + detections; cached
per champion version and image set), image statistics come from the files, object statistics
from the pixels inside the champion's boxes (colour, size), and ``monitoring.drift.run_checks``
(Evidently) scores the difference; ``decide_drift`` decides.
Reference (``monitoring.reference``): ``pool`` = the pool images the last cycle saw (the
distribution the champion was adapted to), ``val`` = the fixed validation set, ``labeled``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient

from synthloop import tracking
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.gating.registry import CHAMPION, get_alias_version
from synthloop.monitoring.decision import DriftDecision, decide_drift
from synthloop.monitoring.features import FeatureTable, feature_table
from synthloop.stages.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftResult:
    decision: DriftDecision
    champion_version: str
    reference_confidence: float  # champion's mean top detection score on the reference
    current_confidence: float  # ... and on the new images (the monitored metric)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision.to_dict()}


def load_dataset(cfg: PipelineConfig, name: str) -> CocoDataset:
    return CocoDataset.load(Workspace.of(cfg).dataset_dir(name) / "annotations.json")


def reference_ids(cfg: PipelineConfig, baseline: set[int]) -> tuple[CocoDataset, list[int]]:
    """The reference images (at most ``monitoring.max_reference``, a seeded sample)."""
    name = cfg.monitoring.reference
    ds = load_dataset(cfg, name)
    ids = sorted(im.id for im in ds.images if name != "pool" or im.id in baseline)
    if len(ids) > cfg.monitoring.max_reference:
        rng = np.random.default_rng(cfg.monitoring.seed)
        ids = sorted(rng.choice(ids, cfg.monitoring.max_reference, replace=False).tolist())
    return ds, ids


def features(cfg: PipelineConfig, net: Any, version: str, ds: CocoDataset, ids: list[int],
             kind: str) -> FeatureTable:
    """Feature table of ``ids`` under champion ``version`` (cached in state/monitor)."""
    from synthloop.detection import predict_with_probs_and_features

    m = cfg.monitoring
    key = hashlib.sha1(json.dumps([kind, sorted(ids), m.object_min_score,
                                   m.object_max_per_image]).encode()).hexdigest()[:12]
    path = Workspace.of(cfg).root / "state" / "monitor" / f"features-v{version}-{kind}-{key}.npz"
    if path.exists():
        return FeatureTable.load(path)
    subset = ds.subset(ids)
    scores = predict_with_probs_and_features(net(), subset, batch_size=cfg.active.batch_size,
                                             progress=False)
    table = feature_table(scores, [subset.image_path(im) for im in subset.images],
                          object_min_score=m.object_min_score, max_objects=m.object_max_per_image)
    table.save(path)
    return table


def run(cfg: PipelineConfig, *, current_ids: list[int], baseline: set[int],
        run_id: str | None = None) -> DriftResult | None:
    """Check ``current_ids`` (pool ids) for drift; None when there is no champion yet."""
    from synthloop.detection import load_checkpoint
    from synthloop.detection.device import resolve_device
    from synthloop.monitoring.drift import run_checks

    tracking.setup(cfg)
    client = MlflowClient()
    champ = get_alias_version(client, cfg.registered_model_name, CHAMPION)
    if champ is None:
        log.info("drift: no champion yet, nothing to monitor")
        return None
    loaded: dict[str, Any] = {}

    def net():
        if "net" not in loaded:
            with tempfile.TemporaryDirectory() as tmp:
                source = tracking.download_checkpoint(champ.source, Path(tmp))
                loaded["net"] = load_checkpoint(source, device=resolve_device(cfg.runtime.device))
        return loaded["net"]

    version = str(champ.version)
    ref_ds, ref_ids = reference_ids(cfg, baseline)
    reference = features(cfg, net, version, ref_ds, ref_ids, f"ref-{cfg.monitoring.reference}")
    current = features(cfg, net, version, load_dataset(cfg, "pool"), current_ids, "new")
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "drift_report.html"
        checks = run_checks(reference, current, cfg.monitoring, html_path=html)
        decision = decide_drift(checks, n_reference=len(reference), n_current=len(current),
                                min_current=cfg.monitoring.min_current)
        result = DriftResult(decision, version, float(reference.confidence.mean()),
                             float(current.confidence.mean()))
        if run_id:
            log_result(client, run_id, result, html)
    log.info("drift (champion v%s): %s", version, decision.reason)
    return result


def log_result(client: MlflowClient, run_id: str, result: DriftResult, html: Path) -> None:
    """Same metric names on every check: drift_<check> (score), drift_<check>_threshold."""
    for c in result.decision.checks:
        if math.isfinite(c.score):  # not computed (too few detections): no number to log
            client.log_metric(run_id, f"drift_{c.name}", c.score)
        client.log_metric(run_id, f"drift_{c.name}_threshold", c.threshold)
    client.log_metric(run_id, "drift_detected", float(result.decision.drifted))
    client.log_metric(run_id, "drift_n_current", float(result.decision.n_current))
    client.log_metric(run_id, "drift_n_reference", float(result.decision.n_reference))
    client.log_metric(run_id, "champion_confidence", result.current_confidence)
    client.log_metric(run_id, "reference_confidence", result.reference_confidence)
    client.log_dict(run_id, result.to_dict(), "drift_decision.json")
    if html.exists():
        client.log_artifact(run_id, str(html))
