"""Stage: fine-tune the previous cycle's model on the labelled real set, evaluate, register.

Like the paper, M_t starts from M_{t-1} (the previous candidate, promoted or not) and trains on
L only; the validation set is used for the final score alone, never for early stopping.

``finetune_mix`` (off by default) adds renders to L: a ``fixed`` share, or a share from the
cycle's sim-to-real gap and |L| (``gap_rule``, monitoring/sim_to_real.py). The renders are drawn
once per cycle, seeded by (finetune_mix.seed, cycle), so the share holds for each epoch's
composition; the loader's shuffle spreads them over the batches (each batch has the share in
expectation, not exactly). The share is logged as a param and a metric of the fine-tune run and
as the metric ``finetune_synthetic_share`` of the cycle's run.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient

from synthloop import lineage, tracking
from synthloop.artifacts import DatasetRef, EvalResult, ModelRef
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset, union
from synthloop.monitoring.sim_to_real import synthetic_count, synthetic_share
from synthloop.stages import steer
from synthloop.stages.training import train_evaluate_register
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)


def mixed_training_set(labeled: CocoDataset, synthetic: CocoDataset, *, share: float,
                       seed: int, cycle: int) -> tuple[CocoDataset, list[int]]:
    """L plus ``synthetic_count(share, |L|)`` renders (at most all of them), drawn without
    replacement with the seed (``seed``, ``cycle``); returns the set (L first, ids renumbered
    from 1) and the renders' ids in ``synthetic``. ``share`` 0 returns ``labeled`` as it is."""
    n = min(synthetic_count(share, len(labeled.images)), len(synthetic.images))
    if n == 0:
        return labeled, []
    rng = np.random.default_rng([seed, cycle])
    picked = sorted(int(i) for i in rng.choice([im.id for im in synthetic.images], size=n,
                                               replace=False))
    return union([labeled, synthetic.subset(picked)]), picked


def mix_of(cfg: PipelineConfig, *, labels: int, gap: dict[str, Any] | None) -> dict[str, Any]:
    """The cycle's mix: mode, share and the AUC it came from (``gap``: the sim-to-real record;
    its ``rule_auc``, or the image-level AUC of a record without one)."""
    auc = gap.get("rule_auc", gap["image"]["auc"]) if gap else None
    return {"mode": cfg.finetune_mix.mode, "auc": auc, "labels": labels,
            "share": synthetic_share(cfg.finetune_mix, auc=auc, labels=labels)}


def run(cfg: PipelineConfig, *, cycle: int, previous: ModelRef, labeled: DatasetRef,
        val: DatasetRef, parent_run_id: str | None = None,
        progress: bool = True, synthetic: DatasetRef | None = None,
        gap: dict[str, Any] | None = None) -> tuple[ModelRef, EvalResult]:
    """``synthetic``: the render set (needed unless ``finetune_mix.mode`` is off); ``gap``:
    the cycle's sim-to-real record (stages/sim_to_real.py; needed by ``gap_rule``)."""
    ws = Workspace.of(cfg)
    record_path = ws.cycle_dir(cycle) / "candidate.json"
    done = read_record(record_path)
    if done:
        return ModelRef(**done["model"]), EvalResult(**done["eval"])
    tracking.setup(cfg)
    train_ds = CocoDataset.load(labeled.annotations, labeled.image_root)
    labels = len(train_ds.images)
    mix = mix_of(cfg, labels=labels, gap=gap)
    if mix["share"] > 0:
        if synthetic is None:
            raise ValueError(f"finetune_mix.mode {cfg.finetune_mix.mode} needs the synthetic set")
        train_ds, picked = mixed_training_set(
            train_ds, CocoDataset.load(synthetic.annotations, synthetic.image_root),
            share=mix["share"], seed=cfg.finetune_mix.seed, cycle=cycle)
        mix["synthetic_ids"] = picked
        log.info("finetune cycle %d: %d labelled photos + %d renders (share %.3f, %s)", cycle,
                 labels, len(picked), mix["share"], mix["mode"])
    mix["synthetic_images"] = len(train_ds.images) - labels
    topup = steer.topup_dataset(cfg, cycle)  # failure-steered renders (steer:), if any
    train_ds = steer.with_topup(train_ds, topup)
    mix["topup_images"] = len(train_ds.images) - labels - mix["synthetic_images"]
    with tempfile.TemporaryDirectory() as tmp:
        init = tracking.download_checkpoint(previous.uri, Path(tmp))
        ref, ev = train_evaluate_register(
            cfg, run_name=f"finetune-cycle-{cycle}",
            tags={"stage": "finetune", "cycle": str(cycle),
                  "labels_used": str(labels), "parent_version": str(previous.version),
                  **lineage.run_tags(cfg, datasets={"labeled": labeled, "val": val},
                                     parent_version=str(previous.version),
                                     query_batch=read_record(ws.cycle_dir(cycle) / "query.json"))},
            train_ds=train_ds, stop_ds=None, val=val, train_cfg=cfg.finetune,
            init_checkpoint=init, checkpoint_dir=ws.checkpoint_dir(f"cycle_{cycle}"),
            parent_run_id=parent_run_id,
            extra_params={"labeled.md5": labeled.md5, "parent_model_version": previous.version,
                          "finetune_mix.mode": mix["mode"],
                          "finetune_mix.share": round(mix["share"], 4),
                          "finetune_mix.synthetic_images": mix["synthetic_images"],
                          "steer.topup_images": mix["topup_images"]},
            datasets={"labeled": labeled, **({"synthetic": synthetic} if synthetic
                                             and mix["synthetic_images"] else {}),
                      **({"topup": topup} if topup and mix["topup_images"] else {})},
            progress=progress)
    log_share(ref.run_id, parent_run_id, mix["share"], cycle)
    write_record(record_path, {"model": {"run_id": ref.run_id, "uri": ref.uri, "version": ref.version,
                                         "metrics": ref.metrics},
                               "eval": {"metrics": ev.metrics, "dataset_md5": ev.dataset_md5,
                                        "num_images": ev.num_images},
                               "mix": mix})
    return ref, ev


def log_share(run_id: str, parent_run_id: str | None, share: float, cycle: int) -> None:
    client = MlflowClient()
    for rid in (run_id, parent_run_id):
        if rid:
            client.log_metric(rid, "finetune_synthetic_share", float(share), step=cycle)
