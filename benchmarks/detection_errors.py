"""Where a bolts model loses AP50 on the real validation photos: its detections sorted by kind.

For each checkpoint, run it on datasets/bolts_real/valid (15 photos, 1920x1080, bottles dropped)
and sort every detection with score >= --score into:

- ``tp``: matched to a ground-truth box of its class at IoU >= 0.5 (COCO's greedy rule, highest
  score first: ``synthloop.steering.failures``);
- ``duplicate``: IoU >= 0.5 with a box of its class that a higher-scoring detection took;
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
from synthloop.steering.failures import iou_matrix, match_dataset  # noqa: E402

KINDS = ("tp", "duplicate", "piece", "wrong_class", "on_table", "off_table")


def classify(ds, preds, score: float) -> dict:
    """Counts per class: detections by kind (see the module docstring) and parts found, on the
    project's greedy COCO matching at IoU 0.5 (``steering.failures.match_dataset``)."""
    names = {c["id"]: c["name"] for c in ds.categories}
    out = {n: {**{k: 0 for k in KINDS}, "gt": 0, "found": 0} for n in names.values()}
    matches = match_dataset(ds, preds, iou=0.5, min_score=score)
    for im in ds.images:
        m = matches[im.id]
        g, gl = m.gt_boxes, m.gt_labels
        for label, missed in zip(gl, m.gt_missed):
            out[names[int(label)]]["gt"] += 1
            out[names[int(label)]]["found"] += int(not missed)
        if len(g):  # the table: the parts' rectangle widened by 5 % of the frame
            pad = np.array([-0.05 * im.width, -0.05 * im.height, 0.05 * im.width,
                            0.05 * im.height])
            table = np.r_[g[:, :2].min(0), g[:, 2:].max(0)] + pad
        ious = iou_matrix(m.det_boxes, g)
        for i, (box, label, false) in enumerate(zip(m.det_boxes, m.det_labels, m.det_false)):
            row = out[names[int(label)]]
            same, other = ious[i][gl == label], ious[i][gl != label]
            if not false:
                row["tp"] += 1
            elif same.size and same.max() >= 0.5:
                row["duplicate"] += 1
            elif same.size and same.max() >= 0.1:
                row["piece"] += 1
            elif other.size and other.max() >= 0.5:
                row["wrong_class"] += 1
            else:
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                inside = len(g) and table[0] <= cx <= table[2] and table[1] <= cy <= table[3]
                row["on_table" if inside else "off_table"] += 1
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
             "| model | class | tp | duplicate | piece | wrong class | background on table | "
             "background off table | recall@0.5 |", "|---|---|---|---|---|---|---|---|---|"]
    for key, run in sorted(results["runs"].items()):
        for cls, r in run.items():
            lines.append(f"| {key} | {cls} | {r['tp']} | {r['duplicate']} | {r['piece']} | "
                         f"{r['wrong_class']} | "
                         f"{r['on_table']} | {r['off_table']} | {r['found']}/{r['gt']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
