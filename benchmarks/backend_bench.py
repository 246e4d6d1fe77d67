"""torchvision vs mmdet backend, side by side on the same CPU, same input, same calling code.

Faster R-CNN R50-FPN from scratch (torchvision ``resnet50_fpn`` vs mmdet
``faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py``), 2 classes, 640x360 images (min_size 360,
max_size 640: no resize), batch 2, SGD lr 0.02. Per repetition, backends alternate (so machine
load hits both alike); the median over repetitions is reported. Times:
- build: ``build_detector`` (model construction + init), seconds;
- train step: forward + backward + SGD step of one batch of 2 (after one warm-up step);
- inference: ``predict_with_probs_and_features`` (boxes + probs + P2, one pass), per image.
Both wall and process-CPU seconds are recorded: on a shared machine CPU seconds move least.

    .venv/bin/python benchmarks/backend_bench.py [--reps 3] [--steps 3] [--images 6]
        [--mmcv-build-seconds N]   # the `make setup-mmdet` wheel build, recorded alongside
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from synthloop.config import DetectorConfig, TrainConfig
from synthloop.detection import build_detector, predict_with_probs_and_features
from synthloop.detection.training import make_optimizer

W, H = 640, 360
CONFIGS = {
    "torchvision": DetectorConfig(backend="torchvision", architecture="resnet50_fpn",
                                  min_size=H, max_size=W),
    "mmdet": DetectorConfig(backend="mmdet", mmdet_config="faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
                            min_size=H, max_size=W),
}


def batch(seed: int, n: int = 2) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, H, W, generator=g))
        x, y = torch.randint(0, W - 120, (2,), generator=g), torch.randint(0, H - 90, (2,), generator=g)
        boxes = torch.stack([x, y, x + 100, y + 80], dim=1).float()
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2])})
    return images, targets


def time_build(backend: str) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_detector(cfg=CONFIGS[backend], num_classes=2)
    return model, time.perf_counter() - t0


def time_train_steps(model: torch.nn.Module, steps: int) -> tuple[float, float]:
    """Mean (wall s, process CPU s) of one training step."""
    model.train()
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], TrainConfig(lr=0.02))
    wall, cpu = [], []
    for step in range(steps + 1):  # step 0 warms up (allocations, lazy init)
        images, targets = batch(step)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return statistics.mean(wall), statistics.mean(cpu)


def time_inference(model: torch.nn.Module, n_images: int) -> tuple[float, float]:
    """(wall s, process CPU s) per image of the one-pass scoring call."""
    images = [im for s in range(n_images // 2) for im in batch(100 + s)[0]]
    predict_with_probs_and_features(model, images[:2], batch_size=2, progress=False)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    predict_with_probs_and_features(model, images, batch_size=2, progress=False)
    return (time.perf_counter() - t0) / len(images), (time.process_time() - c0) / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mmcv-build-seconds", type=float, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/backend_bench.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keys = ("build_s", "train_step_s", "train_step_cpu_s", "infer_s_per_image", "infer_cpu_s_per_image")
    samples: dict[str, dict[str, list[float]]] = {b: {k: [] for k in keys} for b in CONFIGS}
    for rep in range(args.reps):
        for backend in (CONFIGS if rep % 2 == 0 else reversed(list(CONFIGS))):
            model, build_s = time_build(backend)
            step_s, step_cpu = time_train_steps(model, args.steps)
            infer_s, infer_cpu = time_inference(model, args.images)
            row = {"build_s": build_s, "train_step_s": step_s, "train_step_cpu_s": step_cpu,
                   "infer_s_per_image": infer_s, "infer_cpu_s_per_image": infer_cpu}
            for k, v in row.items():
                samples[backend][k].append(v)
            print(f"rep {rep} {backend}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    rows = []
    for backend, s in samples.items():
        rows.append({"backend": backend, "config": CONFIGS[backend].mmdet_config if backend == "mmdet"
                     else CONFIGS[backend].architecture,
                     **{k: round(statistics.median(v), 3) for k, v in s.items()},
                     **{f"{k}_range": [round(min(v), 3), round(max(v), 3)] for k, v in s.items()}})
    print(f"\n{'backend':<12} {'build s':>8} {'step s':>7} {'step CPU s':>10} "
          f"{'infer s/img':>11} {'infer CPU s/img':>15}   (step: batch 2; median of {args.reps})")
    for r in rows:
        print(f"{r['backend']:<12} {r['build_s']:>8.2f} {r['train_step_s']:>7.2f} "
              f"{r['train_step_cpu_s']:>10.2f} {r['infer_s_per_image']:>11.2f} "
              f"{r['infer_cpu_s_per_image']:>15.2f}")
    if args.mmcv_build_seconds is not None:
        print(f"\nmmcv 2.1.0 wheel build (make setup-mmdet, first run): {args.mmcv_build_seconds:.0f} s")
    load = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "threads": args.threads,
        "cpu_count": os.cpu_count(), "load_avg_at_end": load,
        "input": f"{W}x{H}", "batch": 2, "reps": args.reps, "steps_per_rep": args.steps,
        "images_per_rep": args.images, "torch": torch.__version__,
        "mmcv_build_seconds": args.mmcv_build_seconds, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
