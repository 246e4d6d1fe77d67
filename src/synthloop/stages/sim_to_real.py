"""Stage: the sim-to-real gap of a cycle, in the feature space of the model about to be
fine-tuned (M_{t-1}), before the fine-tune that may use it (``finetune_mix.mode: gap_rule``).

Samples ``sim_to_real.images`` renders from the synthetic set and as many real photos from the
pool (the labelled set L first, it holds the only real boxes; then unlabelled pool images). The
validation set is never read: the gap steers training, and val must stay unseen by it.

* image level: the finest FPN level pooled per image (the active-learning scorer's feature);
* box level, per class: the box head's representation of each ground-truth box (renders' boxes
  vs L's boxes), at most ``max_boxes_per_class`` a side (seeded); a class with fewer than
  ``folds`` boxes on a side is skipped and the record says so. Only for torchvision Faster
  R-CNNs (detection/domain_features.py); other backends get the image level only.

The AUC the mix rule reads (``rule_auc``, logged as ``sim_to_real_rule_auc``) is the mean of the
per-class box-level AUCs when any class was measured, else the image-level AUC: the pooled image
feature mostly sees backgrounds (tables, floors, lighting), and on bolts it separates renders
from photos perfectly (AUC 1.0, docs/bolts.md), leaving the rule nothing to grade; the box
head's features are what the detector classifies parts from.

Logs ``sim_to_real_mmd``, ``sim_to_real_auc``, ``sim_to_real_mmd_p`` and per class
``sim_to_real_mmd.<class>``, ``sim_to_real_auc.<class>`` to the cycle's MLflow run (the cycle
report shows every ``sim_to_real_*`` metric) and writes ``state/cycle_<t>/sim_to_real.json``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient

from synthloop import tracking
from synthloop.artifacts import DatasetRef, ModelRef
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.monitoring.sim_to_real import measure_gap
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)
RECORD = "sim_to_real.json"
METRIC = "sim_to_real"


def sample_ids(ids: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """``n`` of ``ids`` drawn without replacement (all of them when there are no more), sorted."""
    if len(ids) <= n:
        return sorted(ids)
    return sorted(int(i) for i in rng.choice(ids, size=n, replace=False))


def real_sample(pool: CocoDataset, labeled: CocoDataset | None, n: int,
                rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(L image ids, pool image ids) making ``n`` real photos: L's first (its boxes give the
    box-level gap), then pool images not in L (matched by file name)."""
    lab_ids = sample_ids([im.id for im in labeled.images], n, rng) if labeled else []
    taken = {Path(im.file_name).name for im in labeled.subset(lab_ids).images} if labeled else set()
    rest = [im.id for im in pool.images if Path(im.file_name).name not in taken]
    return lab_ids, sample_ids(rest, n - len(lab_ids), rng)


