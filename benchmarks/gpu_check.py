"""GPU check (issue 19): training, pool scoring and rendering speed on this machine's device,
next to the same work on its CPU; writes images/s to JSON.

    python benchmarks/gpu_check.py                         # a GPU session: paper.yaml, full size
    python benchmarks/gpu_check.py --device cpu --steps 3 --pool 4 --render 3 \\
        --out benchmarks/results/gpu_check_cpu.json        # the CPU figures at paper size
    python benchmarks/gpu_check.py --tiny --device cpu     # seconds on any CPU (the test)

Sections (each can fail alone: its error is recorded, the others still run):
* ``train``: pipelines/paper.yaml's detector (Faster R-CNN R50-FPN, 640x360 input, batch 4,
  the pretrain optimiser) for ``--steps`` steps after ``--warmup`` untimed ones, through the
  product's ``train_one_epoch`` with its device settings (mixed precision and DataLoader
  workers on CUDA). Weights start from scratch (no download; the speed is the same).
* ``score``: the trained model scores ``--pool`` images (one forward pass each: boxes, class
  probabilities and P2 features; ``predict_with_probs_and_features``), ``active.batch_size``.
* ``render``: ``--render`` images of paper.yaml's synthetic domain (640x360, 32 spp, OIDN) with
  ``render.device`` gpu (OptiX, else CUDA) through the product's shard renderer; the markers say
  which device rendered each image. Needs a Python with bpy (``.venv-render``,
  ``$SYNTHLOOP_BLENDER_PYTHON``).
Images for train/score are drawn here (random shapes on noise at 640x360 with their boxes), so
nothing but the repository is needed. With a CUDA device, ``--cpu-steps``/``--cpu-pool``/
``--cpu-render`` repeat each section briefly on the CPU for the side-by-side figures.
Times are wall clock (``torch.cuda.synchronize`` before reading them) and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.config import PipelineConfig, load_config  # noqa: E402
from synthloop.data.coco import CocoDataset, categories_for  # noqa: E402
from synthloop.io_utils import atomic_write_text  # noqa: E402

TINY = {"detector": {"architecture": "mobilenet_v3_fpn", "min_size": 64, "max_size": 96},
        "image": (96, 64), "render": {"width": 48, "height": 32, "samples": 1, "denoise": False}}


def draw_dataset(root: Path, n: int, size: tuple[int, int], classes: list[str], seed: int
                 ) -> CocoDataset:
    """``n`` noise images of ``size`` (w, h) with 1-3 filled shapes each, boxed (COCO)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    images, anns = [], []
    for i in range(1, n + 1):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            bw, bh = int(rng.integers(w // 10, w // 3)), int(rng.integers(h // 10, h // 3))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            draw.ellipse([x, y, x + bw, y + bh], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
            anns.append({"id": len(anns) + 1, "image_id": i, "iscrowd": 0, "area": float(bw * bh),
                         "category_id": int(rng.integers(1, len(classes) + 1)),
                         "bbox": [x, y, bw, bh]})
        img.save(root / f"{i:05d}.jpg", quality=90)
        images.append({"id": i, "file_name": f"{i:05d}.jpg", "width": w, "height": h})
    return CocoDataset.from_dict({"images": images, "annotations": anns,
                                  "categories": categories_for(classes)}, image_root=root)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn):
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def train_section(cfg: PipelineConfig, device: torch.device, ds: CocoDataset, *, steps: int,
                  warmup: int) -> tuple[dict, torch.nn.Module]:
    from torch.utils.data import DataLoader

    from synthloop.detection import build_detector, train_one_epoch
    from synthloop.detection.datasets import DetectionDataset, collate_detection
    from synthloop.detection.device import loader_options, training_precision
    from synthloop.detection.training import make_optimizer, seed_everything

    tcfg = cfg.pretrain.model_copy(update={"warmup_steps": 0})
    det = cfg.detector.model_copy(update={"weights": None, "backbone_weights": None})
    seed_everything(tcfg.seed)
    model = build_detector(cfg=det, num_classes=len(cfg.class_names), device=device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], tcfg)
    precision = training_precision(device, enabled=cfg.runtime.mixed_precision)
    data = DetectionDataset(ds, augment=tcfg.augment, seed=tcfg.seed)
    options = loader_options(device, workers=cfg.runtime.loader_workers)

    def loader(n_steps: int, offset: int) -> DataLoader:
        order = [(offset + i) % len(ds.images) for i in range(n_steps * tcfg.batch_size)]
        return DataLoader(data, batch_size=tcfg.batch_size, sampler=order,
                          collate_fn=collate_detection, **options)

    run = lambda n, off: train_one_epoch(model, optimizer, loader(n, off), cfg=tcfg, epoch=1,  # noqa: E731
                                         step=0, deadline=None, progress=False,
                                         precision=precision)
    if warmup:
        run(warmup, 0)
    (losses, _, _), wall, cpu = _timed(device, lambda: run(steps, warmup * tcfg.batch_size))
    images = steps * tcfg.batch_size
    return {"steps": steps, "warmup_steps": warmup, "batch_size": tcfg.batch_size,
            "input": [det.min_size, det.max_size], "architecture": det.architecture,
            "precision": str(precision.dtype or torch.float32).replace("torch.", ""),
            "loader_workers": options["num_workers"], "augment": tcfg.augment,
            "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "s_per_step": round(wall / steps, 4), "images_per_s": round(images / wall, 3),
            "mean_loss": round(float(losses["loss"]), 4)}, model


