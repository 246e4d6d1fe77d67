"""Stage: get the query batch labelled and add it to data/labeled; version the data with DVC.

The demo's oracle is simulated: it copies the ground truth kept aside in oracle/pool.json. In
production (``labeling.oracle``: labelstudio | cvat) a person labels the exported batch and the
strict import adds it here instead (``stages/label_human.py``). A mixed pool (simulated oracle
with ``labeling.fallback_oracle``) does both in one cycle: the batch records which oracle labels
each image (``QueryBatch.routes``, stages/label_routing.py); the simulated part waits with the
rest until people's answers are imported, then both are committed together.

The record (``state/cycle_<t>/label.json``) holds ``cost``: the annotator seconds of the new
labels and their source (Label Studio lead times or the ``labeling.cost`` model;
stages/label_cost.py).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from synthloop import faults
from synthloop.artifacts import DatasetRef, QueryBatch
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset, categories_for
from synthloop.data.label_cost import LabelCost, combine
from synthloop.stages.label_cost import simulated_cost
from synthloop.stages.label_routing import (SIMULATED, labeled_ids, oracle_routing, restrict,
                                            unlabelable_message)
from synthloop.stages.render import ANNOTATIONS, copy_images, dataset_ref
from synthloop.stages.workspace import Workspace, read_record, write_record
from synthloop.versioning.remote import commit_and_push

log = logging.getLogger(__name__)


def simulated_oracle(cfg: PipelineConfig, image_ids: list[int]) -> CocoDataset:
    """The kept-aside ground truth of ``image_ids``; a ValueError names ids it does not have."""
    ws = Workspace.of(cfg)
    path, images = ws.oracle / "pool.json", ws.dataset_dir("pool") / "images"
    truth = (CocoDataset.load(path, images) if path.is_file() else
             CocoDataset([], [], categories_for(cfg.class_names), images))
    missing = sorted(set(image_ids) - {im.id for im in truth.images})
    if missing:
        raise ValueError(f"simulated oracle: {unlabelable_message(missing)}")
    return truth.subset(image_ids)


def routes_of(cfg: PipelineConfig, batch: QueryBatch, ids: list[int], *, cycle: int
              ) -> dict[str, list[int]]:
    """oracle -> ids it labels: as the query recorded it, else (older records) as routed now.
    An id no configured oracle can label is an error that says what to set."""
    recorded = {i: name for name, routed in batch.routes.items() for i in routed}
    routing = oracle_routing(cfg)
    out: dict[str, list[int]] = {}
    stuck = []
    for i in ids:
        name = recorded.get(i) or routing.oracle_for(i)
        if name is None:
            stuck.append(i)
        else:
            out.setdefault(name, []).append(i)
    if stuck:
        raise ValueError(f"label (cycle {cycle}): the query batch (state/cycle_{cycle}/query.json) "
                         f"cannot be labelled: {unlabelable_message(stuck)}. Rerun `synthloop "
                         "cycle` after setting one: the query then chooses again")
    return out


def run(cfg: PipelineConfig, *, cycle: int, batch: QueryBatch) -> DatasetRef:
    ws = Workspace.of(cfg)
    record_path = ws.cycle_dir(cycle) / "label.json"
    folder = ws.dataset_dir("labeled")
    if read_record(record_path):
        return dataset_ref("labeled", folder)
    # The labelled set before this cycle: a crash after the annotations were saved (before
    # this record) must not make a rerun count this cycle's labels as old ones.
    have = labeled_ids(cfg) - set(batch.new_label_ids)
    routes = routes_of(cfg, batch, [i for i in batch.image_ids if i not in have], cycle=cycle)
    parts: list[CocoDataset] = []
    human: dict = {}
    costs: list[LabelCost] = []
    if routes.get(SIMULATED):
        parts.append(simulated_oracle(cfg, routes[SIMULATED]))
        costs.append(simulated_cost(cfg, parts[-1], routes[SIMULATED]))
    people = [i for name, ids in routes.items() if name != SIMULATED for i in ids]
    if people:  # export and stop (LabelsPending) until `synthloop label import` brought answers
        from synthloop.stages.label_human import human_answers

        answers, human = human_answers(cfg, cycle, restrict(batch, people))
        parts.append(answers)  # skipped images are not in the answers: they stay in the pool
        if human.get("cost"):
            costs.append(LabelCost.from_dict(human["cost"]))
    new = [im.id for p in parts for im in p.images if im.id not in have]
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for answers in parts:  # a fault point after each image: annotations not yet written
        copy_images(answers, images, after_each=lambda: faults.point("label.mid_write"))
    old = CocoDataset.load(folder / ANNOTATIONS) if have else None
    for answers in parts:
        old = union(old, answers.with_image_root(images))
    labeled = old or CocoDataset([], [], categories_for(cfg.class_names), images)
    labeled.save(folder / ANNOTATIONS)
    data_md5 = commit_and_push(cfg, f"cycle {cycle}: +{len(new)} labels "
                               f"({len(labeled.images)} in total)", tag=f"cycle-{cycle}")
    cost = combine(costs)
    write_record(record_path, {"new": new, "total": len(labeled.images), "data_md5": data_md5,
                               "oracle": cfg.labeling.oracle,
                               "routes": {k: len(v) for k, v in routes.items()}, **human,
                               "cost": cost.to_dict()})
    log.info("label (cycle %d): +%d images (%s; %d labelled in total), data version %s; "
             "%.1f annotator minutes (%s)", cycle, len(new),
             ", ".join(f"{k}: {len(v)}" for k, v in routes.items()) or "none",
             len(labeled.images), data_md5, cost.minutes, cost.source)
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
