"""Render one image domain to COCO: check inputs -> plan -> shards on local workers -> merge.

``render_domain`` is the local driver: it checks every input before Blender starts, plans the
images, cuts the missing ones into balanced shards, runs ``shards.render_shard`` on
``render_cfg.workers`` worker processes (one bpy each) with a progress bar (images/min, ETA),
and merges the results. With ``drop_empty_images`` it renders further images (the next plan
indices, so the result is still deterministic) until ``num_images`` are accepted. For a Dask
cluster or Prefect: ``plan_shards`` -> map ``render_shard`` -> ``merge_shards``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from synthloop.config import DomainConfig, PartSpec, RenderConfig
from synthloop.data.coco import CocoDataset
from synthloop.synthesis.assets import Assets, resolve_assets
from synthloop.synthesis.blender.worker import is_done
from synthloop.synthesis.meshes import prepare_part_meshes
from synthloop.synthesis.plan import plan_scenes
from synthloop.synthesis.prints import PRINTS_VERSION, uses_prints, write_prints
from synthloop.synthesis.scale_check import (ScaleError, check_class_boxes, check_scale,
                                             format_sizes, part_sizes)
from synthloop.synthesis.shards import (RenderError, ShardJob, ShardResult, _src_dir, digest,
                                        merge_shards, render_shard)

MAX_TOP_UP_ROUNDS = 6
log = logging.getLogger(__name__)

__all__ = ["RenderError", "ScaleError", "find_blender_python", "plan_shards", "render_domain",
           "render_shard", "merge_shards"]


def find_blender_python(render_cfg: RenderConfig | None = None) -> str:
    """The interpreter that runs workers: config, $SYNTHLOOP_BLENDER_PYTHON, <repo>/.venv-render,
    or this Python if it has bpy. Raises ``RenderError`` naming ``make setup`` if none works."""
    configured = render_cfg.blender_python if render_cfg else None
    env = os.environ.get("SYNTHLOOP_BLENDER_PYTHON")
    for source, candidate in (("render.blender_python", configured),
                              ("SYNTHLOOP_BLENDER_PYTHON", env)):
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


def render_settings(domain: DomainConfig, render_cfg: RenderConfig, *,
                    profile: str = "synthloop") -> dict:
    """What the worker's Blender settings depend on. ``profile='blender_default'`` renders the
    way the paper's generator does (fresh scene per image, Blender's defaults; benchmarks)."""
    threads = render_cfg.threads or max(1, (os.cpu_count() or 1) // render_cfg.workers)
    return {"width": domain.width, "height": domain.height, "samples": domain.samples,
            "denoise": domain.denoise, "quality": domain.quality, "scene": domain.scene,
            "threads": threads, "profile": profile, "device": render_cfg.device}


def _check_names(parts: list[PartSpec], class_names: list[str]) -> None:
    if not parts:
        raise ValueError("render_domain: no parts given")
    if list(class_names) != [p.name for p in parts]:
        raise ValueError(f"render_domain: class_names {list(class_names)} must match the part "
                         f"names {[p.name for p in parts]} in order")


def _print_designs(plans) -> set[int]:
    """Every ``printed`` design the plans use (looks anywhere in a plan carry ``print``)."""
    found: set[int] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if "print" in node:
                found.add(int(node["print"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    for plan in plans:
        walk(plan)
    return found


def plan_shards(domain: DomainConfig, parts: list[PartSpec], out_dir: Path | str, *,
                render_cfg: RenderConfig | None = None, start: int = 0,
                count: int | None = None, assets: Assets | None = None,
                profile: str = "synthloop") -> list[ShardJob]:
    """Check inputs and cut images ``start .. start+count-1`` into shard jobs.

    Images still to render go into ``max(workers, ceil(todo / shard_size))`` balanced shards;
    finished ones into one extra job that only composites (no Blender). The interpreter is
    looked up only if something is missing.
    """
    render_cfg = render_cfg or RenderConfig()
    out_dir = Path(out_dir).resolve()
    assets = assets or resolve_assets(domain, parts)
    meshes = prepare_part_meshes(parts, out_dir / "meshes")
    sizes = part_sizes(meshes)
    if start == 0:
        log.info("render %s: %s", out_dir.name, format_sizes(sizes))
    check_scale(sizes, domain)  # before Blender starts: a wrong unit fails here, loudly
    settings = render_settings(domain, render_cfg, profile=profile)
    job_assets = {"distractor_meshes": list(assets.distractor_meshes), "hdris": list(assets.hdris)}
    if uses_prints(domain, parts):  # the designs' version is part of every image's key
        job_assets.update(prints_dir=str(out_dir / "prints"), prints_version=PRINTS_VERSION)
    finish = {"min_visibility": domain.min_visibility, "max_truncation": domain.max_truncation,
              "box_mode": domain.box_mode, "drop_empty_images": domain.drop_empty_images}
    # Neither the thread count nor the device changes what an image shows: finished images
    # stay valid when they change.
    render_env = {k: v for k, v in settings.items() if k not in ("threads", "device")}
    if domain.drop_empty_images:  # the worker may then skip hopeless images: part of the key
        render_env["precheck_max_truncation"] = domain.max_truncation
    items = []
    for plan in plan_scenes(domain, parts, start=start, count=count, assets=assets):
        scene = {k: v for k, v in plan.items() if k not in ("background", "sensor")}
        # Only the meshes of the classes the image shows: a new mesh file for one part (a
        # cad: part's new parameters, a re-tessellated STEP) leaves the other parts' images
        # valid (stages/cad_retrain.py re-renders just the changed part's images).
        shown = {p["class_index"] for p in plan["parts"]}
        items.append({"stem": f"{plan['index']:06d}", "plan": plan, "key": digest(
            {"plan": scene, "render": render_env, "assets": job_assets,
             "meshes": [m for m in meshes if m["class_index"] in shown]})})
    raw = str(out_dir / "raw")
    # grouped by HDRI: a worker rebuilds the environment's importance map only when it changes
    todo = sorted((it for it in items if not is_done(raw, it)),
                  key=lambda it: (it["plan"]["hdri"]["pick"], it["plan"]["index"]))
    missing = {it["stem"] for it in todo}
    done = [it for it in items if it["stem"] not in missing]
    if todo and "prints_dir" in job_assets:  # the worker's interpreter has no Pillow
        write_prints(_print_designs(it["plan"] for it in todo), Path(job_assets["prints_dir"]))
    python = find_blender_python(render_cfg) if todo else None
    n = max(render_cfg.workers, math.ceil(len(todo) / render_cfg.shard_size)) if todo else 0
    size = math.ceil(len(todo) / n) if n else 0
    chunks = [todo[s:s + size] for s in range(0, len(todo), size)] if size else []
    jobs = [ShardJob(f"shard_{c[0]['stem']}", str(out_dir), settings, meshes, job_assets, c,
                     finish, python) for c in chunks]
    if done:
        jobs.append(ShardJob(f"done_{done[0]['stem']}", str(out_dir), settings, meshes,
                             job_assets, done, finish, None))
    return jobs


def run_shards(jobs: list[ShardJob], workers: int, on_image=None) -> list[ShardResult]:
    """``render_shard`` over ``jobs`` on ``workers`` threads (each drives one Blender process);
    the first failure cancels the rest and is raised; so is Ctrl-C."""
    cancel = threading.Event()
    lock = threading.Lock()

    def report(record: dict) -> None:
        if on_image:
            with lock:
                on_image(record)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(render_shard, job, cancel=cancel,
                               on_image=report if job.blender_python else None) for job in jobs]
        try:
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in finished:
                if fut.exception() is not None:
                    raise fut.exception()
        except BaseException:
            cancel.set()
            for fut in futures:
                fut.cancel()
            raise
    return [f.result() for f in futures]


def _cached(jobs: list[ShardJob]) -> int:
    return sum(len(job.items) for job in jobs if not job.blender_python)


def _next_count(domain: DomainConfig, results: list[ShardResult], planned: int) -> int:
    """How many more images to plan so that ``num_images`` get accepted (0: enough)."""
    accepted = sum(1 for r in results for im in r.images if not im["rejected"])
    if not domain.drop_empty_images or accepted >= domain.num_images:
        return 0
    rate = max(accepted / max(planned, 1), 0.05)
    return math.ceil((domain.num_images - accepted) / rate * 1.1) + 1


def render_domain(domain: DomainConfig, parts: list[PartSpec], class_names: list[str],
                  out_dir: Path | str, *, render_cfg: RenderConfig | None = None,
                  progress: bool = True) -> CocoDataset:
    """Render ``domain.num_images`` images of ``parts`` into ``out_dir`` and return the COCO set.

    Every input (meshes, materials, textures, HDRIs, backgrounds, ranges) is checked before
    Blender starts, and every part's size in metres is logged and checked against the camera
    (``scale_check``: a wrong unit is a ``ScaleError``, as is a class left without boxes).
    Only parts are annotated (category id = part index + 1), with boxes ``[x, y, w, h]``
    pixels per ``domain.box_mode``; parts below ``min_visibility`` or above ``max_truncation``
    are dropped, and with ``drop_empty_images`` so are images left without a part (more are
    rendered to refill). Writes ``images/*.jpg`` and ``annotations.json``.
    """
    import time

    from tqdm import tqdm

    render_cfg = render_cfg or RenderConfig()
    _check_names(parts, class_names)
    assets = resolve_assets(domain, parts)
    results: list[ShardResult] = []
    start, count = 0, domain.num_images
    jobs = plan_shards(domain, parts, out_dir, render_cfg=render_cfg, assets=assets)
    bar = tqdm(total=count, initial=_cached(jobs), unit="img", desc=f"render {Path(out_dir).name}",
               disable=not progress)
    clock = {"t0": time.time(), "n": 0}

    def tick(record: dict) -> None:
        clock["n"] += 1
        bar.update(1)
        bar.set_postfix_str(f"{60 * clock['n'] / max(time.time() - clock['t0'], 1e-6):.1f} img/min")

    try:
        for round_ in range(MAX_TOP_UP_ROUNDS):
            results += run_shards(jobs, render_cfg.workers, tick)
            start += count
            count = _next_count(domain, results, start)
            if not count or round_ == MAX_TOP_UP_ROUNDS - 1:
                break
            jobs = plan_shards(domain, parts, out_dir, render_cfg=render_cfg, start=start,
                               count=count, assets=assets)
            bar.total += count
            bar.update(_cached(jobs))
    finally:
        bar.close()
    # a class left without boxes is an error before annotations.json exists (so a rerun after
    # the fix does not skip the domain); the renders stay and are reused where still valid
    check_class_boxes([r for res in results for r in res.images], list(class_names))
    return merge_shards(results, class_names=class_names, out_dir=out_dir,
                        num_images=domain.num_images)
