"""Render one image domain to COCO: plan -> Blender worker shards -> composite -> annotations.

Layout of ``out_dir``: ``images/<stem>.jpg`` (final images), ``annotations.json`` (COCO,
boxes ``[x, y, w, h]`` pixels), ``meshes/`` (generated part meshes), ``raw/`` (worker outputs:
RGBA png, instance ids, done-markers; host records ``<stem>.anns.json``; ``jobs/`` and ``logs/``).
Everything is keyed by a hash of what produced it, so a rerun after a crash, or with a changed
config, renders and composites only what is missing or stale.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import synthloop
from synthloop.config import DomainConfig, PartSpec, RenderConfig
from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
from synthloop.io_utils import atomic_write_bytes, atomic_write_text
from synthloop.synthesis.blender.worker import is_done
from synthloop.synthesis.composite import composite, jpeg_bytes, part_instances
from synthloop.synthesis.meshes import prepare_part_meshes
from synthloop.synthesis.plan import plan_scenes

WORKER_MODULE = "synthloop.synthesis.blender.worker"


class RenderError(RuntimeError):
    """Rendering could not start or a worker failed; the message says what to do."""


def _src_dir() -> Path:
    return Path(synthloop.__file__).resolve().parent.parent


def find_blender_python(render_cfg: RenderConfig | None = None) -> str:
    """The interpreter that runs workers: config, $SYNTHLOOP_BLENDER_PYTHON, <repo>/.venv-render,
    or this Python if it has bpy. Raises ``RenderError`` naming ``make setup`` if none works."""
    configured = render_cfg.blender_python if render_cfg else None
    for source, candidate in (("render.blender_python", configured),
                              ("SYNTHLOOP_BLENDER_PYTHON", os.environ.get("SYNTHLOOP_BLENDER_PYTHON"))):
        if candidate:
            if not Path(candidate).is_file():
                raise RenderError(f"{source}={candidate!r}: no such interpreter")
            return str(candidate)
    repo_venv = _src_dir().parent / ".venv-render" / "bin" / "python"
    if repo_venv.is_file():
        return str(repo_venv)
    if importlib.util.find_spec("bpy") is not None:
        return sys.executable
    raise RenderError("no Python with bpy found: run `make setup` (creates .venv-render with "
                      "bpy), or set render.blender_python / SYNTHLOOP_BLENDER_PYTHON")


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _render_key(plan: dict, settings: dict, meshes: list[dict]) -> str:
    """What the Blender image depends on (not the background or sensor: those are host-side)."""
    scene = {k: v for k, v in plan.items() if k not in ("background", "sensor")}
    return _digest({"plan": scene, "render": settings, "meshes": meshes})


def _check_inputs(domain: DomainConfig, parts: list[PartSpec], class_names: list[str]) -> None:
    if not parts:
        raise ValueError("render_domain: no parts given")
    if list(class_names) != [p.name for p in parts]:
        raise ValueError(f"render_domain: class_names {list(class_names)} must match the part "
                         f"names {[p.name for p in parts]} in order")
    if domain.parts_per_image.min < 1:
        raise ValueError("parts_per_image.min must be >= 1")
    if domain.distractors.min < 0:
        raise ValueError("distractors.min must be >= 0")
    for name, rng in (("camera_distance", domain.camera_distance),
                      ("focal_length_mm", domain.focal_length_mm)):
        if rng.min <= 0:
            raise ValueError(f"{name}.min must be > 0, got {rng.min}")


class _Shard:
    def __init__(self, items: list[dict], job_path: Path, log_path: Path):
        self.items, self.job_path, self.log_path = items, job_path, log_path
        self.proc: subprocess.Popen | None = None
        self.next = 0  # workers render in job order: only the next marker needs checking

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join([t for t in text if not t.startswith("Fra:")][-lines:])


def _run_shards(shards: list[_Shard], python: str, workers: int, raw: Path,
                on_done) -> None:
    """Run shards on at most ``workers`` worker processes; call ``on_done(item)`` per image."""
    env = {**os.environ, "PYTHONPATH": str(_src_dir()), "PYTHONNOUSERSITE": "1"}
    queue, running = list(shards), []
    try:
        while queue or running:
            while queue and len(running) < workers:
                shard = queue.pop(0)
                with shard.log_path.open("wb") as log:
                    shard.proc = subprocess.Popen([python, "-m", WORKER_MODULE, str(shard.job_path)],
                                                  stdout=log, stderr=subprocess.STDOUT, env=env)
                running.append(shard)
            time.sleep(0.2)
            for shard in list(running):
                rc = shard.proc.poll()
                while shard.next < len(shard.items) and is_done(str(raw), shard.items[shard.next]):
                    on_done(shard.items[shard.next])
                    shard.next += 1
                if rc is None:
                    continue
                running.remove(shard)
                if rc != 0 or shard.next < len(shard.items):
                    raise RenderError(f"render worker for {shard.job_path.name} failed (exit {rc}, "
                                      f"{shard.next}/{len(shard.items)} images); log "
                                      f"{shard.log_path}:\n{shard.log_tail()}")
    finally:
        for shard in running:
            if shard.proc and shard.proc.poll() is None:
                shard.proc.terminate()
                shard.proc.wait(timeout=30)


def _finish_image(plan: dict, raw: Path, images_dir: Path, domain: DomainConfig,
                  key: str) -> dict:
    """Composite, write the JPEG, and return (and cache) the image's annotations and meta."""
    stem = f"{plan['index']:06d}"
    cache = raw / f"{stem}.anns.json"
    final_key = _digest({"render": key, "background": plan["background"],
                         "sensor": plan["sensor"], "min_visibility": domain.min_visibility})
    jpg = images_dir / f"{stem}.jpg"
    if cache.is_file() and jpg.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == final_key:
            return cached
    record = json.loads((raw / f"{stem}.json").read_text())
    with Image.open(raw / f"{stem}.png") as rgba:
        img = composite(rgba, plan)
    ids = np.load(raw / f"{stem}.ids.npz")["ids"]
    instances = part_instances(ids, record, min_visibility=domain.min_visibility)
    atomic_write_bytes(jpg, jpeg_bytes(img, plan["sensor"]["jpeg_quality"]))
    meta = {"index": plan["index"], "seed": plan["seed"], "camera": record["camera"],
            "camera_plan": plan["camera"], "hdri": record["hdri"], "background": plan["background"],
            "sensor": plan["sensor"], "parts": [{"class_index": p["class_index"],
                                                  "matrix_world": p["matrix_world"]}
                                                 for p in record["parts"]],
            "num_distractors": len(plan["distractors"])}
    out = {"key": final_key, "file_name": jpg.name, "instances": instances, "meta": meta}
    atomic_write_text(cache, json.dumps(out))
    return out


