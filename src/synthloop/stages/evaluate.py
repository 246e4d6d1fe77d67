"""Evaluate a detector on any labelled photo folder (YOLO or COCO), without a pipeline workspace.

``load_labelled_folder`` reads the folder with the project's importers and refuses what cannot
be measured (empty folders, images without labels); ``match_classes`` puts the data's classes
onto the model's by name (``class_map`` renames them or drops them with None);
``evaluate_folder`` runs the model at its own input size (the checkpoint's ``min_size`` /
``max_size``), computes COCO AP, AP50, AP75 and per-class AP, and writes ``metrics.json``, a PR
plot and overlays to ``out``. Every refusal is an ``EvaluateError`` whose message is one line
saying what is wrong and what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from synthloop.data.coco import CocoDataset, CocoImage
from synthloop.data.importers import IMAGE_SUFFIXES, DatasetImportError, apply_class_map
from synthloop.metrics import ImageDetections
from synthloop.stages.model_source import ModelUnderTest

FORMATS = ("auto", "yolo", "coco")
LAYOUT_HINT = "a YOLO folder (images/ + labels/ + classes.txt or data.yaml) or a COCO folder " \
              "(annotations.json + images/)"


class EvaluateError(ValueError):
    """The data cannot be evaluated as given; one line saying what and what to do."""


@dataclass(frozen=True)
class LabelledSet:
    """A labelled photo set in its own class names; ``background`` lists the images without a
    label file that were counted as photos without objects."""

    ds: CocoDataset
    fmt: str
    path: Path
    background: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationReport:
    """What ``evaluate_folder`` measured and wrote."""

    metrics: dict[str, float]  # AP, AP50, AP75, AP_<class> (-1.0: no ground truth of the class)
    per_class: dict[str, dict[str, Any]]  # name -> AP, AP50, AP75 (None: no GT), gt_boxes, detections
    num_images: int
    num_boxes: int
    dropped: dict[str, int]  # data class -> boxes dropped by the class map
    metrics_path: Path
    pr_plot: Path
    overlays: tuple[Path, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------- data
def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _detect_format(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise EvaluateError(f"{path}: not a folder or a COCO json; pass {LAYOUT_HINT}")
    if (path / "annotations.json").is_file():
        return "coco"
    if (path / "images").is_dir():
        return "yolo"
    if not any(path.iterdir()):
        raise EvaluateError(f"{path}: empty folder, nothing to evaluate on; pass {LAYOUT_HINT}")
    raise EvaluateError(f"{path}: no images/ folder and no annotations.json; pass {LAYOUT_HINT}")


def _unlabelled_message(names: list[str], where: str) -> str:
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    return (f"{len(names)} image(s) without labels ({where}): {shown}; label them, or pass "
            "--unlabelled-as-background to count them as photos without objects")


def _load_yolo(path: Path, *, as_background: bool) -> LabelledSet:
    from synthloop.data.importers import load_yolo

    files = _image_files(path / "images")
    if not files:
        raise EvaluateError(f"{path / 'images'}: no images ({', '.join(IMAGE_SUFFIXES)}); "
                            f"pass {LAYOUT_HINT}")
    # An empty .txt is a photo without objects; a missing one is a photo nobody labelled.
    missing = [p.name for p in files if not (path / "labels" / f"{p.stem}.txt").is_file()]
    if missing and not as_background:
        raise EvaluateError(_unlabelled_message(missing, f"no labels/<name>.txt in {path}"))
    return LabelledSet(load_yolo(path), "yolo", path, tuple(missing))


def _load_coco(path: Path, *, as_background: bool) -> LabelledSet:
    from synthloop.data.importers import load_coco

    ann = path if path.is_file() else path / "annotations.json"
    root = ann.parent / "images" if (ann.parent / "images").is_dir() else ann.parent
    ds = load_coco(ann, root)
    if not ds.images:
        raise EvaluateError(f"{ann}: lists no images, nothing to evaluate on")
    absent = [im.file_name for im in ds.images if not ds.image_path(im).is_file()]
    if absent:
        raise EvaluateError(f"{ann}: {len(absent)} listed image(s) missing under {root}, e.g. "
                            f"{absent[0]}; fix the image folder or the json")
    listed = {str(Path(im.file_name)) for im in ds.images}
    extra = [p.name for p in _image_files(root) if p.name not in listed]
    if extra and not as_background:
        raise EvaluateError(_unlabelled_message(extra, f"in {root} but not in {ann.name}"))
    return LabelledSet(_with_background(ds, [root / n for n in extra]), "coco", path, tuple(extra))


def _with_background(ds: CocoDataset, files: list[Path]) -> CocoDataset:
    from PIL import Image

    from synthloop.data.images import upright_size

    images = list(ds.images)
    next_id = max((im.id for im in images), default=0) + 1
    for n, path in enumerate(files):
        with Image.open(path) as im:
            width, height = upright_size(im)
        images.append(CocoImage(next_id + n, path.name, width, height))
    return CocoDataset(images, list(ds.annotations), ds.categories, ds.image_root)


def load_labelled_folder(path: Path | str, *, fmt: str = "auto",
                         unlabelled_as_background: bool = False) -> LabelledSet:
    """Read a YOLO folder, a COCO folder or a COCO json (``fmt`` auto-detects)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise EvaluateError(f"unknown data format {fmt!r}; known: {', '.join(FORMATS)}")
    if not path.exists():
        raise EvaluateError(f"{path}: no such folder; pass {LAYOUT_HINT}")
    fmt = _detect_format(path) if fmt == "auto" else fmt
    loader = _load_yolo if fmt == "yolo" else _load_coco
    try:
        return loader(path, as_background=unlabelled_as_background)
    except DatasetImportError as exc:
        raise EvaluateError(str(exc)) from None


