"""Stage: failures steer the renderer (issue 16, part 1; ``steer:`` in the pipeline config).

Before cycle ``t``'s fine-tune, with ``steer.enabled``:

1. the model the fine-tune starts from (M_{t-1}) is analysed where it fails: on the
   validation photos (its cached per-image detections; by class, size, crowding, brightness,
   region: reported only, never fed back, so the gate's set stays unbiased) and on the
   held-out renders (pretraining's early-stop slice, which no model trained on; detections
   cached in ``state/cycle_<t>/holdout_predictions-<run>.npz``), binned by the values the
   scene randomizers sampled (steering/failures.py);
2. those render failures become bounded sampling weights (steering/weights.py); ``mode:
   uniform`` keeps the weights uniform (the same top-up, unsteered: the control);
3. ``topup_images`` renders with the weights go to ``data/topup/cycle_<t>/`` (their render
   config, weights included, in ``render_config.yaml`` beside them), committed with DVC
   (tag ``topup-cycle-<t>``); ``topup_dataset(cfg, t)`` hands them to the fine-tune.

Written: ``state/cycle_<t>/failure_analysis.json`` (the cycle report shows it). MLflow, on the
cycle's run: params ``steer.mode``, ``steer.weights.<variable>`` (every weight change is a new
cycle's param), the record and the render config as artifacts under ``steer/``, metrics
``steer_holdout_failure_rate``, ``steer_val_miss_rate``, ``steer_val_false_rate``.
Idempotent: a rerun reuses the record and resumes the render.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import yaml

from synthloop import tracking
from synthloop.artifacts import DatasetRef, ModelRef
from synthloop.config import DomainConfig, PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.gating.predictions import load_predictions, save_predictions
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)
RECORD = "failure_analysis.json"
RENDER_CONFIG = "render_config.yaml"
TOPUP_SEED_STRIDE = 1_000_003  # top-up seeds: far from the synthetic set's and each other's


def topup_dir(cfg: PipelineConfig, cycle: int) -> Path:
    return Workspace.of(cfg).dataset_dir("topup") / f"cycle_{cycle}"


def topup_domain(cfg: PipelineConfig, cycle: int, weights: dict[str, list[float]]
                 ) -> DomainConfig:
    """The synthetic domain, ``steer.topup_images`` images, a seed of its own for cycle
    ``cycle`` (the same in both modes: steered and uniform top-ups differ only by the
    weights), and ``weights`` as its ``sampling_weights``."""
    base = cfg.synthetic
    return base.model_copy(update={"num_images": max(cfg.steer.topup_images, 1),
                                   "seed": base.seed + TOPUP_SEED_STRIDE * cycle,
                                   "sampling_weights": dict(weights)})


def topup_dataset(cfg: PipelineConfig, cycle: int) -> DatasetRef | None:
    """The top-up renders made for cycle ``cycle``'s fine-tune, or None (steering off, no
    top-up asked, or not rendered)."""
    from synthloop.stages.render import ANNOTATIONS, dataset_ref

    if not cfg.steer.enabled or cfg.steer.topup_images == 0:
        return None
    folder = topup_dir(cfg, cycle)
    return dataset_ref(f"topup-cycle-{cycle}", folder) if (folder / ANNOTATIONS).exists() else None


def with_topup(train_ds: CocoDataset, topup: DatasetRef | None) -> CocoDataset:
    """``train_ds`` plus the top-up renders ``topup`` (``topup_dataset``; ids renumbered), or
    ``train_ds`` as it is when there are none: the fine-tune's one call (stages/finetune.py)."""
    from synthloop.data.coco import union

    if topup is None:
        return train_ds
    return union([train_ds, CocoDataset.load(topup.annotations, topup.image_root)])


def run(cfg: PipelineConfig, *, cycle: int, model: ModelRef, synthetic: DatasetRef,
        val: DatasetRef, parent_run_id: str | None = None,
        progress: bool = True) -> dict[str, Any] | None:
    """Analyse, weigh, log and render the top-up (see the module doc); the record, or None
    when ``steer.enabled`` is off."""
    if not cfg.steer.enabled:
        return None
    path = Workspace.of(cfg).cycle_dir(cycle) / RECORD
    record = read_record(path)
    if record is None:
        record = analyse(cfg, cycle=cycle, model=model, synthetic=synthetic, val=val)
        write_record(path, record)
        log.info("steer cycle %d: render failure rate %s; weight changes: %s", cycle,
                 record["renders"]["totals"]["failure_rate"], record["changes"] or "none")
    if parent_run_id:
        log_to_mlflow(cfg, parent_run_id, record)
    if cfg.steer.topup_images:
        render_topup(cfg, cycle, DomainConfig(**record["topup"]["domain"]), progress=progress)
    return record


