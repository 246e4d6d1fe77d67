"""The shard API: ``render_shard(job) -> ShardResult`` and ``merge_shards(results) -> COCO``.

A ``ShardJob`` is a plain, picklable record of everything one Blender worker needs (absolute
paths, per-image plans and cache keys), so the same function runs in a local thread pool
(``render.render_domain``), on a Dask cluster (``client.map(render_shard, jobs)``) or as a
Prefect task; only a shared filesystem is assumed. A shard is resumable: images whose
done-marker carries the same key are not rendered again, and a rerun after a crash finishes
only what is missing. Layout under ``out_dir``: ``images/<stem>.jpg`` (final images),
``raw/`` (worker outputs: ``<stem>.png`` RGBA, ``<stem>.ids.npz``, ``<stem>.json`` marker;
host records ``<stem>.anns.json``; ``jobs/`` and ``logs/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

import synthloop
from synthloop import faults
from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
from synthloop.io_utils import atomic_write_bytes, atomic_write_text
from synthloop.synthesis.blender.worker import is_done
from synthloop.synthesis.composite import composite, jpeg_bytes, part_instances

WORKER_MODULE = "synthloop.synthesis.blender.worker"


class RenderError(RuntimeError):
    """Rendering could not start or a worker failed; the message says what to do."""


@dataclass(frozen=True)
class ShardJob:
    """One shard of a domain. ``settings``: width, height, samples, denoise, quality, scene,
    threads, profile; ``finish``: min_visibility, max_truncation, box_mode, drop_empty_images;
    ``items``: ``[{"stem", "key", "plan"}]``; ``blender_python`` is needed only if an image is
    missing (``None``: nothing to render)."""

    name: str
    out_dir: str
    settings: dict
    meshes: list[dict]
    assets: dict
    items: list[dict]
    finish: dict
    blender_python: str | None = None

    def worker_job(self) -> dict:
        raw = str(Path(self.out_dir, "raw").resolve())
        return {"out_dir": raw, **self.settings, "meshes": self.meshes, **self.assets,
                "finish": self.finish, "images": self.items}


@dataclass(frozen=True)
class ShardResult:
    """``images``: per image ``index``, ``file_name``, ``width``, ``height``, ``instances``,
    ``meta`` and ``rejected`` (a reason, or None). ``rendered``: images Blender rendered in
    this call; ``peak_rss_mb``: the worker's peak memory (0 when nothing was rendered)."""

    name: str
    images: list[dict] = field(default_factory=list)
    rendered: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0


def _src_dir() -> Path:
    return Path(synthloop.__file__).resolve().parent.parent


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _meta(plan: dict, record: dict) -> dict:
    return {"index": plan["index"], "seed": plan["seed"], "scene": plan.get("scene", "floating"),
            "camera": record["camera"], "camera_plan": plan["camera"], "hdri": record["hdri"],
            "hdri_plan": plan["hdri"], "lights": plan.get("lights", []),
            "background": plan["background"], "sensor": plan["sensor"],
            "parts": [{k: p[k] for k in ("class_index", "variant", "matrix_world", "on_table")
                       if k in p} for p in record["parts"]],
            "distractors": record.get("distractors", []), "table": plan.get("table")}


def finish_image(job: ShardJob, item: dict) -> dict:
    """Composite one rendered image, write its JPEG and return (and cache) its record."""
    raw, images_dir = Path(job.out_dir, "raw"), Path(job.out_dir, "images")
    plan, stem = item["plan"], item["stem"]
    cache, jpg = raw / f"{stem}.anns.json", images_dir / f"{stem}.jpg"
    key = digest({"render": item["key"], "background": plan["background"],
                  "sensor": plan["sensor"], "finish": job.finish})
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key and (cached["rejected"] or jpg.is_file()):
            return cached
    record = json.loads((raw / f"{stem}.json").read_text())
    out = {"key": key, "index": plan["index"], "file_name": jpg.name,
           "width": job.settings["width"], "height": job.settings["height"],
           "instances": [], "meta": _meta(plan, record), "rejected": record.get("rejected")}
    if not out["rejected"]:
        ids = np.load(raw / f"{stem}.ids.npz")["ids"]
        f = job.finish
        out["dropped"] = []  # why parts got no box: scale_check.check_class_boxes reports them
        out["instances"] = part_instances(ids, record, min_visibility=f["min_visibility"],
                                          max_truncation=f["max_truncation"],
                                          box_mode=f["box_mode"], dropped=out["dropped"])
        if f["drop_empty_images"] and not out["instances"]:
            out["rejected"] = "no part passes the visibility/truncation filter"
    if not out["rejected"]:
        with Image.open(raw / f"{stem}.png") as rgba:
            img = composite(rgba, plan)
        atomic_write_bytes(jpg, jpeg_bytes(img, plan["sensor"]["jpeg_quality"]))
    text = json.dumps(out)
    atomic_write_text(cache, text)
    return json.loads(text)  # the same types as a cached record (lists, not tuples)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join([t for t in text if not t.startswith("Fra:")][-lines:])


