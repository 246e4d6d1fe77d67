"""Strict import of finished annotations (Label Studio JSON export, CVAT COCO 1.0 export).

A file is checked against the export ``ExportManifest`` as a whole before anything is used:
known image ids / file names only, no path traversal in file names, known class names, boxes of
positive area inside their image (0.5 px tolerance), image sizes as exported, no duplicate
tasks, images, ids or boxes, and no ambiguous double annotation. Any problem rejects the whole
file (``LabelImportError`` lists every problem with its location); nothing is written here.

What comes back: images with boxes (an empty list is a real answer: "no parts here"),
images the annotator skipped (Label Studio "Skip": they stay in the pool), and images not
annotated yet (pending: they stay in the pool too). Boxes are ``[x1, y1, x2, y2]`` pixels.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from synthloop.data.coco import CocoAnnotation, CocoDataset, categories_for
from synthloop.data.label_export import ExportManifest, Preannotation

DUPLICATE_IOU = 0.95  # two boxes of one class overlapping this much are one object drawn twice
TOLERANCE_PX = 0.5
Box = tuple[int, tuple[float, float, float, float]]  # (category id 1..C, [x1, y1, x2, y2] px)


class LabelImportError(ValueError):
    """The file was rejected; ``problems`` holds every ``location: message``."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, list(problems)
        if len(self.problems) == 1:  # one line: the file, the verdict and the problem
            super().__init__(f"{source}: rejected, nothing was imported: {self.problems[0]}")
            return
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: rejected, nothing was imported ({len(self.problems)} "
                         f"problems):\n{listing}")


@dataclass(frozen=True)
class ImportedBatch:
    """A validated answer file. ``boxes`` maps each returned image id to its boxes."""

    tool: str
    source: str
    boxes: dict[int, list[Box]]
    skipped: tuple[int, ...] = ()
    pending: tuple[int, ...] = ()
    annotators: dict[int, Any] = field(default_factory=dict)

    @property
    def returned(self) -> tuple[int, ...]:
        return tuple(self.boxes)

    def to_coco(self, manifest: ExportManifest, image_root: Path) -> CocoDataset:
        """The returned images (pool ids and file names) with COCO ``[x, y, w, h]`` boxes."""
        by_id = manifest.image_by_id()
        anns = []
        for image_id, boxes in self.boxes.items():
            for cat, (x1, y1, x2, y2) in boxes:
                anns.append(CocoAnnotation(len(anns) + 1, image_id, cat, (x1, y1, x2 - x1, y2 - y1),
                                           (x2 - x1) * (y2 - y1)))
        return CocoDataset([by_id[i] for i in self.boxes], anns,
                           categories_for(list(manifest.class_names)), Path(image_root))


def unsafe_file_name(name: Any) -> str | None:
    """Why ``name`` cannot be a file name under an image folder, or None if it can."""
    if not isinstance(name, str) or not name.strip():
        return "is empty or not a string"
    if "\x00" in name:
        return "contains a NUL byte"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "climbs out of the image folder (path traversal)"
    return None


