"""Which oracle labels which pool image, decided before the query picks anything.

The simulated oracle can only copy ground truth that was kept aside in ``oracle/pool.json``
(a rendered or imported pool; ingested photos whose source had an ``annotations.json``). People
(Label Studio, CVAT) can label any image. So, per ``labeling``:

* ``oracle: labelstudio | cvat``: every image goes to people.
* ``oracle: simulated``: images with ground truth go to the simulation; the rest go to
  ``fallback_oracle`` when it is set (a mixed pool: one batch, two oracles), and are left out
  of the query otherwise (the query batch counts them as ``excluded``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

from synthloop.artifacts import QueryBatch
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.stages.render import ANNOTATIONS
from synthloop.stages.workspace import Workspace

log = logging.getLogger(__name__)
SIMULATED = "simulated"


def labeled_ids(cfg: PipelineConfig) -> set[int]:
    """Ids (pool image ids) of the images labelled so far (by any oracle)."""
    path = Workspace.of(cfg).dataset_dir("labeled") / ANNOTATIONS
    return {im.id for im in CocoDataset.load(path).images} if path.exists() else set()


@dataclass(frozen=True)
class OracleRouting:
    """``oracle_for(image_id)``: the oracle that labels an image, None when none can.

    ``ground_truth``: pool ids the simulated oracle has boxes for (empty for a human oracle).
    """

    oracle: str
    fallback: str | None
    ground_truth: frozenset[int]

    def oracle_for(self, image_id: int) -> str | None:
        if self.oracle != SIMULATED:
            return self.oracle
        return SIMULATED if int(image_id) in self.ground_truth else self.fallback

    def can_label(self, image_id: int) -> bool:
        return self.oracle_for(image_id) is not None

    def route(self, image_ids: Iterable[int]) -> dict[str, tuple[int, ...]]:
        """oracle -> the ids it labels (order kept); ids no oracle can label are left out."""
        out: dict[str, list[int]] = {}
        for i in image_ids:
            name = self.oracle_for(i)
            if name is not None:
                out.setdefault(name, []).append(int(i))
        return {name: tuple(ids) for name, ids in out.items()}

    def unlabelable(self, image_ids: Iterable[int]) -> tuple[int, ...]:
        return tuple(int(i) for i in image_ids if not self.can_label(i))


def oracle_routing(cfg: PipelineConfig) -> OracleRouting:
    """The routing for this workspace now (reads the image ids of ``oracle/pool.json``)."""
    import json

    lab = cfg.labeling
    truth: frozenset[int] = frozenset()
    if lab.oracle == SIMULATED:
        path = Workspace.of(cfg).oracle / "pool.json"
        if path.is_file():
            truth = frozenset(int(im["id"]) for im in json.loads(path.read_text())["images"])
    return OracleRouting(lab.oracle, lab.fallback_oracle if lab.oracle == SIMULATED else None,
                         truth)


def restrict(batch: QueryBatch, image_ids: Iterable[int]) -> QueryBatch:
    """The part of ``batch`` with these ids (order, scores and new-label flags kept)."""
    keep = {int(i) for i in image_ids}
    kept = [(i, s) for i, s in zip(batch.image_ids, batch.scores) if i in keep]
    return replace(batch, image_ids=tuple(i for i, _ in kept), scores=tuple(s for _, s in kept),
                   new_label_ids=tuple(i for i in batch.new_label_ids if i in keep))


def unlabelable_message(ids: Iterable[int]) -> str:
    """What happened and what to set, for images the simulated oracle has no boxes for."""
    ids = sorted(int(i) for i in ids)
    shown = ", ".join(str(i) for i in ids[:10]) + (", ..." if len(ids) > 10 else "")
    return (f"{len(ids)} pool images have no ground truth for the simulated oracle "
            f"(ids {shown}; e.g. photos added by `synthloop ingest` without an annotations.json). "
            "Set labeling.fallback_oracle=labelstudio (or cvat) to have people label them while "
            "the simulation labels the rest, or labeling.oracle=labelstudio for people to label "
            "everything; without either, the query leaves them out")
