"""The CPU recipe for the real bolts benchmark, measured.

Part A (each choice, side by side in one process): for the stock MobileNetV3 FPN, the
stride-8 MobileNetV3 FPN (``mobilenet_v3_hr_fpn``) and ResNet-18 FPN, at the input scales
considered, the share of real validation boxes an anchor can reach (best anchor IoU >= 0.5 /
0.7 at the detector's input scale: a box no anchor reaches is hard to learn at all), the time
of a training step (batch 4, on 384 px crops at evaluation scale, or on whole images) and of
inference on a whole validation photo.

Part B (the recipe's learning curve): the pretrain stage of pipelines/bolts.yaml records real
validation AP against training CPU time (``pretrain.monitor_val``, never used to select or
stop); this reads that record and reports the CPU minutes until AP50 >= 0.3 on bolts_real/valid.

    .venv/bin/python benchmarks/bolts_recipe.py [--workspace workspace/bolts]

Needs the bolts workspace (``synthloop experiment -c pipelines/bolts.yaml --scale cpu`` makes
it). Prints tables and writes benchmarks/results/bolts_recipe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.config import DetectorConfig  # noqa: E402
from synthloop.data.coco import CocoDataset  # noqa: E402
from synthloop.detection import build_detector  # noqa: E402
from synthloop.detection.datasets import DetectionDataset, collate_detection, load_image  # noqa: E402

# (name, detector settings, training crop or None for whole images)
VARIANTS = [
    ("stock MobileNetV3 FPN, 2x, crops", dict(architecture="mobilenet_v3_fpn", min_size=1080, max_size=1920), 384),
    ("stride-8 MobileNetV3 FPN, 2x, crops (recipe)", dict(architecture="mobilenet_v3_hr_fpn", min_size=1080, max_size=1920), 384),
    ("stride-8 MobileNetV3 FPN, 2x, whole images", dict(architecture="mobilenet_v3_hr_fpn", min_size=1080, max_size=1920), None),
    ("stride-8 MobileNetV3 FPN, 1x, crops", dict(architecture="mobilenet_v3_hr_fpn", min_size=540, max_size=960), 384),
    ("ResNet-18 FPN (P2), 1x, anchors 8-128, crops", dict(architecture="resnet18_fpn", min_size=540, max_size=960, anchor_sizes=[8, 16, 32, 64, 128]), 384),
]
COMMON = dict(box_batch_size_per_image=128, rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=1000)


def anchor_reach(model, val: CocoDataset) -> tuple[float, float]:
    """Share of validation boxes whose best anchor (at the model's input scale) has IoU >= .5 / .7."""
    from torchvision.models.detection.image_list import ImageList
    from torchvision.ops import box_iou

    model.eval()
    hits5 = hits7 = total = 0
    for im in val.images[:5]:
        img = load_image(val.image_path(im))
        with torch.no_grad():
            images, _ = model.transform([img])
            feats = model.backbone(images.tensors)
            anchors = model.rpn.anchor_generator(ImageList(images.tensors, images.image_sizes),
                                                 list(feats.values()))[0]
        scale = images.image_sizes[0][0] / im.height
        boxes, _ = val.boxes_xyxy(im.id)
        if not len(boxes):
            continue
        best = box_iou(torch.from_numpy(boxes) * scale, anchors).max(dim=1).values
        hits5 += int((best >= 0.5).sum())
        hits7 += int((best >= 0.7).sum())
        total += len(boxes)
    return hits5 / max(total, 1), hits7 / max(total, 1)


def step_and_inference(model, synthetic: CocoDataset, val: CocoDataset, crop: int | None,
                       steps: int) -> tuple[float, float]:
    resize = (int(model.transform.min_size[0]), int(model.transform.max_size))
    data = DetectionDataset(synthetic, crop=crop, resize=resize if crop else None, seed=0)
    model.transform._skip_resize = crop is not None
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    times = []
    model.train()
    for i in range(steps + 1):
        images, targets = collate_detection([data[(4 * i + j) % len(data)] for j in range(4)])
        t = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators
            times.append(time.perf_counter() - t)
    model.eval()
    model.transform._skip_resize = False
    img = load_image(val.image_path(val.images[0]))
    with torch.inference_mode():
        model([img])
        t = time.perf_counter()
        model([img])
        infer = time.perf_counter() - t
    return statistics.median(times), infer


def learning_curve(workspace: Path, target: float) -> dict:
    path = workspace / "checkpoints" / "pretrain" / "monitor.json"
    if not path.is_file():
        return {"error": f"{path} is missing: run the bolts pretrain first"}
    rows = json.loads(path.read_text())
    reached = next((r for r in rows if r["val_AP50"] >= target), None)
    return {"rows": rows, "target_AP50": target,
            "cpu_minutes_to_target": None if reached is None else reached["train_cpu_seconds"] / 60,
            "wall_minutes_to_target": None if reached is None else reached["train_seconds"] / 60,
            "steps_to_target": None if reached is None else reached["step"],
            "best_val_AP50": max(r["val_AP50"] for r in rows),
            "best_val_AP": max(r["val_AP"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "bolts")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.3)
    ap.add_argument("--skip-variants", action="store_true", help="Part B only")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bolts_recipe.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    data = args.workspace / "data"
    synthetic = CocoDataset.load(data / "synthetic" / "annotations.json")
    val = CocoDataset.load(data / "val" / "annotations.json")

    variants = []
    if not args.skip_variants:
        print(f"\nPart A: each choice ({len(val.annotations)} real validation boxes; steps batch 4)")
        print(f"  {'variant':<48}{'reach@.5':>9}{'reach@.7':>9}{'step s':>8}{'infer s':>8}")
        for name, det, crop in VARIANTS:
            model = build_detector(cfg=DetectorConfig(**det, **COMMON), num_classes=2)
            r5, r7 = anchor_reach(model, val)
            step, infer = step_and_inference(model, synthetic, val, crop, args.steps)
            variants.append({"variant": name, "detector": det, "crop": crop, "anchor_reach_iou50": r5,
                             "anchor_reach_iou70": r7, "train_step_s": step, "inference_s": infer})
            print(f"  {name:<48}{r5:>9.2f}{r7:>9.2f}{step:>8.2f}{infer:>8.2f}", flush=True)

    curve = learning_curve(args.workspace, args.target)
    print("\nPart B: the recipe's learning curve (real validation, from scratch on renders)")
    if "error" in curve:
        print("  " + curve["error"])
    else:
        print(f"  {'epoch':>5}{'steps':>7}{'CPU min':>9}{'wall min':>9}{'val AP50':>9}{'val AP':>8}")
        for r in curve["rows"]:
            print(f"  {r['epoch']:>5}{int(r['step']):>7}{r['train_cpu_seconds'] / 60:>9.1f}"
                  f"{r['train_seconds'] / 60:>9.1f}{r['val_AP50']:>9.3f}{r['val_AP']:>8.3f}")
        got = curve["cpu_minutes_to_target"]
        print(f"  CPU minutes to AP50 >= {args.target}: "
              + (f"{got:.1f} ({curve['wall_minutes_to_target']:.1f} wall min, {int(curve['steps_to_target'])} steps)"
                 if got is not None else f"not reached (best {curve['best_val_AP50']:.3f})"))
    result = {"variants": variants, "recipe_curve": curve,
              "machine": {"cpus": os.cpu_count(), "torch_threads": 2,
                          "load_avg_1min": os.getloadavg()[0], "torch": torch.__version__}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"\nwrote {args.out}")



if __name__ == "__main__":
    main()