# ---------------------------------------------------------------------------- classes
def parse_class_map(items: Sequence[str]) -> dict[str, str | None]:
    """``["Bottle=null", "bolt=hex_bolt,nut=hex_nut"]`` or a YAML file of ``source: target``
    -> ``{source: target or None}`` (``null``, ``none``, ``~`` or nothing drop the class)."""
    mapping: dict[str, str | None] = {}
    for item in items:
        if "=" not in item and Path(item).is_file():
            raw = yaml.safe_load(Path(item).read_text()) or {}
            if not isinstance(raw, dict):
                raise EvaluateError(f"{item}: a class map file holds 'source: target' lines")
            mapping.update({str(k): None if v is None else str(v) for k, v in raw.items()})
            continue
        for pair in filter(None, (p.strip() for p in item.split(","))):
            source, eq, target = pair.partition("=")
            if not eq or not source.strip():
                raise EvaluateError(f"--class-map {pair!r}: write SOURCE=TARGET or SOURCE=null")
            target = target.strip()
            mapping[source.strip()] = None if target.lower() in ("", "null", "none", "~") else target
    return mapping


def match_classes(ds: CocoDataset, model_classes: Sequence[str], class_map: dict[str, str | None],
                  *, source: str) -> tuple[CocoDataset, dict[str, int]]:
    """``ds`` relabelled into the model's class ids (1..C) and the boxes dropped per class."""
    model_classes = list(model_classes)
    unknown = [n for n in ds.class_names if n not in class_map and n not in model_classes]
    if unknown:
        first = unknown[0]
        raise EvaluateError(f"data class(es) {', '.join(map(repr, unknown))} not among the model's "
                            f"classes {model_classes}: map with --class-map {first}=<model class> "
                            f"or drop with --class-map {first}=null")
    bad_targets = sorted({t for t in class_map.values() if t is not None and t not in model_classes})
    if bad_targets:
        raise EvaluateError(f"--class-map target(s) {bad_targets} not among the model's classes "
                            f"{model_classes}")
    names = {c["id"]: c["name"] for c in ds.categories}
    dropped: dict[str, int] = {}
    for a in ds.annotations:
        if class_map.get(names[a.category_id], "") is None:
            dropped[names[a.category_id]] = dropped.get(names[a.category_id], 0) + 1
    try:
        mapped = apply_class_map(ds, model_classes, class_map, source=source)
    except DatasetImportError as exc:  # a map source the data does not have
        raise EvaluateError(str(exc)) from None
    if not any(not a.iscrowd for a in mapped.annotations):
        raise EvaluateError(f"{source}: no ground-truth boxes of the model's classes "
                            f"{model_classes} (data classes {ds.class_names}); nothing to measure")
    return mapped, dropped


# ------------------------------------------------------------------------- evaluation
def predict_dataset(model: Any, ds: CocoDataset, *, batch_size: int, progress: bool = True
                    ) -> list[ImageDetections]:
    """One ``ImageDetections`` per image of ``ds`` (model in eval mode, a tqdm bar over images)."""
    from tqdm.auto import tqdm

    from synthloop.detection.datasets import load_image
    from synthloop.detection.scoring import predict

    out: list[ImageDetections] = []
    with tqdm(total=len(ds.images), desc="evaluate", unit="img", disable=not progress) as bar:
        for start in range(0, len(ds.images), batch_size):
            chunk = ds.images[start:start + batch_size]
            results = predict(model, [load_image(ds.image_path(im)) for im in chunk])
            for im, res in zip(chunk, results):
                out.append(ImageDetections(im.id, res["boxes"].float().numpy().reshape(-1, 4),
                                           res["labels"].numpy().astype(np.int64),
                                           res["scores"].float().numpy()))
            bar.update(len(chunk))
    return out