def box_iou(a, b) -> float:
    """IoU of two [x1, y1, x2, y2] boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values)


def _check_box(loc: str, box, width: int, height: int, problems: list[str]) -> bool:
    x1, y1, x2, y2 = box
    if not (x2 - x1 > 0 and y2 - y1 > 0):
        problems.append(f"{loc}: box has no area ({x2 - x1:.2f} x {y2 - y1:.2f} px)")
        return False
    if (x1 < -TOLERANCE_PX or y1 < -TOLERANCE_PX or x2 > width + TOLERANCE_PX
            or y2 > height + TOLERANCE_PX):
        problems.append(f"{loc}: box [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}] lies outside the "
                        f"{width}x{height} image")
        return False
    return True


def _clip(box, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))


def _report_duplicates(image_loc: str, boxes: list[tuple[str, Box]], problems: list[str]) -> None:
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (loc_a, (ca, a)), (loc_b, (cb, b)) = boxes[i], boxes[j]
            if ca == cb and box_iou(a, b) >= DUPLICATE_IOU:
                problems.append(f"{loc_b}: duplicate annotation of {loc_a} on {image_loc} "
                                f"(same class, IoU {box_iou(a, b):.2f})")


# ----------------------------------------------------------------------------- Label Studio
def _ls_annotation(loc: str, task: dict, problems: list[str]) -> tuple[str, int | None, dict | None]:
    """('done'|'skipped'|'pending', index, annotation) for one task."""
    anns = task.get("annotations") or []
    if not isinstance(anns, list):
        problems.append(f"{loc}.annotations: must be a list")
        return "pending", None, None
    done = [(k, a) for k, a in enumerate(anns) if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        cancelled = any(isinstance(a, dict) and a.get("was_cancelled") for a in anns)
        return ("skipped" if cancelled else "pending"), None, None
    if len(done) > 1:
        truth = [(k, a) for k, a in done if a.get("ground_truth")]
        if len(truth) != 1:
            problems.append(f"{loc}: {len(done)} finished annotations and no single ground truth "
                            "among them; resolve them in Label Studio first")
            return "pending", None, None
        done = truth
    return "done", done[0][0], done[0][1]


def _ls_result(loc: str, r: Any, im, names: tuple[str, ...], problems: list[str]) -> Box | None:
    if not isinstance(r, dict) or r.get("type") != "rectanglelabels":
        kind = r.get("type") if isinstance(r, dict) else type(r).__name__
        problems.append(f"{loc}: unsupported result type {kind!r} (only rectanglelabels)")
        return None
    v = r.get("value")
    if not isinstance(v, dict) or not _finite(v.get("x"), v.get("y"), v.get("width"), v.get("height")):
        problems.append(f"{loc}: value needs finite numbers x, y, width, height")
        return None
    if _finite(v.get("rotation", 0)) and abs(v.get("rotation", 0)) > 1e-3:
        problems.append(f"{loc}: rotated box ({v['rotation']} deg) is not supported")
        return None
    ow, oh = r.get("original_width"), r.get("original_height")
    if ow is not None and oh is not None and (ow, oh) != (im.width, im.height):
        problems.append(f"{loc}: drawn on a {ow}x{oh} image but {im.file_name} is "
                        f"{im.width}x{im.height}")
        return None
    labels = v.get("rectanglelabels")
    if not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str)):
        problems.append(f"{loc}: needs exactly one class label, got {labels!r}")
        return None
    if labels[0] not in names:
        problems.append(f"{loc}: unknown class {labels[0]!r}; known: {', '.join(names)}")
        return None
    box = (v["x"] * im.width / 100.0, v["y"] * im.height / 100.0,
           (v["x"] + v["width"]) * im.width / 100.0, (v["y"] + v["height"]) * im.height / 100.0)
    if not _check_box(loc, box, im.width, im.height, problems):
        return None
    return names.index(labels[0]) + 1, _clip(box, im.width, im.height)


def parse_labelstudio(raw: Any, manifest: ExportManifest, *, source: str = "<labelstudio>"
                      ) -> ImportedBatch:
    """Label Studio's JSON export (a list of tasks with ``annotations``)."""
    problems: list[str] = []
    if not isinstance(raw, list):
        raise LabelImportError(source, ["top level: a Label Studio JSON export is a list of tasks"])
    by_id, names = manifest.image_by_id(), manifest.class_names
    seen: dict[int, str] = {}
    boxes: dict[int, list[Box]] = {}
    skipped, annotators = [], {}
    for i, task in enumerate(raw):
        loc = f"tasks[{i}]" + (f" (task {task.get('id')})" if isinstance(task, dict) and "id" in task else "")
        data = task.get("data") if isinstance(task, dict) else None
        image_id = data.get("synthloop_image_id") if isinstance(data, dict) else None
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            problems.append(f"{loc}.data.synthloop_image_id: missing or not an integer")
            continue
        im = by_id.get(image_id)
        if im is None:
            problems.append(f"{loc}.data.synthloop_image_id: unknown image id {image_id} (not in "
                            f"the exported batch of cycle {manifest.cycle})")
            continue
        name = data.get("file_name", im.file_name)
        why = unsafe_file_name(name)
        if why or name != im.file_name:
            problems.append(f"{loc}.data.file_name: {name!r} " + (why or f"is not {im.file_name!r}, "
                                                                   f"the file of image {image_id}"))
            continue
        if image_id in seen:
            problems.append(f"{loc}: duplicate task for image {image_id} (also {seen[image_id]})")
            continue
        seen[image_id] = loc
        state, k, ann = _ls_annotation(loc, task, problems)
        if state == "skipped":
            skipped.append(image_id)
        if state != "done":
            continue
        results = ann.get("result") or []
        if not isinstance(results, list):
            problems.append(f"{loc}.annotations[{k}].result: must be a list")
            continue
        found = []
        for j, r in enumerate(results):
            rloc = f"{loc}.annotations[{k}].result[{j}]"
            box = _ls_result(rloc, r, im, names, problems)
            if box is not None:
                found.append((rloc, box))
        _report_duplicates(f"image {image_id}", found, problems)
        boxes[image_id] = [b for _, b in found]
        annotators[image_id] = ann.get("completed_by")
    if problems:
        raise LabelImportError(source, problems)
    pending = tuple(im.id for im in manifest.images if im.id not in boxes and im.id not in skipped)
    return ImportedBatch("labelstudio", source, boxes, tuple(skipped), pending, annotators)