def _start_worker(job: ShardJob) -> tuple[subprocess.Popen, Path]:
    raw = Path(job.out_dir, "raw")
    job_path = atomic_write_text(raw / "jobs" / f"{job.name}.json", json.dumps(job.worker_job()))
    log_path = raw / "logs" / f"{job.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(_src_dir()), "PYTHONNOUSERSITE": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen([job.blender_python, "-m", WORKER_MODULE, str(job_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, log_path


def render_shard(job: ShardJob, *, on_image: Callable[[dict], None] | None = None,
                 cancel: threading.Event | None = None, poll_s: float = 0.2) -> ShardResult:
    """Render the missing images of ``job`` in one Blender process, then composite and annotate
    every image of the shard. Idempotent: rerunning after a crash renders only what is missing.

    ``on_image(record)`` is called once per finished image (progress); ``cancel`` stops the
    worker early. Raises ``RenderError`` (with the worker's log tail) if the worker fails.
    """
    t0 = time.time()
    raw = str(Path(job.out_dir, "raw").resolve())
    records: list[dict] = []

    def finish(item: dict) -> None:
        records.append(finish_image(job, item))
        faults.point("render.mid_shard")
        if on_image:
            on_image(records[-1])

    todo = [it for it in job.items if not is_done(raw, it)]
    missing = {it["stem"] for it in todo}
    for item in job.items:
        if item["stem"] not in missing:
            finish(item)
    if not todo:
        return ShardResult(job.name, records, 0, time.time() - t0, 0.0)
    if not job.blender_python:
        raise RenderError(f"{job.name}: {len(todo)} images to render but no blender_python")
    proc, log_path = _start_worker(job)
    nxt = 0  # the worker renders in job order: only the next marker needs checking
    try:
        while True:
            rc = proc.poll()
            while nxt < len(todo) and is_done(raw, todo[nxt]):
                finish(todo[nxt])
                nxt += 1
            if rc is not None or (cancel is not None and cancel.is_set()):
                break
            time.sleep(poll_s)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    if cancel is not None and cancel.is_set() and nxt < len(todo):
        raise RenderError(f"{job.name}: cancelled after {nxt}/{len(todo)} images")
    if nxt < len(todo):
        raise RenderError(f"render worker for {job.name} failed (exit {rc}, {nxt}/{len(todo)} "
                          f"images); log {log_path}:\n{_log_tail(log_path)}")
    rss = max(json.loads(Path(raw, f"{it['stem']}.json").read_text()).get("peak_rss_mb", 0.0)
              for it in todo)
    return ShardResult(job.name, records, len(todo), time.time() - t0, rss)


def merge_shards(results: list[ShardResult], *, class_names: list[str], out_dir: Path | str,
                 num_images: int | None = None) -> CocoDataset:
    """One COCO dataset from shard results: accepted images in plan order (the first
    ``num_images`` of them if given), image id = plan index + 1, category id = class + 1,
    boxes ``[x, y, w, h]`` pixels. Writes ``out_dir/annotations.json`` (atomic) unless it
    already holds exactly this set."""
    out_dir = Path(out_dir)
    records = sorted((r for res in results for r in res.images if not r["rejected"]),
                     key=lambda r: r["index"])
    if num_images is not None:
        records = records[:num_images]
    images, anns = [], []
    for rec in records:
        image_id = rec["index"] + 1
        images.append(CocoImage(image_id, rec["file_name"], rec["width"], rec["height"],
                                rec["meta"]))
        for inst in rec["instances"]:
            anns.append(CocoAnnotation(
                len(anns) + 1, image_id, inst["class_index"] + 1, tuple(inst["bbox"]),
                inst["area"], 0, inst["segmentation"],
                {"visibility": inst["visibility"], "truncation": inst.get("truncation", 0.0),
                 "instance": inst["pass_index"]}))
    ds = CocoDataset(images, anns, categories_for(list(class_names)), out_dir / "images")
    path = out_dir / "annotations.json"
    ds.validate(source=str(path))
    # a rerun that reused every image leaves the file as it was (its mtime too)
    text = ds.to_json()
    if not (path.is_file() and path.read_text() == text):
        atomic_write_text(path, text)
    return ds
