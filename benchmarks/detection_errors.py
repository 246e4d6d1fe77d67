"""Where a bolts model loses AP50 on the real validation photos: its detections sorted by kind.

For each checkpoint, run it on datasets/bolts_real/valid (15 photos, 1920x1080, bottles dropped)
and sort every detection with score >= --score into:

- ``tp``: IoU >= 0.5 with a ground-truth box of its class (two detections of one part both
  count: ``found`` counts parts);
- ``piece``: IoU 0.1-0.5 with a box of its class (a piece of a part, or a box around several);
- ``wrong_class``: IoU >= 0.5 with a box of the other class;
- ``background``: none of these, split into ``on_table`` (inside the rectangle around the photo's
  ground-truth boxes, widened by 5 % of the frame: the parts lie only on the table) and
  ``off_table`` (floor, boxes, bottles, people around the table);

and count the ground-truth boxes found (recall at IoU 0.5). Prints a table, writes JSON.

    .venv/bin/python benchmarks/detection_errors.py workspace/exp/models_v4/*.pt \\
        --out benchmarks/results/detection_errors_bolts.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.stages.evaluate import (  # noqa: E402
    load_labelled_folder,
    match_classes,
    predict_dataset,
)
from synthloop.stages.model_source import load_model_under_test  # noqa: E402

KINDS = ("tp", "piece", "wrong_class", "on_table", "off_table")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (len(a), len(b))."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def classify(ds, preds, score: float) -> dict:
    """Counts per class: detections by kind (see the module docstring) and recall at 0.5."""
    names = {c["id"]: c["name"] for c in ds.categories}
    out = {n: {**{k: 0 for k in KINDS}, "gt": 0, "found": 0} for n in names.values()}
    by_image: dict[int, list] = {}
    for a in ds.annotations:
        if not a.iscrowd:
            by_image.setdefault(a.image_id, []).append(a)
    sizes = {im.id: (im.width, im.height) for im in ds.images}
    for p in preds:
        gts = by_image.get(p.image_id, [])
        g = np.array([[a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]]
                      for a in gts], np.float64).reshape(-1, 4)
        gl = np.array([a.category_id for a in gts], np.int64)
        keep = p.scores >= score
        b, lab = p.boxes[keep].astype(np.float64), p.labels[keep]
        m = iou(b, g)
        w, h = sizes[p.image_id]
        if len(g):
            x0, y0 = g[:, 0].min() - 0.05 * w, g[:, 1].min() - 0.05 * h
            x1, y1 = g[:, 2].max() + 0.05 * w, g[:, 3].max() + 0.05 * h
        for i in range(len(b)):
            row = out[names[int(lab[i])]]
            same, other = m[i][gl == lab[i]], m[i][gl != lab[i]]
            if same.size and same.max() >= 0.5:
                row["tp"] += 1
            elif same.size and same.max() >= 0.1:
                row["piece"] += 1
            elif other.size and other.max() >= 0.5:
                row["wrong_class"] += 1
            else:
                cx, cy = (b[i, 0] + b[i, 2]) / 2, (b[i, 1] + b[i, 3]) / 2
                inside = len(g) and x0 <= cx <= x1 and y0 <= cy <= y1
                row["on_table" if inside else "off_table"] += 1
        for j in range(len(g)):
            row = out[names[int(gl[j])]]
            row["gt"] += 1
            row["found"] += int(bool(len(b)) and bool((m[:, j][lab == gl[j]] >= 0.5).any()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--score", type=float, default=0.5)
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "bolts.yaml",
                    help="pipeline whose class names the checkpoints use")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                    "detection_errors_bolts.json")
    args = ap.parse_args()

    from synthloop.config import load_config

    cfg = load_config(args.config)
    labelled = load_labelled_folder(ROOT / "datasets" / "bolts_real" / "valid")
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    for ckpt in args.checkpoints:
        model = load_model_under_test(str(ckpt), cfg=cfg)
        ds, _ = match_classes(labelled.ds, model.class_names, {"Bottle": None}, source="valid")
        preds = predict_dataset(model.model, ds, batch_size=2)
        results["runs"][ckpt.stem] = classify(ds, preds, args.score)
        results.update(score=args.score, val="datasets/bolts_real/valid (15 photos, 1920x1080)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    print(table(results))


def table(results: dict) -> str:
    lines = [f"detections with score >= {results['score']} on valid/:",
             "| model | class | tp | piece | wrong class | background on table | "
             "background off table | recall@0.5 |", "|---|---|---|---|---|---|---|---|"]
    for key, run in sorted(results["runs"].items()):
        for cls, r in run.items():
            lines.append(f"| {key} | {cls} | {r['tp']} | {r['piece']} | {r['wrong_class']} | "
                         f"{r['on_table']} | {r['off_table']} | {r['found']}/{r['gt']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
