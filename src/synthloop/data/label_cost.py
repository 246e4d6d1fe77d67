"""Labelling cost in annotator seconds, and the stop rule that reads it (pure functions).

Two sources, per image:

* ``lead_time``: Label Studio records, in each annotation of its JSON export, the seconds the
  annotator spent on it (``lead_time``). An image's cost is the sum over its annotations (a
  cancelled one took time too). Used wherever the export has it.
* ``model``: otherwise (the simulated oracle, CVAT's COCO export, Label Studio without lead
  times) the cost model of ``labeling.cost`` (config.LabelCostConfig)::

      seconds = image_s * images + new_box_s * new + corrected_box_s * corrected
                + accepted_box_s * (accepted + rejected)

  A final box is *accepted* when a pre-annotation of its class overlaps it with IoU >=
  ``labeling.accept_iou``, *corrected* when one overlaps it with IoU >= ``CORRECT_IOU`` (moved
  or resized), *new* otherwise; a pre-annotation no final box kept was *rejected* (one look and
  one click, like an acceptance). The simulated oracle offers no pre-annotations: every box is
  new.

The stop rule: ``decide_saturation`` estimates the AP gain the next cycle's labelling minute
buys as the mean of the last ``window`` cycles' gains per minute (the gate's evidence:
candidate AP - champion AP on the same validation set, over that cycle's labelling minutes);
below ``labeling.stop_below_gain_per_minute`` the loop is "saturated".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

CORRECT_IOU = 0.5  # a final box this close to a pre-annotation of its class was corrected from it
MODEL, LEAD_TIME, MIXED, NONE = "model", "lead_time", "mixed", "none"
Box = tuple[int, tuple[float, float, float, float]]  # (category id, [x1, y1, x2, y2] px)


@dataclass(frozen=True)
class BoxCounts:
    """What an annotator did on some images: boxes drawn new, corrected, accepted, rejected."""

    images: int = 0
    new: int = 0
    corrected: int = 0
    accepted: int = 0
    rejected: int = 0

    def __add__(self, other: "BoxCounts") -> "BoxCounts":
        return BoxCounts(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @property
    def boxes(self) -> int:
        """Boxes in the final labels."""
        return self.new + self.corrected + self.accepted


def astuple(c: BoxCounts) -> tuple[int, ...]:
    return (c.images, c.new, c.corrected, c.accepted, c.rejected)


def model_seconds(counts: BoxCounts, cost: Any) -> float:
    """Annotator seconds the cost model charges (``cost``: config.LabelCostConfig)."""
    return (cost.image_s * counts.images + cost.new_box_s * counts.new
            + cost.corrected_box_s * counts.corrected
            + cost.accepted_box_s * (counts.accepted + counts.rejected))


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def count_image(final: Sequence[Box], offered: Sequence[Box], *, accept_iou: float) -> BoxCounts:
    """One image: ``final`` boxes against the ``offered`` pre-annotations (both ``(category,
    [x1, y1, x2, y2] px)``), matched one-to-one greedily by IoU within a class."""
    pairs = sorted(((_iou(p[1], f[1]), i, j) for i, p in enumerate(offered)
                    for j, f in enumerate(final) if p[0] == f[0]), reverse=True)
    used_p: set[int] = set()
    kind: dict[int, str] = {}
    for value, i, j in pairs:
        if value < CORRECT_IOU:
            break
        if i not in used_p and j not in kind:
            used_p.add(i)
            kind[j] = "accepted" if value >= accept_iou else "corrected"
    accepted = sum(1 for v in kind.values() if v == "accepted")
    return BoxCounts(images=1, new=len(final) - len(kind), corrected=len(kind) - accepted,
                     accepted=accepted, rejected=len(offered) - len(used_p))


def count_boxes(final: Mapping[int, Sequence[Box]],
                offered: Mapping[int, Sequence[Box]] | None = None, *,
                accept_iou: float = 0.9) -> dict[int, BoxCounts]:
    """Per image id of ``final``: its counts (no pre-annotations offered: every box is new)."""
    offered = offered or {}
    return {i: count_image(boxes, offered.get(i, ()), accept_iou=accept_iou)
            for i, boxes in final.items()}


def coco_boxes(ds: Any, image_ids: Iterable[int] | None = None) -> dict[int, list[Box]]:
    """Image id -> ``(category id, [x1, y1, x2, y2] px)`` of a CocoDataset (COCO ``[x, y, w,
    h]`` inside it); ``image_ids`` (default: all) each get a list, empty without boxes."""
    ids = [im.id for im in ds.images] if image_ids is None else [int(i) for i in image_ids]
    out: dict[int, list[Box]] = {i: [] for i in ids}
    for a in ds.annotations:
        if a.image_id in out:
            x, y, w, h = a.bbox
            out[a.image_id].append((a.category_id, (x, y, x + w, y + h)))
    return out


def dataset_cost(ds: Any, image_ids: Iterable[int], cost: Any) -> "LabelCost":
    """The cost model's seconds to label ``image_ids`` of ``ds`` from scratch (no
    pre-annotations: every box new), e.g. the simulated oracle's or an experiment run's picks."""
    return cycle_cost(count_boxes(coco_boxes(ds, image_ids)), cost)


def labelstudio_lead_times(raw: Any) -> dict[int, float]:
    """Image id -> seconds from a Label Studio JSON export (a list of tasks whose ``data`` holds
    ``synthloop_image_id``): the sum of its annotations' ``lead_time``. Tasks without a usable
    lead time (missing, not a finite number >= 0) are left out."""
    out: dict[int, float] = {}
    if not isinstance(raw, list):
        return out
    for task in raw:
        data = task.get("data") if isinstance(task, dict) else None
        image_id = data.get("synthloop_image_id") if isinstance(data, dict) else None
        anns = task.get("annotations") if isinstance(task, dict) else None
        if not isinstance(image_id, int) or not isinstance(anns, list):
            continue
        times = [a.get("lead_time") for a in anns if isinstance(a, dict)]
        times = [float(t) for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)
                 and math.isfinite(t) and t >= 0]
        if times:
            out[int(image_id)] = sum(times)
    return out


@dataclass(frozen=True)
class LabelCost:
    """One cycle's labelling cost. ``source``: ``lead_time`` (every image timed by the tool),
    ``model`` (none), ``mixed``, or ``none`` (nothing was labelled)."""

    seconds: float
    source: str
    images: int
    boxes: int
    images_timed: int  # images whose seconds are Label Studio lead times
    counts: BoxCounts

    @property
    def minutes(self) -> float:
        return self.seconds / 60.0

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "minutes": round(self.minutes, 4),
                "source": self.source, "images": self.images, "boxes": self.boxes,
                "images_timed": self.images_timed, "counts": asdict(self.counts)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LabelCost":
        return cls(float(d["seconds"]), d["source"], int(d["images"]), int(d["boxes"]),
                   int(d["images_timed"]), BoxCounts(**d["counts"]))


def cycle_cost(counts: Mapping[int, BoxCounts], cost: Any,
               lead_times: Mapping[int, float] | None = None) -> LabelCost:
    """The cost of the images in ``counts``: lead times where given, the model elsewhere."""
    lead_times = lead_times or {}
    seconds, timed = 0.0, 0
    total = BoxCounts()
    for image_id, c in counts.items():
        total = total + c
        if image_id in lead_times:
            seconds += lead_times[image_id]
            timed += 1
        else:
            seconds += model_seconds(c, cost)
    n = len(counts)
    source = NONE if n == 0 else LEAD_TIME if timed == n else MODEL if timed == 0 else MIXED
    return LabelCost(seconds, source, n, total.boxes, timed, total)


def combine(parts: Iterable[LabelCost]) -> LabelCost:
    """One cost of several oracles' parts (a mixed pool: simulated + people)."""
    parts = [p for p in parts if p.images]
    if not parts:
        return LabelCost(0.0, NONE, 0, 0, 0, BoxCounts())
    n, timed = sum(p.images for p in parts), sum(p.images_timed for p in parts)
    counts = BoxCounts()
    for p in parts:
        counts = counts + p.counts
    source = LEAD_TIME if timed == n else MODEL if timed == 0 else MIXED
    return LabelCost(sum(p.seconds for p in parts), source, n, counts.boxes, timed, counts)


