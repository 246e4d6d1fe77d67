"""Scale-out benchmark: render and pool-scoring throughput on 1 vs 2 Dask workers, and a
paper-scale projection (5000 renders, 1000-image pool) per worker count.

    .venv/bin/python benchmarks/scaleout_bench.py [--render-images 16] [--score-images 64]

Same code path as production: ``render_domain_mapped`` / ``score_pool`` with ``dask_map`` on a
local cluster of worker processes (one core each with 2 workers; 2 threads with 1 worker).
Scoring uses the demo's detector config (MobileNetV3-FPN, 320x240) and the demo pool if
workspace/demo exists (else noise images of the same size); model loading is timed apart
(``warm``: every worker has loaded the model once, as it has after the first chunk).
Prints a table and writes JSON (bench-out/scaleout.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.config import load_config  # noqa: E402
from synthloop.scaleout import dask_map, local_map, render_domain_mapped, score_jobs, score_pool  # noqa: E402

PAPER = {"renders": 5000, "pool": 1000}


def scoring_inputs(cfg, tmp: Path, n: int) -> tuple[Path, Path, Path, list[int]]:
    """(checkpoint, annotations, image root, ids): the demo pool if present, else noise."""
    import numpy as np
    import torch
    from PIL import Image

    from synthloop.data.coco import CocoDataset, CocoImage, categories_for
    from synthloop.detection import build_detector, save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_detector(cfg=cfg.detector, num_classes=len(cfg.class_names)),
                           tmp / "model.pt", cfg=cfg.detector, num_classes=len(cfg.class_names))
    for found in sorted((ROOT / "workspace" / "demo" / "checkpoints").glob("*/checkpoint.pt")):
        ckpt = found  # a trained model detects more boxes: closer to production cost
    pool = ROOT / "workspace" / "demo" / "data" / "pool" / "annotations.json"
    if pool.is_file():
        ds = CocoDataset.load(pool)
        ids = [im.id for im in ds.images][:n]
        return ckpt, pool, ds.image_root, ids
    root = tmp / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i in range(1, n + 1):
        Image.fromarray((rng.random((cfg.pool.height, cfg.pool.width, 3)) * 255).astype(np.uint8)
                        ).save(root / f"{i}.jpg")
        images.append(CocoImage(i, f"{i}.jpg", cfg.pool.width, cfg.pool.height))
    ann = tmp / "pool.json"
    CocoDataset(images, [], categories_for(cfg.class_names), root).save(ann)
    return ckpt, ann, root, list(range(1, n + 1))


def bench_scoring(cfg, n: int, chunk: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, ann, root, ids = scoring_inputs(cfg, Path(tmp), n)
        for label, workers in (("local (no Dask), 2 threads", 0), ("Dask 1 worker x 2 threads", 1),
                               ("Dask 2 workers x 1 thread", 2)):
            threads = 2 if workers <= 1 else 1
            jobs = score_jobs(ckpt, ann, root, ids, chunk_size=chunk, batch_size=cfg.active.batch_size,
                              num_threads=threads)
            warmup = score_jobs(ckpt, ann, root, ids[:max(workers, 1)], chunk_size=1, num_threads=threads)
            t0 = time.perf_counter()
            if workers == 0:
                score_pool(warmup, map_fn=local_map)
                t1 = time.perf_counter()
                score_pool(jobs, map_fn=local_map)
            else:
                with dask_map(n_workers=workers, threads_per_worker=1) as mapper:
                    start = time.perf_counter()
                    score_pool(warmup * 2, map_fn=mapper)  # two chunks per worker: all load the model
                    t1 = time.perf_counter()
                    score_pool(jobs, map_fn=mapper)
                t0 = start
            t2 = time.perf_counter()
            rows.append({"what": "score", "setup": label, "workers": workers, "images": len(ids),
                         "warmup_s": round(t1 - t0, 2), "seconds": round(t2 - t1, 2),
                         "images_per_s": round(len(ids) / (t2 - t1), 2)})
            print(rows[-1], flush=True)
    return rows


def bench_render(cfg, n: int, render_python: str | None) -> list[dict]:
    rows = []
    for workers in (1, 2):
        overrides = [f"synthetic.num_images={n}", f"render.workers={workers}"]
        if render_python:
            overrides.append(f"render.blender_python={render_python}")
        c = load_config(ROOT / "pipelines" / "demo.yaml", overrides=overrides)
        out = Path(tempfile.mkdtemp(prefix=f"render-{workers}w-"))
        try:
            with dask_map(n_workers=workers, threads_per_worker=1) as mapper:
                t0 = time.perf_counter()
                ds = render_domain_mapped(c.synthetic, c.parts, c.class_names, out,
                                          render_cfg=c.render, map_fn=mapper)
                dt = time.perf_counter() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append({"what": "render", "setup": f"Dask {workers} worker(s), Blender threads "
                     f"{max(1, (os.cpu_count() or 1) // workers)}", "workers": workers,
                     "images": len(ds.images), "seconds": round(dt, 2),
                     "images_per_s": round(len(ds.images) / dt, 3),
                     "size": f"{c.synthetic.width}x{c.synthetic.height}", "samples": c.synthetic.samples})
        print(rows[-1], flush=True)
    return rows


def median_rows(runs: list[dict]) -> list[dict]:
    """One row per (what, setup): the median run by throughput, with the range seen."""
    import statistics

    out = []
    for key in dict.fromkeys((r["what"], r["setup"]) for r in runs):
        same = sorted((r for r in runs if (r["what"], r["setup"]) == key), key=lambda r: r["images_per_s"])
        row = dict(same[len(same) // 2])
        row["images_per_s"] = round(statistics.median(r["images_per_s"] for r in same), 3)
        row["range"] = [same[0]["images_per_s"], same[-1]["images_per_s"]]
        row["runs"] = len(same)
        out.append(row)
    return out


def projection(rows: list[dict]) -> list[dict]:
    """Hours for the paper's sizes on w nodes like this one, from the best measured rate per
    node (embarrassingly parallel shards/chunks; assumes linear scaling across nodes)."""
    out = []
    for what, total in (("render", PAPER["renders"]), ("score", PAPER["pool"])):
        measured = [r for r in rows if r["what"] == what and r["workers"] >= 1]
        if not measured:
            continue
        node_rate = max(r["images_per_s"] for r in measured)
        for w in (1, 2, 4, 8, 16):
            out.append({"what": what, "images": total, "nodes": w,
                        "hours": round(total / (node_rate * w) / 3600, 3)})
        for r in measured:  # on this 2-core machine, per Dask worker count
            out.append({"what": what, "images": total, "this_machine_workers": r["workers"],
                        "hours": round(total / r["images_per_s"] / 3600, 3)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--render-images", type=int, default=16)
    parser.add_argument("--score-images", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setup (median reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "scaleout.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = load_config(ROOT / "pipelines" / "demo.yaml")
    load_before = os.getloadavg()
    runs = []
    for _ in range(args.repeat):  # setups interleaved, so background load hits them alike
        runs += bench_scoring(cfg, args.score_images, args.chunk)
        if not args.skip_render:
            from synthloop.synthesis.render import find_blender_python

            runs += bench_render(cfg, args.render_images, find_blender_python(cfg.render))
    rows = median_rows(runs)
    proj = projection(rows)
    ratios = {}
    for what in ("render", "score"):
        one = [r for r in rows if r["what"] == what and r["workers"] == 1]
        two = [r for r in rows if r["what"] == what and r["workers"] == 2]
        if one and two:
            ratios[what] = round(two[0]["images_per_s"] / one[0]["images_per_s"], 2)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "load_avg_before": load_before,
              "load_avg_after": os.getloadavg(), "rows": rows, "runs": runs,
              "ratio_2_vs_1_workers": ratios, "projection": proj}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("\n| what | setup | images | img/s (median) | range | runs |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['setup']} | {r['images']} | {r['images_per_s']} | "
              f"{r['range'][0]}-{r['range'][1]} | {r['runs']} |")
    print(f"\n2 vs 1 Dask workers: {ratios}")
    print("\n| what | images | nodes like this one | hours |\n|---|---|---|---|")
    for p in proj:
        if "nodes" in p:
            print(f"| {p['what']} | {p['images']} | {p['nodes']} | {p['hours']} |")
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