def analyse(cfg: PipelineConfig, *, cycle: int, model: ModelRef, synthetic: DatasetRef,
            val: DatasetRef) -> dict[str, Any]:
    """The failure analysis of ``model`` and the weights it gives (the record, JSON-ready)."""
    from synthloop.stages.gate import current_val, val_predictions
    from synthloop.steering.failures import analyse_photos, analyse_renders
    from synthloop.steering.weights import weight_changes, weights_from_renders

    s = cfg.steer
    photos = analyse_photos(current_val(cfg, val.md5),
                            val_predictions(cfg, model.run_id, model.uri, val.md5),
                            iou=s.iou, min_score=s.min_score)
    holdout = render_holdout(cfg, synthetic)
    renders = analyse_renders(holdout, holdout_predictions(cfg, cycle, model, holdout),
                              cfg.synthetic, variables=s.variables, bins=s.bins, iou=s.iou,
                              min_score=s.min_score)
    weights = dict(cfg.synthetic.sampling_weights)  # configured weights stay where not steered
    if s.mode == "failures":
        weights.update(weights_from_renders(renders, floor=s.floor, ceiling=s.ceiling,
                                            prior=s.prior))
    previous = read_record(Workspace.of(cfg).cycle_dir(cycle - 1) / RECORD) or {}
    before = previous.get("weights") or dict(cfg.synthetic.sampling_weights)
    domain = topup_domain(cfg, cycle, weights)
    return {"cycle": cycle, "model": {"run_id": model.run_id, "version": str(model.version)},
            "mode": s.mode, "bound": {"floor": s.floor, "ceiling": s.ceiling, "prior": s.prior,
                                      "meaning": "weights are x uniform; each bin keeps "
                                                 "floor/bins..ceiling/bins of the draws"},
            "weights": weights, "changes": weight_changes(before, weights),
            "photos": photos, "renders": renders,
            "topup": {"images": s.topup_images, "path": str(topup_dir(cfg, cycle)),
                      "domain": domain.model_dump(mode="json")}}


def render_holdout(cfg: PipelineConfig, synthetic: DatasetRef) -> CocoDataset:
    """Pretraining's held-out slice of the synthetic set (the same seeded split)."""
    from synthloop.stages.pretrain import HOLDOUT_FRACTION, split_holdout

    full = CocoDataset.load(synthetic.annotations, synthetic.image_root)
    return split_holdout(full, fraction=HOLDOUT_FRACTION, seed=cfg.pretrain.seed)[1]


def holdout_predictions(cfg: PipelineConfig, cycle: int, model: ModelRef, holdout: CocoDataset):
    """``model``'s detections on the held-out renders (cached per cycle and model run)."""
    path = Workspace.of(cfg).cycle_dir(cycle) / f"holdout_predictions-{model.run_id}.npz"
    if not path.exists():
        from synthloop.detection import load_checkpoint, predict_with_probs_and_features
        from synthloop.detection.device import resolve_device

        with tempfile.TemporaryDirectory() as tmp:
            net = load_checkpoint(tracking.download_checkpoint(model.uri, Path(tmp)),
                                  device=resolve_device(cfg.runtime.device))
        save_predictions(path, predict_with_probs_and_features(
            net, holdout, batch_size=cfg.active.batch_size, progress=False))
    return load_predictions(path)


def log_to_mlflow(cfg: PipelineConfig, run_id: str, record: dict[str, Any]) -> None:
    """The weights as params (one per variable), the record and render config as artifacts."""
    from mlflow import MlflowClient

    tracking.setup(cfg)
    client = MlflowClient()
    client.log_param(run_id, "steer.mode", record["mode"])
    for key, weights in sorted(record["weights"].items()):
        client.log_param(run_id, f"steer.weights.{key}", json.dumps(weights))
    client.log_dict(run_id, record, f"steer/{RECORD}")
    client.log_text(run_id, yaml.safe_dump(record["topup"]["domain"], sort_keys=True),
                    f"steer/{RENDER_CONFIG}")
    for name, value in (("steer_holdout_failure_rate", record["renders"]["totals"]["failure_rate"]),
                        ("steer_val_miss_rate", record["photos"]["totals"]["miss_rate"]),
                        ("steer_val_false_rate", record["photos"]["totals"]["false_rate"])):
        if value is not None:
            client.log_metric(run_id, name, float(value))


def render_topup(cfg: PipelineConfig, cycle: int, domain: DomainConfig, *,
                 progress: bool = True) -> DatasetRef:
    """Render (or resume) the top-up with ``domain`` and version it with DVC."""
    from synthloop.stages.render import ANNOTATIONS, dataset_ref
    from synthloop.synthesis.meshes import resolve_cad_files, resolve_cad_parts
    from synthloop.synthesis.render import render_domain
    from synthloop.versioning.remote import commit_and_push

    ws, folder = Workspace.of(cfg), topup_dir(cfg, cycle)
    if not (folder / ANNOTATIONS).exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RENDER_CONFIG).write_text(yaml.safe_dump(domain.model_dump(mode="json"),
                                                           sort_keys=True))
        parts = resolve_cad_files(resolve_cad_parts(cfg.parts, ws.cad), ws.cad / "import")
        render_domain(domain, parts, cfg.class_names, folder, render_cfg=cfg.render,
                      progress=progress)
        commit_and_push(cfg, f"top-up renders for cycle {cycle} ({cfg.steer.mode})",
                        tag=f"topup-cycle-{cycle}")
    return dataset_ref(f"topup-cycle-{cycle}", folder)
