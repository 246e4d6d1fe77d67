"""Which CPU training recipe learns the demo's part fastest from scratch?

Trains each variant for the same number of steps on the demo workspace's synthetic renders and
scores it on the proxy validation set (and a synthetic holdout). Prints a table, writes JSON.

    .venv/bin/python benchmarks/train_recipe_bench.py --workspace workspace/demo --steps 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from synthloop.config import DetectorConfig, TrainConfig
from synthloop.data.coco import CocoDataset
from synthloop.detection import build_detector, evaluate, train

VARIANTS = {
    "sgd-0.02": ({}, {"optimizer": "sgd", "lr": 0.02}),
    "sgd-0.02-clip-box128": ({"box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 1000},
                             {"optimizer": "sgd", "lr": 0.02, "grad_clip_norm": 10.0}),
    "adamw-1e-3-clip-box128": ({"box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 1000},
                               {"optimizer": "adamw", "lr": 1e-3, "grad_clip_norm": 10.0}),
    "adamw-3e-4-clip-box128": ({"box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 1000},
                               {"optimizer": "adamw", "lr": 3e-4, "grad_clip_norm": 10.0}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("workspace/demo"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/train_recipe_bench.json"))
    args = ap.parse_args()
    syn = CocoDataset.load(args.workspace / "data/synthetic/annotations.json")
    val = CocoDataset.load(args.workspace / "data/val/annotations.json")
    batch, epochs = 4, 3
    per_epoch = args.steps // epochs
    ids = [im.id for im in syn.images]
    train_ds, holdout = syn.subset(ids[:per_epoch * batch]), syn.subset(ids[-60:])
    rows = []
    for name in args.variants:
        det_over, train_over = VARIANTS[name]
        det = DetectorConfig(architecture="mobilenet_v3_fpn", min_size=240, max_size=320, **det_over)
        cfg = TrainConfig(batch_size=batch, epochs=epochs, warmup_steps=50, patience=10,
                          augment="flip", seed=0, **train_over)
        model = build_detector(cfg=det, num_classes=1)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = train(model, train_ds, cfg=cfg, val_ds=holdout, checkpoint_dir=Path(tmp),
                           progress=False)
        seconds = time.perf_counter() - t0
        m = evaluate(model, val, batch_size=8)
        rows.append({"variant": name, "steps": result.steps, "seconds": round(seconds, 1),
                     "s_per_step": round(seconds / max(result.steps, 1), 2),
                     "holdout_AP50_by_epoch": [round(h.get("AP50", 0.0), 3) for h in result.history],
                     "val_AP": round(m["AP"], 3), "val_AP50": round(m["AP50"], 3)})
        print(rows[-1], flush=True)
    print(f"\n{'variant':<26} {'steps':>5} {'s/step':>6} {'holdout AP50/epoch':<22} {'val AP':>6} {'AP50':>6}")
    for r in rows:
        print(f"{r['variant']:<26} {r['steps']:>5} {r['s_per_step']:>6} "
              f"{str(r['holdout_AP50_by_epoch']):<22} {r['val_AP']:>6} {r['val_AP50']:>6}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
