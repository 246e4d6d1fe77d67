"""Figures of an evaluation: per-class precision-recall curves and detections drawn over the
ground truth.

PR curves are COCO's own (faster-coco-eval): interpolated precision at the 101 recall points,
area "all", 100 detections an image, at IoU 0.50 and 0.75. Boxes everywhere are (N, 4)
[x1, y1, x2, y2] pixels of the original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthloop.data.coco import CocoDataset
from synthloop.metrics import Detections, coco_eval, coco_rows

GT_COLOUR = (40, 220, 60)  # green: ground truth
DET_COLOUR = (255, 40, 200)  # magenta: detections (with class and score)


@dataclass(frozen=True)
class ClassCurve:
    """One class's PR curves: ``recall`` (101,), ``precision50`` / ``precision75`` (101,) with
    NaN where a recall level is never reached; the APs are -1.0 when the class has no ground
    truth (as COCO reports)."""

    name: str
    recall: np.ndarray
    precision50: np.ndarray
    precision75: np.ndarray
    ap: float  # mean over IoU .50:.05:.95
    ap50: float
    ap75: float


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def pr_curves(ds: CocoDataset, predictions: Sequence[Detections]) -> list[ClassCurve]:
    """Per-category PR curves of ``predictions`` against ``ds`` (categories in id order)."""
    recall = np.linspace(0.0, 1.0, 101)
    rows = coco_rows(predictions)
    cats = sorted(ds.categories, key=lambda c: c["id"])
    with_gt = {a.category_id for a in ds.annotations if not a.iscrowd}
    if not rows:  # nothing detected: precision 0 where there is ground truth
        zeros = np.zeros_like(recall)
        empty = {c["id"]: 0.0 if c["id"] in with_gt else -1.0 for c in cats}
        return [ClassCurve(c["name"], recall, zeros, zeros, *(3 * [empty[c["id"]]])) for c in cats]
    result = coco_eval(ds, rows)
    # (IoU thresholds .50:.05:.95, recall points, categories, area ranges, max dets)
    precision = np.asarray(result.eval["precision"])[:, :, :, 0, -1]
    column = {int(cat_id): k for k, cat_id in enumerate(result.params.catIds)}
    curves = []
    for c in cats:
        k = column[int(c["id"])]
        p = precision[:, :, k]
        curves.append(ClassCurve(c["name"], recall, np.where(p[0] > -1, p[0], np.nan),
                                 np.where(p[5] > -1, p[5], np.nan), _mean_valid(p),
                                 _mean_valid(p[0]), _mean_valid(p[5])))
    return curves


def plot_pr_curves(curves: Sequence[ClassCurve], path: Path, *, title: str = "") -> Path:
    """One panel per class (IoU 0.50 solid, 0.75 dashed) as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = min(3, max(1, len(curves)))
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, curve in zip(axes.flat, curves):
        if curve.ap50 < 0:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", color="grey")
        else:
            ax.plot(curve.recall, curve.precision50, label=f"IoU 0.50 (AP50 {curve.ap50:.3f})")
            ax.plot(curve.recall, curve.precision75, "--", label="IoU 0.75")
            ax.legend(loc="lower left", fontsize=8)
        ap = f"AP {curve.ap:.3f}" if curve.ap >= 0 else "no AP"
        ax.set(title=f"{curve.name} ({ap})", xlabel="recall",
               ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable where Pillow has FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def draw_overlay(image_path: Path, out_path: Path, *, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                 det: Detections, class_names: Sequence[str], min_score: float = 0.3) -> Path:
    """The photo with ground truth in green and detections scoring >= ``min_score`` in magenta
    (``class score``); labels are 1..C into ``class_names``. JPEG or PNG by ``out_path``'s suffix."""
    from PIL import Image, ImageDraw

    from synthloop.data.images import to_rgb

    with Image.open(image_path) as im:
        canvas = to_rgb(im)
    draw = ImageDraw.Draw(canvas)
    side = max(canvas.size)
    width, font = max(1, round(side / 400)), _font(max(10, round(side / 70)))
    text = dict(font=font, stroke_width=1, stroke_fill=(0, 0, 0))

    def name(label: int) -> str:
        return class_names[label - 1] if 0 < label <= len(class_names) else str(label)

    for box, label in zip(np.asarray(gt_boxes).reshape(-1, 4), np.asarray(gt_labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=GT_COLOUR, width=width)
        draw.text((x1 + width, y2 - width), name(int(label)), fill=GT_COLOUR, anchor="ld", **text)
    boxes = np.asarray(det.boxes).reshape(-1, 4)
    for box, label, score in zip(boxes, np.asarray(det.labels), np.asarray(det.scores)):
        if score < min_score:
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=DET_COLOUR, width=width)
        draw.text((x1, max(0.0, y1 - width)), f"{name(int(label))} {score:.2f}", fill=DET_COLOUR,
                  anchor="ld" if y1 > side / 50 else "la", **text)
    legend = f"ground truth: green; detections (score >= {min_score:.2f}): magenta"
    if draw.textlength(legend, font=font) < canvas.size[0] - 8:  # too small a photo: no legend
        draw.text((4, 4), legend, fill=(255, 255, 255), font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix.lower() in (".jpg", ".jpeg"):
        canvas.save(out_path, quality=90)
    else:
        canvas.save(out_path)
    return out_path