def class_gaps(cfg: PipelineConfig, syn_box: np.ndarray, syn_lab: np.ndarray,
               real_box: np.ndarray, real_lab: np.ndarray,
               rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    """Per class name: the box-level gap, or {"skipped": why}."""
    s = cfg.sim_to_real
    out: dict[str, dict[str, Any]] = {}
    for cat, name in enumerate(cfg.class_names, start=1):
        rows = [np.flatnonzero(lab == cat) for lab in (syn_lab, real_lab)]
        if min(len(r) for r in rows) < max(s.folds, 4):
            out[name] = {"skipped": f"{len(rows[0])} render boxes, {len(rows[1])} labelled real "
                                    f"boxes (need {max(s.folds, 4)} a side)"}
            continue
        rows = [r if len(r) <= s.max_boxes_per_class
                else rng.choice(r, size=s.max_boxes_per_class, replace=False) for r in rows]
        out[name] = measure_gap(syn_box[rows[0]], real_box[rows[1]], folds=s.folds,
                                permutations=s.permutations, seed=s.seed).to_dict()
    return out


def rule_auc(image: dict[str, Any], classes: dict[str, dict[str, Any]]) -> tuple[float, str]:
    """(the AUC the mix rule reads, its level): the mean box-level AUC over the measured
    classes, else the image-level AUC."""
    boxes = [g["auc"] for g in classes.values() if "auc" in g]
    return (float(np.mean(boxes)), "box") if boxes else (float(image["auc"]), "image")


def metrics_of(record: dict[str, Any]) -> dict[str, float]:
    """The MLflow metrics of a record (image level, the rule's AUC, then per class)."""
    img = record["image"]
    out = {f"{METRIC}_mmd": img["mmd2"], f"{METRIC}_auc": img["auc"],
           f"{METRIC}_rule_auc": record["rule_auc"]}
    if img.get("p_value") is not None:
        out[f"{METRIC}_mmd_p"] = img["p_value"]
    for name, gap in record["classes"].items():
        if "auc" in gap:
            out[f"{METRIC}_mmd.{name}"] = gap["mmd2"]
            out[f"{METRIC}_auc.{name}"] = gap["auc"]
    return {k: float(v) for k, v in out.items()}


def features(cfg: PipelineConfig, net: Any, syn: CocoDataset, lab: CocoDataset | None,
             pool: CocoDataset, progress: bool) -> tuple[dict[str, np.ndarray], str]:
    """Image features of renders and photos, box features and labels where the backend allows."""
    from synthloop.detection import predict_with_probs_and_features
    from synthloop.detection.domain_features import domain_features, supports_box_features

    parts = [syn, *([lab] if lab is not None and lab.images else []), pool]
    if not supports_box_features(net):
        rows = [np.stack([s.feature for s in predict_with_probs_and_features(
            net, ds, batch_size=cfg.active.batch_size, progress=progress)]) if ds.images
            else None for ds in parts]
        real = np.vstack([r for r in rows[1:] if r is not None])
        return {"syn_image": rows[0], "real_image": real}, "image"
    f = [domain_features(net, ds, boxes=ds is not pool) if ds.images else None for ds in parts]
    real = [x for x in f[1:] if x is not None]
    width = f[0].box.shape[1]
    return {"syn_image": f[0].image, "real_image": np.vstack([x.image for x in real]),
            "syn_box": f[0].box, "syn_lab": f[0].box_labels,
            "real_box": f[1].box if len(f) == 3 else np.zeros((0, width), np.float32),
            "real_lab": f[1].box_labels if len(f) == 3 else np.zeros(0, np.int64)}, "image+box"


def run(cfg: PipelineConfig, *, cycle: int, model: ModelRef, synthetic: DatasetRef,
        pool: DatasetRef, labeled: DatasetRef | None, parent_run_id: str | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Measure, record and log the gap; returns the record (cached per cycle and model)."""
    from synthloop.detection import load_checkpoint
    from synthloop.detection.device import resolve_device

    path = Workspace.of(cfg).cycle_dir(cycle) / RECORD
    done = read_record(path)
    if done and done.get("model_version") == str(model.version):
        return done
    wall, cpu = time.perf_counter(), time.process_time()
    s = cfg.sim_to_real
    rng = np.random.default_rng([s.seed, cycle])
    syn_ds = CocoDataset.load(synthetic.annotations, synthetic.image_root)
    pool_ds = CocoDataset.load(pool.annotations, pool.image_root)
    lab_ds = CocoDataset.load(labeled.annotations, labeled.image_root) if labeled else None
    syn_ids = sample_ids([im.id for im in syn_ds.images], s.images, rng)
    lab_ids, pool_ids = real_sample(pool_ds, lab_ds, s.images, rng)
    if len(lab_ids) + len(pool_ids) < 2 or len(syn_ids) < 2:
        raise ValueError(f"sim-to-real: need 2+ renders and 2+ real photos, have {len(syn_ids)} "
                         f"and {len(lab_ids) + len(pool_ids)}")
    tracking.setup(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        net = load_checkpoint(tracking.download_checkpoint(model.uri, Path(tmp)),
                              device=resolve_device(cfg.runtime.device))
    feats, level = features(cfg, net, syn_ds.subset(syn_ids),
                            lab_ds.subset(lab_ids) if lab_ds else None,
                            pool_ds.subset(pool_ids), progress)
    image = measure_gap(feats["syn_image"], feats["real_image"], folds=s.folds,
                        permutations=s.permutations, seed=s.seed)
    classes = (class_gaps(cfg, feats["syn_box"], feats["syn_lab"], feats["real_box"],
                          feats["real_lab"], rng) if level == "image+box"
               else {n: {"skipped": "box features need a torchvision detector"}
                     for n in cfg.class_names})
    auc, auc_level = rule_auc(image.to_dict(), classes)
    record = {"cycle": cycle, "model_version": str(model.version), "levels": level,
              "rule_auc": auc, "rule_auc_level": auc_level,
              "estimator": "MMD^2 unbiased, RBF kernel, median-heuristic bandwidth; domain AUC "
                           f"of a logistic regression, {s.folds}-fold stratified CV",
              "synthetic_ids": syn_ids, "real_labeled_ids": lab_ids, "real_pool_ids": pool_ids,
              "image": image.to_dict(), "classes": classes,
              "wall_s": round(time.perf_counter() - wall, 2),
              "cpu_s": round(time.process_time() - cpu, 2)}
    write_record(path, record)
    if parent_run_id:
        client = MlflowClient()
        for key, value in metrics_of(record).items():
            client.log_metric(parent_run_id, key, value, step=cycle)
    log.info("sim-to-real gap (cycle %d, model v%s): MMD^2 %.4f (p %.3f), domain AUC %.3f; %s",
             cycle, model.version, image.mmd2, image.p_value if image.p_value is not None
             else float("nan"), image.auc,
             ", ".join(f"{n} AUC {g['auc']:.3f}" for n, g in classes.items() if "auc" in g)
             or "no per-class gap")
    return record
