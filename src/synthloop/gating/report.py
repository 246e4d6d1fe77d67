"""What a reviewer looks at for a gate decision: PR curves of both models on the same validation
set, the bootstrap distribution of the gain, and each class's AP drop against
``gate.max_class_drop``, as one PNG (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from synthloop.artifacts import ClassDrop, ImprovementInterval
from synthloop.data.coco import CocoDataset
from synthloop.metrics import Detections, coco_eval, coco_rows


def pr_curve(ds: CocoDataset, predictions: Sequence[Detections], *, iou: float = 0.5
             ) -> tuple[np.ndarray, np.ndarray]:
    """(recall (101,), precision (101,)) at IoU ``iou``, all areas, 100 detections, averaged
    over categories with ground truth (COCO's interpolated precision; -1 entries dropped)."""
    recall = np.linspace(0.0, 1.0, 101)
    rows = coco_rows(predictions)
    if not rows:
        return recall, np.zeros_like(recall)
    ev = coco_eval(ds, rows)
    t = int(np.argmin(np.abs(ev.params.iouThrs - iou)))
    prec = ev.eval["precision"][t, :, :, 0, -1]  # (101 recall points, categories)
    prec = np.where(prec < 0, np.nan, prec)
    with np.errstate(all="ignore"):
        mean = np.nanmean(prec, axis=1) if np.isfinite(prec).any() else np.zeros(len(recall))
    return recall, np.nan_to_num(mean, nan=0.0)


def gate_figure(path: Path, ds: CocoDataset | None, candidate: Sequence[Detections] | None,
                champion: Sequence[Detections] | None, *, labels: tuple[str, str],
                interval: ImprovementInterval | None = None,
                samples: np.ndarray | None = None, min_improvement: float = 0.0,
                class_drops: Sequence[ClassDrop] = (), max_class_drop: float | None = None,
                rule: str = "") -> Path:
    """PR curves (left), the bootstrap histogram of the gain with its interval (middle), and
    each class's AP drop (champion - candidate) with its interval against
    ``max_class_drop`` (right). ``ds``/``candidate`` None: no PR curve (no predictions)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    _pr_panel(axes[0], ds, candidate, champion, labels)
    if interval is not None and samples is not None and len(samples):
        _histogram_panel(axes[1], interval, samples, min_improvement)
    else:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, f"no bootstrap\n(rule: {rule or 'point'})", ha="center")
    class_drop_panel(axes[2], class_drops, max_class_drop)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _pr_panel(ax, ds, candidate, champion, labels: tuple[str, str]) -> None:
    if ds is None or candidate is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "no PR curve (no cached predictions)", ha="center")
        return
    for preds, label in ((candidate, labels[0]), (champion, labels[1])):
        if preds is not None:
            r, p = pr_curve(ds, preds)
            ax.plot(r, p, label=label)
    ax.set(xlabel="recall", ylabel="precision", title="PR curve at IoU 0.5 (val set)",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")


def _histogram_panel(ax, interval: ImprovementInterval, samples: np.ndarray,
                     min_improvement: float) -> None:
    ax.hist(samples[:, 0] - samples[:, 1], bins=30, color="#888")
    for x, style in ((interval.lower, "--"), (interval.upper, "--"), (interval.improvement, "-")):
        ax.axvline(x, color="C0", linestyle=style)
    ax.axvline(min_improvement, color="C3", linestyle=":", label="min improvement")
    ax.set(xlabel=f"{interval.metric} gain (candidate - champion)", ylabel="resamples",
           title=f"{interval.confidence:.0%} interval [{interval.lower:+.3f}, "
                 f"{interval.upper:+.3f}]")
    ax.legend(loc="upper left")


def class_drop_panel(ax, drops: Sequence[ClassDrop], max_class_drop: float | None) -> None:
    """Horizontal bars: each class's AP drop; whiskers: its bootstrap interval where known;
    red: above ``max_class_drop`` (the class blocks promotion)."""
    if not drops:
        ax.axis("off")
        ax.text(0.5, 0.5, "no per-class comparison", ha="center")
        return
    y = np.arange(len(drops))
    ax.barh(y, [d.drop for d in drops], color=["C3" if d.regressed else "C2" for d in drops])
    for k, d in enumerate(drops):
        if d.lower is not None and d.upper is not None:
            ax.plot([d.lower, d.upper], [k, k], color="k", linewidth=1.5)
    title = "per-class non-regression"
    if max_class_drop is not None:
        ax.axvline(max_class_drop, color="C3", linestyle=":", label="max class drop")
        ax.legend(loc="lower right")
        title += f" (max drop {max_class_drop:g})"
    ax.axvline(0.0, color="#444", linewidth=0.8)
    ax.set_yticks(y, [d.name for d in drops])
    ax.set(xlabel="AP drop (champion - candidate)", title=title)
