"""Renderer benchmark: throughput per quality preset and worker count, annotation checks, and
speed against the paper's way of rendering at equal image quality.

    python benchmarks/render_bench.py [--quick] [--out benchmarks/results/render_bench.json]

Scenes are pipelines/paper.yaml's synthetic domain (floating blade, distractors, studio HDRIs)
at 640x360. Rows:
* throughput: images/min (wall clock, Blender start-up included; and steady state per image),
  for the draft / default / paper-like presets on 1 and 2 worker processes; mean IoU between
  the annotated visible boxes and boxes recomputed from the RLE instance masks; share of images
  the visibility/truncation filter rejects; peak memory per worker.
* paper way vs ours, side by side on the same scenes, samples and resolution: the paper's
  generator builds a fresh Blender scene per image with Blender's default Cycles and denoiser
  settings (profile ``blender_default``); ours reuses one scene per worker with the ``default``
  quality preset (at the same samples, and at twice as many). Quality: PSNR and SSIM of each
  against a high-spp reference of the same scenes without denoiser, over the rendered
  foreground composited on grey.
Times: wall clock, and CPU seconds per image of the worker (all threads), which a shared
machine disturbs much less than wall time. Prints a table and writes JSON.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy.ndimage import gaussian_filter

from synthloop.config import RenderConfig, load_config
from synthloop.synthesis.composite import mask_box_xywh
from synthloop.synthesis.render import find_blender_python, plan_shards, run_shards
from synthloop.synthesis.shards import merge_shards

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {  # name: (quality preset, samples, OIDN denoiser)
    "draft": ("draft", 4, False),
    "default": ("default", 16, True),
    "paper-like": ("paper", 64, False),
}


def _domain(cfg, **update):
    return cfg.synthetic.model_copy(update={"width": 640, "height": 360, "seed": 7, **update})


def _run(cfg, domain, out: Path, workers: int, *, profile: str = "synthloop"):
    """Render ``domain`` into a fresh ``out``; returns (results, dataset, wall seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    rcfg = RenderConfig(blender_python=find_blender_python(cfg.render), workers=workers,
                        shard_size=1000)
    t0 = time.perf_counter()
    jobs = plan_shards(domain, cfg.parts, out, render_cfg=rcfg, profile=profile)
    results = run_shards(jobs, workers)
    wall = time.perf_counter() - t0
    ds = merge_shards(results, class_names=cfg.class_names, out_dir=out)
    return results, ds, wall


def _markers(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "raw").glob("[0-9]*[0-9].json"))]


def _box_iou(ds) -> float:
    ious = []
    for a in ds.annotations:
        mask = mask_utils.decode(a.segmentation).astype(bool)
        x, y, w, h = mask_box_xywh(mask)
        bx, by, bw, bh = a.bbox
        ix = max(0.0, min(x + w, bx + bw) - max(x, bx))
        iy = max(0.0, min(y + h, by + bh) - max(y, by))
        inter = ix * iy
        ious.append(inter / (w * h + bw * bh - inter))
    return float(np.mean(ious)) if ious else float("nan")


def throughput(cfg, tmp: Path, n: dict[str, int]) -> list[dict]:
    rows = []
    for name, (quality, samples, denoise) in PRESETS.items():
        for workers in (1, 2):
            domain = _domain(cfg, num_images=n[name], quality=quality, samples=samples,
                             denoise=denoise)
            results, ds, wall = _run(cfg, domain, tmp / f"{name}_{workers}", workers)
            images = [im for r in results for im in r.images]
            marks = _markers(tmp / f"{name}_{workers}")
            steady = [m["render_seconds"] for m in marks if not m.get("rejected")]
            cpu = [m["cpu_seconds"] for m in marks if not m.get("rejected")]
            rows.append({
                "preset": name, "quality": quality, "samples": samples, "denoise": denoise,
                "workers": workers, "images": len(images), "wall_s": round(wall, 1),
                "img_per_min": round(60 * len(images) / wall, 2),
                "steady_s_per_img_per_worker": (round(float(np.median(steady)), 2)
                                                if steady else None),
                "cpu_s_per_img": round(float(np.median(cpu)), 2) if cpu else None,
                "box_mask_iou": round(_box_iou(ds), 4), "boxes": len(ds.annotations),
                "rejected_share": round(sum(1 for im in images if im["rejected"]) / len(images), 3),
                "peak_rss_mb_per_worker": max(r.peak_rss_mb for r in results)})
            print(_fmt_throughput(rows[-1]), flush=True)
    return rows