def _per_class(ds: CocoDataset, preds: Sequence[ImageDetections], curves: Sequence[Any]
               ) -> dict[str, dict[str, Any]]:
    gt = np.bincount([a.category_id for a in ds.annotations if not a.iscrowd],
                     minlength=len(ds.categories) + 1)
    labels = np.concatenate([p.labels for p in preds]) if preds else np.zeros(0, np.int64)
    det = np.bincount(labels, minlength=len(ds.categories) + 1)
    def ap(value: float) -> float | None:
        return None if value < 0 else round(value, 6)

    return {curve.name: {"AP": ap(curve.ap), "AP50": ap(curve.ap50), "AP75": ap(curve.ap75),
                         "gt_boxes": int(gt[cat_id]), "detections": int(det[cat_id])}
            for cat_id, curve in enumerate(curves, 1)}


def _overlay_ids(ds: CocoDataset, count: int) -> list[int]:
    """``count`` images with ground truth, spread evenly over the set (deterministic)."""
    with_gt = sorted({a.image_id for a in ds.annotations})
    if count <= 0 or not with_gt:
        return []
    picks = np.linspace(0, len(with_gt) - 1, min(count, len(with_gt))).round().astype(int)
    return [with_gt[i] for i in dict.fromkeys(picks.tolist())]


def _write_overlays(ds: CocoDataset, preds: Sequence[ImageDetections], names: Sequence[str],
                    out: Path, *, count: int, min_score: float) -> tuple[Path, ...]:
    from synthloop.detection.eval_figures import draw_overlay

    by_id = {p.image_id: p for p in preds}
    images = {im.id: im for im in ds.images}
    paths = []
    for image_id in _overlay_ids(ds, count):
        im = images[image_id]
        boxes, labels = ds.boxes_xyxy(image_id)
        target = out / "overlays" / f"{Path(im.file_name).stem}.jpg"
        paths.append(draw_overlay(ds.image_path(im), target, gt_boxes=boxes, gt_labels=labels,
                                  det=by_id[image_id], class_names=names, min_score=min_score))
    return tuple(paths)


def evaluate_folder(*, model: ModelUnderTest, data: LabelledSet, out: Path,
                    class_map: dict[str, str | None], batch_size: int = 2, overlays: int = 4,
                    overlay_min_score: float = 0.3, progress: bool = True) -> EvaluationReport:
    """Run ``model`` on ``data`` and write ``metrics.json``, ``pr_curves.png`` and
    ``overlays/*.jpg`` to ``out``."""
    from synthloop.detection.eval_figures import plot_pr_curves, pr_curves
    from synthloop.detection.evaluation import evaluate_predictions
    from synthloop.io_utils import atomic_write_text

    if batch_size < 1:
        raise EvaluateError(f"--batch-size must be >= 1, got {batch_size}")
    ds, dropped = match_classes(data.ds, model.class_names, class_map, source=str(data.path))
    preds = predict_dataset(model.model, ds, batch_size=batch_size, progress=progress)
    metrics = evaluate_predictions(ds, preds)
    curves = pr_curves(ds, preds)
    out.mkdir(parents=True, exist_ok=True)
    pr_plot = plot_pr_curves(curves, out / "pr_curves.png",
                             title=f"{model.label} on {data.path.name} ({len(ds.images)} images)")
    drawn = _write_overlays(ds, preds, model.class_names, out, count=overlays,
                            min_score=overlay_min_score)
    report = EvaluationReport(metrics=metrics, per_class=_per_class(ds, preds, curves),
                              num_images=len(ds.images), num_boxes=len(ds.annotations),
                              dropped=dropped, metrics_path=out / "metrics.json", pr_plot=pr_plot,
                              overlays=drawn)
    record = {"model": {"label": model.label, "class_names": list(model.class_names),
                        **model.details},
              "data": {"path": str(data.path.resolve()), "format": data.fmt,
                       "images": report.num_images, "boxes": report.num_boxes,
                       "class_map": class_map, "dropped_boxes": dropped,
                       "unlabelled_as_background": list(data.background)},
              "metrics": metrics, "per_class": report.per_class,
              "files": {"pr_curves": pr_plot.name,
                        "overlays": [str(p.relative_to(out)) for p in drawn]}}
    atomic_write_text(report.metrics_path, json.dumps(record, indent=2, default=str))
    return report


def format_table(report: EvaluationReport) -> str:
    """The per-class table with an ``all`` row (``-``: no ground truth of the class)."""
    def cell(v: float | None) -> str:
        return "     -" if v is None else f"{v:6.3f}"

    width = max([len("class"), *(len(n) for n in report.per_class)])
    lines = [f"{'class':<{width}}  GT boxes  detections      AP    AP50    AP75"]
    for name, row in report.per_class.items():
        lines.append(f"{name:<{width}}  {row['gt_boxes']:8d}  {row['detections']:10d}  "
                     f"{cell(row['AP'])}  {cell(row['AP50'])}  {cell(row['AP75'])}")
    total_det = sum(r["detections"] for r in report.per_class.values())
    m = report.metrics
    lines.append(f"{'all':<{width}}  {report.num_boxes:8d}  {total_det:10d}  "
                 f"{cell(m['AP'])}  {cell(m['AP50'])}  {cell(m['AP75'])}")
    return "\n".join(lines)