# ------------------------------------------------------------------------ CVAT / COCO 1.0
def _coco_categories(raw: dict, names: tuple[str, ...], problems: list[str]) -> dict[int, int]:
    """File category id -> our category id (1..C), matched by name."""
    mapping: dict[int, int] = {}
    for i, c in enumerate(raw["categories"]):
        loc = f"categories[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            problems.append(f"{loc}: needs an integer id and a name")
        elif c["id"] in mapping:
            problems.append(f"{loc}: duplicate category id {c['id']}")
        elif c["name"] not in names:
            problems.append(f"{loc}: unknown class {c['name']!r}; known: {', '.join(names)}")
        else:
            mapping[c["id"]] = names.index(c["name"]) + 1
    return mapping


def _coco_images(raw: dict, manifest: ExportManifest, problems: list[str]) -> dict[int, Any]:
    """File image id -> manifest image, matched by file name (CVAT renumbers image ids)."""
    by_name = {im.file_name: im for im in manifest.images}
    out: dict[int, Any] = {}
    seen_names: dict[str, str] = {}
    for i, im in enumerate(raw["images"]):
        loc = f"images[{i}]"
        if not isinstance(im, dict) or not isinstance(im.get("id"), int):
            problems.append(f"{loc}: needs an integer id")
            continue
        name = im.get("file_name")
        why = unsafe_file_name(name)
        if why:
            problems.append(f"{loc}.file_name: {name!r} {why}")
            continue
        ours = by_name.get(PurePosixPath(name.replace("\\", "/")).name)
        if ours is None:
            problems.append(f"{loc}.file_name: unknown image {name!r} (not in the exported batch "
                            f"of cycle {manifest.cycle})")
            continue
        if (im.get("width"), im.get("height")) != (ours.width, ours.height):
            problems.append(f"{loc}: size {im.get('width')}x{im.get('height')} but {ours.file_name} "
                            f"is {ours.width}x{ours.height}")
            continue
        if im["id"] in out:
            problems.append(f"{loc}: duplicate image id {im['id']}")
        elif ours.file_name in seen_names:
            problems.append(f"{loc}: duplicate image {ours.file_name!r} (also {seen_names[ours.file_name]})")
        else:
            out[im["id"]] = ours
            seen_names[ours.file_name] = loc
    return out


def parse_coco(raw: Any, manifest: ExportManifest, *, source: str = "<coco>") -> ImportedBatch:
    """A COCO 1.0 export (CVAT's "Export task dataset -> COCO 1.0"); boxes ``[x, y, w, h]`` px.

    Every image in the file is an answer (no boxes = no parts); exported images missing from
    the file are pending. CVAT has no "skip": leave an image out of the export to skip it.
    """
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list)
                                            for k in ("images", "annotations", "categories")):
        raise LabelImportError(source, ["top level: a COCO file is an object with lists "
                                        "'images', 'annotations' and 'categories'"])
    problems: list[str] = []
    cats = _coco_categories(raw, manifest.class_names, problems)
    images = _coco_images(raw, manifest, problems)
    found: dict[int, list[tuple[str, Box]]] = {im.id: [] for im in images.values()}
    seen_ids: set[int] = set()
    for i, a in enumerate(raw["annotations"]):
        loc = f"annotations[{i}]" + (f" (id {a.get('id')})" if isinstance(a, dict) else "")
        if not isinstance(a, dict) or not isinstance(a.get("id"), int):
            problems.append(f"{loc}: needs an integer id")
            continue
        if a["id"] in seen_ids:
            problems.append(f"{loc}: duplicate annotation id {a['id']}")
            continue
        seen_ids.add(a["id"])
        im = images.get(a.get("image_id"))
        if im is None:
            problems.append(f"{loc}: refers to image {a.get('image_id')!r}, which is not a valid "
                            "image of this file")
            continue
        if a.get("category_id") not in cats:
            problems.append(f"{loc}: unknown category id {a.get('category_id')!r}")
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and _finite(*bbox)):
            problems.append(f"{loc}: bbox must be four finite numbers [x, y, w, h]")
            continue
        box = (bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3])
        if _check_box(f"{loc} on {im.file_name}", box, im.width, im.height, problems):
            found[im.id].append((loc, (cats[a["category_id"]], _clip(box, im.width, im.height))))
    for image_id, items in found.items():
        _report_duplicates(f"image {image_id}", items, problems)
    if problems:
        raise LabelImportError(source, problems)
    boxes = {i: [b for _, b in items] for i, items in found.items()}
    pending = tuple(im.id for im in manifest.images if im.id not in boxes)
    return ImportedBatch("cvat", source, boxes, (), pending)


