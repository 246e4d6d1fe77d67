"""Stage: fine-tune the previous cycle's model on the labelled real set, evaluate, register.

Like the paper, M_t starts from M_{t-1} (the previous candidate, promoted or not) and trains on
L only; the validation set is used for the final score alone, never for early stopping.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from synthloop import lineage, tracking
from synthloop.artifacts import DatasetRef, EvalResult, ModelRef
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.stages.training import train_evaluate_register
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, *, cycle: int, previous: ModelRef, labeled: DatasetRef,
        val: DatasetRef, parent_run_id: str | None = None,
        progress: bool = True) -> tuple[ModelRef, EvalResult]:
    ws = Workspace.of(cfg)
    record_path = ws.cycle_dir(cycle) / "candidate.json"
    done = read_record(record_path)
    if done:
        return ModelRef(**done["model"]), EvalResult(**done["eval"])
    tracking.setup(cfg)
    train_ds = CocoDataset.load(labeled.annotations, labeled.image_root)
    with tempfile.TemporaryDirectory() as tmp:
        init = tracking.download_checkpoint(previous.uri, Path(tmp))
        ref, ev = train_evaluate_register(
            cfg, run_name=f"finetune-cycle-{cycle}",
            tags={"stage": "finetune", "cycle": str(cycle),
                  "labels_used": str(len(train_ds.images)), "parent_version": str(previous.version),
                  **lineage.run_tags(cfg, datasets={"labeled": labeled, "val": val},
                                     parent_version=str(previous.version),
                                     query_batch=read_record(ws.cycle_dir(cycle) / "query.json"))},
            train_ds=train_ds, stop_ds=None, val=val, train_cfg=cfg.finetune,
            init_checkpoint=init, checkpoint_dir=ws.checkpoint_dir(f"cycle_{cycle}"),
            parent_run_id=parent_run_id,
            extra_params={"labeled.md5": labeled.md5, "parent_model_version": previous.version},
            datasets={"labeled": labeled}, progress=progress)
    write_record(record_path, {"model": {"run_id": ref.run_id, "uri": ref.uri, "version": ref.version,
                                         "metrics": ref.metrics},
                               "eval": {"metrics": ev.metrics, "dataset_md5": ev.dataset_md5,
                                        "num_images": ev.num_images}})
    return ref, ev