def render_domain(domain: DomainConfig, parts: list[PartSpec], class_names: list[str],
                  out_dir: Path | str, *, render_cfg: RenderConfig | None = None,
                  progress: bool = True) -> CocoDataset:
    """Render ``domain.num_images`` images of ``parts`` into ``out_dir`` and return the COCO set.

    Validates meshes, materials, backgrounds and ranges before Blender starts; renders missing
    images in shards of ``render_cfg.shard_size`` on ``render_cfg.workers`` processes;
    composites each over its background with sensor effects; writes ``images/*.jpg`` and
    ``annotations.json`` (atomic). Only parts are annotated (category id = part index + 1),
    with tight visible boxes ``[x, y, w, h]`` pixels; parts below ``min_visibility`` are dropped.
    """
    render_cfg = render_cfg or RenderConfig()
    _check_inputs(domain, parts, class_names)
    out_dir = Path(out_dir)
    raw, images_dir = out_dir / "raw", out_dir / "images"
    meshes = prepare_part_meshes(parts, out_dir / "meshes")
    plans = plan_scenes(domain, parts)
    settings = {"width": domain.width, "height": domain.height, "samples": domain.samples,
                "denoise": domain.denoise}
    items = [{"stem": f"{p['index']:06d}", "key": _render_key(p, settings, meshes), "plan": p}
             for p in plans]
    todo = [it for it in items if not is_done(str(raw), it)]
    results: dict[int, dict] = {}

    def finish(item: dict) -> None:
        results[item["plan"]["index"]] = _finish_image(item["plan"], raw, images_dir, domain,
                                                       item["key"])

    if todo:
        python = find_blender_python(render_cfg)
        for sub in ("jobs", "logs"):
            (raw / sub).mkdir(parents=True, exist_ok=True)
        threads = render_cfg.threads or max(1, (os.cpu_count() or 1) // render_cfg.workers)
        shards = []
        for s in range(0, len(todo), render_cfg.shard_size):
            chunk = todo[s:s + render_cfg.shard_size]
            name = f"shard_{chunk[0]['stem']}"
            job = {"out_dir": str(raw.resolve()), **settings, "threads": threads,
                   "meshes": meshes, "images": chunk}
            job_path = atomic_write_text(raw / "jobs" / f"{name}.json", json.dumps(job))
            shards.append(_Shard(chunk, job_path, raw / "logs" / f"{name}.log"))
        from tqdm import tqdm

        bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="img",
                   desc=f"render {out_dir.name}", disable=not progress)
        start = time.time()

        def done(item: dict) -> None:
            finish(item)
            bar.update(1)
            rendered = bar.n - (len(items) - len(todo))
            bar.set_postfix_str(f"{60 * rendered / max(time.time() - start, 1e-6):.1f} img/min")

        try:
            _run_shards(shards, python, render_cfg.workers, raw, done)
        finally:
            bar.close()
    for item in items:
        if item["plan"]["index"] not in results:
            finish(item)
    return _write_coco(items, results, class_names, domain, out_dir)


def _write_coco(items, results, class_names, domain, out_dir: Path) -> CocoDataset:
    images, anns = [], []
    for item in items:
        index = item["plan"]["index"]
        res = results[index]
        images.append(CocoImage(index + 1, res["file_name"], domain.width, domain.height,
                                res["meta"]))
        for inst in res["instances"]:
            anns.append(CocoAnnotation(len(anns) + 1, index + 1, inst["class_index"] + 1,
                                       tuple(inst["bbox"]), inst["area"], 0,
                                       inst["segmentation"], {"visibility": inst["visibility"],
                                                              "instance": inst["pass_index"]}))
    ds = CocoDataset(images, anns, categories_for(list(class_names)), out_dir / "images")
    ds.validate(source=str(out_dir / "annotations.json"))
    ds.save(out_dir / "annotations.json")
    return ds