# ---------------------------------------------------------------------------------- loading
MAX_IMPORT_BYTES = 200 * 1024 * 1024


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        bad = [n for n in zf.namelist() if unsafe_file_name(n)]
        if bad:
            raise LabelImportError(str(path), [f"zip member {n!r} {unsafe_file_name(n)}" for n in bad])
        jsons = [n for n in zf.namelist() if n.endswith(".json")]
        if len(jsons) != 1:
            raise LabelImportError(str(path), [f"zip: expected one .json annotation file, found "
                                               f"{jsons or 'none'}"])
        info = zf.getinfo(jsons[0])
        if info.file_size > MAX_IMPORT_BYTES:
            raise LabelImportError(str(path), [f"zip member {jsons[0]}: {info.file_size} bytes is too big"])
        return json.load(io.TextIOWrapper(zf.open(info), encoding="utf-8"))


def load_import(path: Path | str, manifest: ExportManifest, *, tool: str = "auto") -> ImportedBatch:
    """Read and validate an answer file: Label Studio JSON (a list), COCO json, or a CVAT zip."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size > MAX_IMPORT_BYTES:
        raise LabelImportError(str(path), [f"file is {path.stat().st_size} bytes; limit "
                                           f"{MAX_IMPORT_BYTES}"])
    try:
        raw = _read_zip(path) if zipfile.is_zipfile(path) else json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelImportError(str(path), [f"not valid JSON ({exc})"]) from None
    if tool == "auto":
        tool = "labelstudio" if isinstance(raw, list) else "cvat"
    if tool == "labelstudio":
        return parse_labelstudio(raw, manifest, source=str(path))
    if tool in ("cvat", "coco"):
        return parse_coco(raw, manifest, source=str(path))
    raise ValueError(f"unknown import format {tool!r}; known: labelstudio, cvat (COCO 1.0)")


# ------------------------------------------------------------------- pre-annotation savings
def preannotation_savings(preannotations: tuple[Preannotation, ...] | list[Preannotation],
                          batch: ImportedBatch, *, iou: float = 0.9) -> dict[str, float | None]:
    """How many final boxes are pre-annotations the annotator accepted unchanged.

    A final box counts as accepted when a pre-annotation of the same class on the same image
    overlaps it with IoU >= ``iou`` (one-to-one, greedy by IoU). Only returned images count.
    ``accepted_share`` = accepted / final boxes (None when no box came back).
    """
    offered = accepted = final = 0
    for image_id, boxes in batch.boxes.items():
        pre = [p for p in preannotations if p.image_id == image_id]
        offered += len(pre)
        final += len(boxes)
        pairs = sorted(((box_iou(p.bbox, b), i, j) for i, p in enumerate(pre)
                        for j, (cat, b) in enumerate(boxes) if cat == p.category_id), reverse=True)
        used_p, used_b = set(), set()
        for value, i, j in pairs:
            if value < iou:
                break
            if i not in used_p and j not in used_b:
                used_p.add(i), used_b.add(j)
        accepted += len(used_b)
    return {"boxes_final": final, "boxes_accepted": accepted, "boxes_drawn_or_moved": final - accepted,
            "preannotations_offered": offered, "preannotations_rejected": offered - accepted,
            "accepted_share": accepted / final if final else None}
