"""Stage: get the query batch labelled and add it to data/labeled; version the data with DVC.

The demo's oracle is simulated: it copies the ground truth kept aside in oracle/pool.json. In
production (``labeling.oracle``: labelstudio | cvat) a person labels the exported batch and the
strict import adds it here instead (``stages/label_human.py``).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace

from synthloop import faults
from synthloop.artifacts import DatasetRef, QueryBatch
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.stages.render import ANNOTATIONS, dataset_ref
from synthloop.stages.workspace import Workspace, read_record, write_record
from synthloop.versioning.remote import commit_and_push

log = logging.getLogger(__name__)


def labeled_ids(cfg: PipelineConfig) -> set[int]:
    """Ids (pool image ids) of the images labelled so far."""
    path = Workspace.of(cfg).dataset_dir("labeled") / ANNOTATIONS
    return {im.id for im in CocoDataset.load(path).images} if path.exists() else set()


def simulated_oracle(cfg: PipelineConfig, image_ids: list[int]) -> CocoDataset:
    ws = Workspace.of(cfg)
    return CocoDataset.load(ws.oracle / "pool.json", ws.dataset_dir("pool") / "images").subset(image_ids)


def run(cfg: PipelineConfig, *, cycle: int, batch: QueryBatch) -> DatasetRef:
    ws = Workspace.of(cfg)
    record_path = ws.cycle_dir(cycle) / "label.json"
    folder = ws.dataset_dir("labeled")
    if read_record(record_path):
        return dataset_ref("labeled", folder)
    # The labelled set before this cycle: a crash after the annotations were saved (before
    # this record) must not make a rerun count this cycle's labels as old ones.
    have = labeled_ids(cfg) - set(batch.new_label_ids)
    new = [i for i in batch.image_ids if i not in have]
    human: dict = {}
    if cfg.labeling.oracle == "simulated":
        answers = simulated_oracle(cfg, new)
    else:  # people: export and stop (LabelsPending) until `synthloop label import` brought answers
        from synthloop.stages.label_human import human_answers

        answers, human = human_answers(cfg, cycle, batch)
        new = [im.id for im in answers.images if im.id not in have]  # skipped ones stay in the pool
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for im in answers.images:
        dst = images / im.file_name
        if not dst.exists():
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(answers.image_path(im), tmp)
            tmp.replace(dst)
        faults.point("label.mid_write")  # some images copied, annotations not yet written
    labeled = union(CocoDataset.load(folder / ANNOTATIONS) if have else None,
                    answers.with_image_root(images))
    labeled.save(folder / ANNOTATIONS)
    data_md5 = commit_and_push(cfg, f"cycle {cycle}: +{len(new)} labels "
                               f"({len(labeled.images)} in total)", tag=f"cycle-{cycle}")
    write_record(record_path, {"new": new, "total": len(labeled.images), "data_md5": data_md5,
                               "oracle": cfg.labeling.oracle, **human})
    log.info("label (cycle %d): +%d images (%d labelled in total), data version %s", cycle,
             len(new), len(labeled.images), data_md5)
    return dataset_ref("labeled", folder)


def union(old: CocoDataset | None, new: CocoDataset) -> CocoDataset:
    """Add ``new``'s images not yet in ``old``, keeping pool image ids; renumber annotation ids."""
    if old is None:
        return new
    known = {im.id for im in old.images}
    next_id = max((a.id for a in old.annotations), default=0) + 1
    anns = list(old.annotations)
    for a in new.annotations:
        if a.image_id not in known:
            anns.append(replace(a, id=next_id))
            next_id += 1
    images = list(old.images) + [im for im in new.images if im.id not in known]
    return CocoDataset(images, anns, old.categories, old.image_root)
