"""What a reviewer looks at for a gate decision: PR curves of both models on the same validation
set and the bootstrap distribution of the gain, as one PNG (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from synthloop.artifacts import ImprovementInterval
from synthloop.data.coco import CocoDataset
from synthloop.gating.predictions import HasDetections, as_detections


def pr_curve(ds: CocoDataset, predictions: Sequence[HasDetections], *, iou: float = 0.5
             ) -> tuple[np.ndarray, np.ndarray]:
    """(recall (101,), precision (101,)) at IoU ``iou``, all areas, 100 detections, averaged
    over categories with ground truth (COCO's interpolated precision; -1 entries dropped)."""
    from faster_coco_eval import COCO, COCOeval_faster

    recall = np.linspace(0.0, 1.0, 101)
    rows = [{"image_id": int(p.image_id), "category_id": int(c), "score": float(s),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for p in as_detections(predictions) for b, c, s in zip(p.boxes, p.labels, p.scores)]
    if not rows:
        return recall, np.zeros_like(recall)
    quiet = lambda *args, **kwargs: None  # noqa: E731
    gt = COCO(ds.to_dict(), print_function=quiet)
    ev = COCOeval_faster(gt, gt.loadRes(rows), iouType="bbox", print_function=quiet)
    ev.evaluate()
    ev.accumulate()
    t = int(np.argmin(np.abs(ev.params.iouThrs - iou)))
    prec = ev.eval["precision"][t, :, :, 0, -1]  # (101 recall points, categories)
    prec = np.where(prec < 0, np.nan, prec)
    with np.errstate(all="ignore"):
        mean = np.nanmean(prec, axis=1) if np.isfinite(prec).any() else np.zeros(len(recall))
    return recall, np.nan_to_num(mean, nan=0.0)


def gate_figure(path: Path, ds: CocoDataset, candidate: Sequence[HasDetections],
                champion: Sequence[HasDetections] | None, *, labels: tuple[str, str],
                interval: ImprovementInterval | None = None,
                samples: np.ndarray | None = None, min_improvement: float = 0.0) -> Path:
    """PR curves (left) and the bootstrap histogram of the gain with its interval (right)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for preds, label in ((candidate, labels[0]), (champion, labels[1])):
        if preds is not None:
            r, p = pr_curve(ds, preds)
            axes[0].plot(r, p, label=label)
    axes[0].set(xlabel="recall", ylabel="precision", title="PR curve at IoU 0.5 (val set)",
                xlim=(0, 1), ylim=(0, 1.02))
    axes[0].legend(loc="lower left")
    if interval is not None and samples is not None and len(samples):
        diff = samples[:, 0] - samples[:, 1]
        axes[1].hist(diff, bins=30, color="#888")
        for x, style in ((interval.lower, "--"), (interval.upper, "--"),
                         (interval.improvement, "-")):
            axes[1].axvline(x, color="C0", linestyle=style)
        axes[1].axvline(min_improvement, color="C3", linestyle=":", label="min improvement")
        axes[1].set(xlabel=f"{interval.metric} gain (candidate - champion)", ylabel="resamples",
                    title=f"{interval.confidence:.0%} interval [{interval.lower:+.3f}, "
                          f"{interval.upper:+.3f}]")
        axes[1].legend(loc="upper left")
    else:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "no bootstrap (no champion to compare)", ha="center")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
