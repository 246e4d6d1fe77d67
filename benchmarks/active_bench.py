"""Active-learning benchmarks (issue "Detection and deep active learning ..."):

1. Scoring throughput: the one-pass scores + features scan (``predict_with_probs_and_features``:
   boxes, per-detection class probabilities, pooled P2 feature) against plain ``model(images)``
   inference, same model, same images, same batch size, interleaved in one process (plain,
   scoring, plain, scoring, ...) so machine load hits both alike. Target ratio >= 0.9.
2. DBAL selection time on a 10,000-image pool of 256-d features, k = 25 and 200 (target < 2 s),
   with margin, entropy and core-set beside it.

    .venv/bin/python benchmarks/active_bench.py [--arch resnet50_fpn --size 640x360 --images 8]

Prints a table and writes benchmarks/results/active_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.active import get_strategy  # noqa: E402
from synthloop.config import DetectorConfig  # noqa: E402
from synthloop.detection import build_detector, predict_with_probs_and_features  # noqa: E402


def scoring_ratio(arch: str, width: int, height: int, n_images: int, batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    cfg = DetectorConfig(architecture=arch, min_size=height, max_size=width, box_score_thresh=0.0)
    model = build_detector(cfg=cfg, num_classes=2).eval()
    images = [torch.rand(3, height, width) for _ in range(n_images)]

    def plain() -> None:
        with torch.inference_mode():
            for i in range(0, n_images, batch):
                model(images[i:i + batch])

    def scoring() -> None:
        predict_with_probs_and_features(model, images, batch_size=batch, progress=False)

    plain(), scoring()  # warm-up: allocator, lazy init
    times = {"plain": [], "scoring": []}
    for _ in range(rounds):
        for name, fn in (("plain", plain), ("scoring", scoring)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    plain_ips = n_images / statistics.median(times["plain"])
    score_ips = n_images / statistics.median(times["scoring"])
    return {"architecture": arch, "input": f"{width}x{height}", "images": n_images, "batch": batch,
            "rounds": rounds, "plain_img_per_s": plain_ips, "scoring_img_per_s": score_ips,
            "ratio": score_ips / plain_ips, "raw_seconds": times}


def selection_times(n: int, dim: int, ks: list[int], repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    probs = [rng.dirichlet(np.ones(3), size=int(rng.integers(0, 8))) for _ in range(n)]
    ids = np.arange(n)
    rows = []
    for name in ("dbal", "margin", "entropy", "coreset"):
        strategy = get_strategy(name)
        strategy.select(ids[:500], probs[:500], feats[:500], k=5, rng_seed=0)  # warm-up (imports)
        for k in ks:
            ts = []
            for rep in range(repeats):
                t = time.perf_counter()
                sel = strategy.select(ids, probs, feats, k=k, rng_seed=rep)
                ts.append(time.perf_counter() - t)
                assert len(set(sel.image_ids)) == k
            rows.append({"strategy": name, "pool": n, "dim": dim, "k": k,
                         "median_s": statistics.median(ts), "max_s": max(ts)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet50_fpn")
    ap.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the input")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "active_bench.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))

    score = scoring_ratio(args.arch, width, height, args.images, args.batch, args.rounds)
    print(f"\nScoring throughput, {score['architecture']} at {score['input']}, batch {score['batch']}, "
          f"{score['images']} images x {score['rounds']} interleaved rounds (median):")
    print(f"  {'pass':<34}{'img/s':>8}")
    print(f"  {'plain model(images)':<34}{score['plain_img_per_s']:>8.3f}")
    print(f"  {'scores + probs + P2 features':<34}{score['scoring_img_per_s']:>8.3f}")
    print(f"  ratio scoring / plain: {score['ratio']:.3f} (target >= 0.9)")

    sel = selection_times(10_000, 256, [25, 200], repeats=3)
    print("\nSelection on a 10,000 x 256 pool (median of 3, seconds; target DBAL < 2 s):")
    print(f"  {'strategy':<10}{'k':>5}{'median':>9}{'max':>8}")
    for r in sel:
        print(f"  {r['strategy']:<10}{r['k']:>5}{r['median_s']:>9.3f}{r['max_s']:>8.3f}")

    result = {"scoring": score, "selection": sel, "machine": {
        "cpus": os.cpu_count(), "torch_threads": args.threads, "python": platform.python_version(),
        "torch": torch.__version__, "load_avg_1min": os.getloadavg()[0]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