def score_section(cfg: PipelineConfig, device: torch.device, model: torch.nn.Module,
                  ds: CocoDataset) -> dict:
    from synthloop.detection import predict_with_probs_and_features

    batch = cfg.active.batch_size
    predict_with_probs_and_features(model, ds.subset([im.id for im in ds.images[:2]]),
                                    batch_size=batch, progress=False)  # warm-up
    scores, wall, cpu = _timed(device, lambda: predict_with_probs_and_features(
        model, ds, batch_size=batch, progress=False))
    return {"images": len(scores), "batch_size": batch, "seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3), "images_per_s": round(len(scores) / wall, 3),
            "detections": int(sum(len(s.scores) for s in scores))}


def render_section(cfg: PipelineConfig, mode: str, n: int, out: Path, tiny: bool) -> dict:
    from synthloop.synthesis.render import find_blender_python, render_domain

    python = find_blender_python(cfg.render)
    update = {"num_images": n, **(TINY["render"] if tiny else {})}
    domain = cfg.synthetic.model_copy(update=update)
    render_cfg = cfg.render.model_copy(update={"device": mode, "blender_python": python})
    _, wall, _ = _timed(torch.device("cpu"), lambda: render_domain(
        domain, cfg.parts, cfg.class_names, out, render_cfg=render_cfg, progress=False))
    markers = [json.loads(p.read_text()) for p in sorted((out / "raw").glob("*.json"))
               if not p.name.endswith(".anns.json")]
    rendered = [m for m in markers if not m.get("rejected")]
    per_image = sum(m["phase_seconds"].get("render", 0.0) for m in rendered)
    return {"requested": mode, "images": len(rendered), "scenes": len(markers),
            "size": [domain.width, domain.height], "samples": domain.samples,
            "denoise": domain.denoise, "seconds": round(wall, 3),
            "images_per_s": round(len(rendered) / wall, 4),
            "render_only_images_per_s": round(len(rendered) / per_image, 4) if per_image else None,
            "devices": dict(Counter(m.get("render_device", {}).get("label", "?") for m in rendered)),
            "fallbacks": sorted({m["render_device"]["note"] for m in rendered
                                 if m.get("render_device", {}).get("note")})}


def _guarded(results: dict, key: str, fn) -> object:
    try:
        results[key], extra = fn()
        return extra
    except Exception as exc:  # one section failing must not lose the others' figures
        results[key] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"}
        return None


def run(args: argparse.Namespace) -> dict:
    from synthloop.detection.device import resolve_device

    overrides = [f"runtime.device={args.device}"]
    if args.tiny:
        overrides += [f"detector.{k}={v}" for k, v in TINY["detector"].items()]
        overrides += ["detector.weights=null", "pretrain.batch_size=2", "active.batch_size=2"]
    cfg = load_config(args.config, overrides=overrides)
    device = resolve_device(cfg.runtime.device)
    size = TINY["image"] if args.tiny else (cfg.synthetic.width, cfg.synthetic.height)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    sections: dict[str, dict] = {"train": {}, "score": {}, "render": {}}
    plan = [(device, args.steps, args.pool, args.render)]
    if device.type != "cpu":
        plan.append((torch.device("cpu"), args.cpu_steps, args.cpu_pool, args.cpu_render))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_ds = draw_dataset(tmp / "train", args.train_images, size, cfg.class_names, 1)
        pool_ds = draw_dataset(tmp / "pool", max(args.pool, args.cpu_pool), size, cfg.class_names, 2)
        for where, steps, pool, render in plan:
            key = where.type
            if "train" in args.sections and steps:
                model = _guarded(sections["train"], key, lambda: train_section(
                    cfg, where, train_ds, steps=steps, warmup=args.warmup))
                if "score" in args.sections and pool and model is not None:
                    subset = pool_ds.subset([im.id for im in pool_ds.images[:pool]])
                    _guarded(sections["score"], key,
                             lambda: (score_section(cfg, where, model, subset), None))
            if "render" in args.sections and render:
                mode = "cpu" if where.type == "cpu" else "gpu"
                _guarded(sections["render"], key, lambda: (render_section(
                    cfg, mode, render, tmp / f"render-{mode}", args.tiny), None))
    return {"what": "issue 19 GPU check: images/s of training, scoring and rendering per device",
            "config": _shown(args.config), "tiny": args.tiny,
            "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "device": str(device),
                        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
            "sections": sections}


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def table(result: dict) -> str:
    rows = ["| section | device | images/s | details |", "|---|---|---|---|"]
    for name, per_device in result["sections"].items():
        for dev, rec in per_device.items():
            detail = rec.get("error") or ", ".join(
                f"{k} {v}" for k, v in rec.items() if k in ("steps", "images", "precision",
                                                          "devices", "s_per_step"))
            rows.append(f"| {name} | {dev} | {rec.get('images_per_s', '-')} | {detail} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "pipelines" / "paper.yaml")
    p.add_argument("--device", default="auto", help="runtime.device: auto | cpu | cuda | cuda:N")
    p.add_argument("--tiny", action="store_true", help="toy sizes: seconds on any CPU")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (300; tiny 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (10; tiny 1)")
    p.add_argument("--train-images", type=int, default=None, help="distinct images (64; tiny 4)")
    p.add_argument("--pool", type=int, default=None, help="images to score (500; tiny 4)")
    p.add_argument("--render", type=int, default=None, help="images to render (50; tiny 2)")
    p.add_argument("--cpu-steps", type=int, default=5)
    p.add_argument("--cpu-pool", type=int, default=16)
    p.add_argument("--cpu-render", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--sections", default="train,score,render")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    args = p.parse_args(argv)
    small = {"steps": 2, "warmup": 1, "train_images": 4, "pool": 4, "render": 2}
    full = {"steps": 300, "warmup": 10, "train_images": 64, "pool": 500, "render": 50}
    for key, value in (small if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = set(args.sections.split(","))
    result = run(args)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