def workbench(tmp: Path, n: int) -> dict:
    """pipelines/bolts.yaml's workbench scene (960x540, 15-45 fasteners dropped by rigid-body
    physics, floor clutter), 1 worker; its fastener meshes are generated (``cad:`` parts)."""
    cfg = load_config(ROOT / "pipelines" / "bolts.yaml")
    results, ds, wall = _run(cfg, cfg.synthetic.model_copy(update={"num_images": n}),
                             tmp / "workbench", 1)
    marks = _markers(tmp / "workbench")
    row = {"images": n, "width": 960, "height": 540, "samples": cfg.synthetic.samples,
           "wall_s": round(wall, 1), "img_per_min": round(60 * n / wall, 2),
           "s_per_img": round(float(np.median([m["render_seconds"] for m in marks])), 2),
           "cpu_s_per_img": round(float(np.median([m["cpu_seconds"] for m in marks])), 2),
           "boxes_per_img": round(len(ds.annotations) / max(len(ds.images), 1), 1),
           "box_mask_iou": round(_box_iou(ds), 4),
           "peak_rss_mb": max(r.peak_rss_mb for r in results)}
    print("workbench", row, flush=True)
    return row


def _load_rgba(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Straight-alpha PNG composited over grey; (H, W, 3) and alpha (H, W), floats 0..1."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGBA"), np.float64) / 255.0
    rgb = a[..., :3] * a[..., 3:] + 0.5 * (1 - a[..., 3:])
    return rgb, a[..., 3]


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two grey images in 0..1 (Gaussian window, sigma 1.5)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = gaussian_filter(x, 1.5), gaussian_filter(y, 1.5)
    sxx = gaussian_filter(x * x, 1.5) - mx * mx
    syy = gaussian_filter(y * y, 1.5) - my * my
    sxy = gaussian_filter(x * y, 1.5) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def quality_vs(ref_dir: Path, test_dir: Path) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM against the reference over the foreground's bounding crop."""
    psnrs, ssims = [], []
    for ref_png in sorted((ref_dir / "raw").glob("*.png")):
        ref, ref_a = _load_rgba(ref_png)
        test, test_a = _load_rgba(test_dir / "raw" / ref_png.name)
        fg = (ref_a > 0.004) | (test_a > 0.004)
        rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
        crop = np.s_[max(rows[0] - 4, 0):rows[-1] + 5, max(cols[0] - 4, 0):cols[-1] + 5]
        mse = float(((ref - test) ** 2)[fg].mean())
        psnrs.append(10 * np.log10(1.0 / max(mse, 1e-12)))
        grey = lambda im: im[crop] @ np.array([0.299, 0.587, 0.114])  # noqa: E731
        ssims.append(_ssim(grey(ref), grey(test)))
    return float(np.mean(psnrs)), float(np.mean(ssims))


def _timed(cfg, domain, out: Path, profile: str) -> dict:
    _, _, wall = _run(cfg, domain, out, 1, profile=profile)
    marks = _markers(out)
    return {"samples": domain.samples, "wall_s": round(wall, 1),
            "img_per_min": round(60 * len(marks) / wall, 2),
            "s_per_img": round(float(np.median([m["render_seconds"] for m in marks])), 2),
            "cpu_s_per_img": round(float(np.median([m["cpu_seconds"] for m in marks])), 2)}


