"""Stage: pretrain M0 on the synthetic renders; register it; make it champion if none exists.

Early stopping uses a held-out slice of the synthetic set (never the validation set, so the
gate's numbers stay unbiased); the validation set only scores the finished model.
"""

from __future__ import annotations

import logging

import numpy as np

from synthloop import lineage, tracking
from synthloop.artifacts import DatasetRef, EvalResult, ModelRef
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.stages import gate
from synthloop.stages.training import train_evaluate_register
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)
HOLDOUT_FRACTION = 0.1


def split_holdout(ds: CocoDataset, *, fraction: float, seed: int) -> tuple[CocoDataset, CocoDataset]:
    """Random (seeded) split into (train, holdout); the holdout has at least one image."""
    ids = np.array([im.id for im in ds.images])
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    n_hold = max(1, int(round(len(ids) * fraction))) if len(ids) > 1 else 0
    return ds.subset(sorted(ids[n_hold:].tolist())), ds.subset(sorted(ids[:n_hold].tolist()))


def run(cfg: PipelineConfig, synthetic: DatasetRef, val: DatasetRef, *,
        progress: bool = True) -> ModelRef:
    ws = Workspace.of(cfg)
    record_path = ws.root / "state" / "pretrain.json"
    done = read_record(record_path)
    if done:
        trained_on = done.get("synthetic_md5")
        if trained_on and trained_on != synthetic.md5:
            # later cycles fine-tuned from this M0: training another one under them would mix
            # two lineages in one workspace
            log.warning("pretrain: M0 (run %s) was trained on other renders (synthetic md5 %s, "
                        "now %s): kept, since this workspace's cycles build on it; to pretrain "
                        "on the new renders, start a new workspace", done["run_id"], trained_on,
                        synthetic.md5)
        else:
            log.info("pretrain: already done (run %s), skipped", done["run_id"])
        return ModelRef(**{k: done[k] for k in ("run_id", "uri", "version", "metrics")})
    # Trained and registered, but the gate did not finish (a crash during the alias move):
    # gate the registered model; training and registering it again would orphan a version.
    registered = read_record(ws.cycle_dir(0) / "candidate.json")
    if registered:
        ref, ev = ModelRef(**registered["model"]), EvalResult(**registered["eval"])
    else:
        tracking.setup(cfg)
        full = CocoDataset.load(synthetic.annotations, synthetic.image_root)
        train_ds, holdout = split_holdout(full, fraction=HOLDOUT_FRACTION, seed=cfg.pretrain.seed)
        ref, ev = train_evaluate_register(
            cfg, run_name="pretrain", tags={"stage": "pretrain", "cycle": "0", "labels_used": "0",
                                            **lineage.run_tags(cfg, cad=True, datasets={
                                                "synthetic": synthetic, "val": val})},
            train_ds=train_ds, stop_ds=holdout, val=val, train_cfg=cfg.pretrain,
            init_checkpoint=None, checkpoint_dir=ws.checkpoint_dir("pretrain"),
            extra_params={"synthetic.md5": synthetic.md5}, datasets={"synthetic": synthetic},
            progress=progress)
        write_record(ws.cycle_dir(0) / "candidate.json", {
            "model": {"run_id": ref.run_id, "uri": ref.uri, "version": ref.version,
                      "metrics": ref.metrics},
            "eval": {"metrics": ev.metrics, "dataset_md5": ev.dataset_md5,
                     "num_images": ev.num_images}})
    gate.run(cfg, cycle=0, candidate=ref, candidate_eval=ev)
    write_record(record_path, {"run_id": ref.run_id, "uri": ref.uri, "version": ref.version,
                               "metrics": ref.metrics, "synthetic_md5": synthetic.md5})
    return ref