def gain_per_minute(improvement: float | None, seconds: float) -> float | None:
    """AP gain per labelling minute; None when there was no labelling or no gain measured."""
    if improvement is None or seconds <= 0 or not math.isfinite(improvement):
        return None
    return improvement / (seconds / 60.0)


@dataclass(frozen=True)
class Saturation:
    """The stop rule's decision for the NEXT cycle."""

    saturated: bool
    expected_gain_per_minute: float | None
    threshold: float | None
    window: int
    cycles: tuple[int, ...]  # the cycles the estimate averages
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cycles": list(self.cycles)}


def decide_saturation(history: Sequence[tuple[int, float]], *, threshold: float | None,
                      window: int) -> Saturation:
    """``history``: (cycle, AP gain per labelling minute) of the finished cycles that labelled
    something, oldest first. Saturated when the mean of the last ``window`` is below
    ``threshold``; never before ``window`` such cycles, never with ``threshold`` None (off)."""
    recent = list(history)[-window:]
    expected = sum(g for _, g in recent) / len(recent) if recent else None
    cycles = tuple(c for c, _ in recent)
    if threshold is None:
        why = "stop rule off (labeling.stop_below_gain_per_minute not set)"
        return Saturation(False, expected, None, window, cycles, why)
    if len(recent) < window:
        why = (f"not enough evidence: {len(recent)} of {window} costed cycles "
               "(labeling.stop_window) to estimate the gain per labelling minute")
        return Saturation(False, expected, threshold, window, cycles, why)
    names = ", ".join(map(str, cycles))
    if expected < threshold:
        why = (f"saturated: expected AP gain {expected:+.5f} per labelling minute (mean of cycles "
               f"{names}) is below labeling.stop_below_gain_per_minute={threshold:g}")
        return Saturation(True, expected, threshold, window, cycles, why)
    why = (f"not saturated: expected AP gain {expected:+.5f} per labelling minute (mean of cycles "
           f"{names}) >= {threshold:g}")
    return Saturation(False, expected, threshold, window, cycles, why)