def versus_paper(cfg, tmp: Path, n: int, samples: int, ref_samples: int) -> dict:
    """The paper's way and ours on the same ``n`` scenes and resolution, 1 worker each: both at
    ``samples`` spp + OIDN, and ours also at twice the samples; then a reference without
    denoiser at ``ref_samples`` and the quality of each against it."""
    base = dict(num_images=n, samples=samples, denoise=True, quality="default",
                drop_empty_images=False, max_truncation=1.0, min_visibility=0.0)
    runs = {"paper_way": ("blender_default", samples), "ours": ("synthloop", samples),
            f"ours_{2 * samples}spp": ("synthloop", 2 * samples)}
    out: dict = {"runs": {}}
    for label, (profile, spp) in runs.items():
        out["runs"][label] = _timed(cfg, _domain(cfg, **{**base, "samples": spp}), tmp / label,
                                    profile)
        print(label, out["runs"][label], flush=True)
    ref = _domain(cfg, **{**base, "samples": ref_samples, "denoise": False})
    _, _, wall = _run(cfg, ref, tmp / "reference", 1, profile="blender_default")
    out["reference"] = {"samples": ref_samples, "denoise": False, "wall_s": round(wall, 1)}
    paper = out["runs"]["paper_way"]
    for label, r in out["runs"].items():
        r["psnr_db"], r["ssim"] = (round(v, 4) for v in quality_vs(tmp / "reference", tmp / label))
        r["speedup_wall"] = round(r["img_per_min"] / paper["img_per_min"], 2)
        r["speedup_cpu"] = round(paper["cpu_s_per_img"] / r["cpu_s_per_img"], 2)
        r["quality_at_least_paper"] = bool(r["psnr_db"] >= paper["psnr_db"]
                                           and r["ssim"] >= paper["ssim"])
    out.update(images=n, width=640, height=360)
    return out


def _fmt_throughput(r: dict) -> str:
    return (f"| {r['preset']} | {r['samples']} | {'OIDN' if r['denoise'] else 'off'} | "
            f"{r['workers']} | {r['images']} | {r['img_per_min']:.1f} | "
            f"{r['steady_s_per_img_per_worker'] or 0:.2f} | {r['cpu_s_per_img'] or 0:.2f} | "
            f"{r['box_mask_iou']:.4f} | {r['rejected_share']:.2f} | "
            f"{r['peak_rss_mb_per_worker']:.0f} |")


def print_tables(res: dict) -> None:
    print("\n| preset | spp | denoiser | workers | images | img/min (wall) | s/img per worker "
          "| CPU s/img | box-mask IoU | rejected | peak MB/worker |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["throughput"]:
        print(_fmt_throughput(r))
    v = res["versus_paper"]
    w = res.get("workbench")
    if w:
        print(f"\nworkbench (bolts.yaml) {w['width']}x{w['height']}, {w['samples']} spp + OIDN, "
              f"1 worker: {w['img_per_min']:.1f} img/min, {w['s_per_img']:.2f} s/img, "
              f"{w['cpu_s_per_img']:.2f} CPU s/img, {w['boxes_per_img']} boxes/img, "
              f"IoU {w['box_mask_iou']:.4f}, {w['peak_rss_mb']:.0f} MB")
    print(f"\nsame {v['images']} scenes at {v['width']}x{v['height']}, OIDN, 1 worker; "
          f"reference {v['reference']['samples']} spp without denoiser")
    print("| renderer | spp | img/min (wall) | s/img | CPU s/img | PSNR dB | SSIM | "
          "speed-up wall | speed-up CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, x in v["runs"].items():
        print(f"| {label} | {x['samples']} | {x['img_per_min']:.1f} | {x['s_per_img']:.2f} | "
              f"{x['cpu_s_per_img']:.2f} | {x['psnr_db']:.2f} | {x['ssim']:.4f} | "
              f"{x['speedup_wall']:.2f}x | {x['speedup_cpu']:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer images (about 3 minutes)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/render_bench.json")
    ap.add_argument("--ref-samples", type=int, default=None)
    args = ap.parse_args()
    cfg = load_config(ROOT / "pipelines" / "paper.yaml")
    n = ({"draft": 6, "default": 4, "paper-like": 2} if args.quick
         else {"draft": 24, "default": 12, "paper-like": 4})
    ref_samples = args.ref_samples or (256 if args.quick else 1024)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="render_bench_") as tmp:
        print("| preset | spp | denoiser | workers | images | img/min | s/img/worker | CPU s | "
              "IoU | rejected | MB |", flush=True)
        res = {"throughput": throughput(cfg, Path(tmp), n),
               "workbench": workbench(Path(tmp), 2 if args.quick else 4),
               "versus_paper": versus_paper(cfg, Path(tmp), 3 if args.quick else 12, 16,
                                            ref_samples)}
    res["meta"] = {"quick": args.quick, "minutes": round((time.perf_counter() - t0) / 60, 1),
                   "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                   "cpus": __import__("os").cpu_count(), "config": "pipelines/paper.yaml"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print_tables(res)
    print(f"\n{res['meta']['minutes']} min; JSON -> {args.out}")


if __name__ == "__main__":
    main()
