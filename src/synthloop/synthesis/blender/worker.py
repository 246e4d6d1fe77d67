"""Render worker: ``python -m synthloop.synthesis.blender.worker JOB.json`` (needs bpy).

A job json (``shards.ShardJob.worker_job``) holds ``out_dir``, the render settings (``width``,
``height``, ``samples``, ``denoise``, ``quality``, ``scene``, ``threads``, ``profile``,
``device``: auto | gpu | cpu, see ``devices``),
``meshes`` ([{name, class_index, variant, path, unit}]), ``distractor_meshes``, ``hdris``,
``prints_dir`` (when a plan uses ``printed``: the designs as print_NNN.png),
``finish`` (filters) and ``images`` ([{stem, key, plan}]). For each image the worker writes,
into ``out_dir``, each file atomically (temp + rename) and in this order: ``<stem>.png`` (RGBA,
straight alpha), ``<stem>.ids.npz`` (``ids``: (H, W) uint16 object pass index, 0 = nothing)
and last ``<stem>.json``, the done-marker with camera, object poses, per-instance silhouette
areas, ``rejected`` (images dropped before rendering: no png/ids), ``render_seconds`` and
``cpu_seconds`` (all threads), ``peak_rss_mb`` and ``render_device`` (which device rendered
it, and why when it is not the one asked for: ``devices.DeviceChoice.record``). An
image whose marker carries the same ``key`` is skipped, so rerunning a job after a crash
renders only what is missing.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time

import numpy as np


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:  # a full disk: leave no half-written temp file behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _require_complete_png(tmp: str, final: str) -> None:
    """Blender does not fail when a full disk truncates its PNG: check for the IEND chunk."""
    try:
        with open(tmp, "rb") as fh:
            fh.seek(max(0, os.path.getsize(tmp) - 12))
            complete = b"IEND" in fh.read()
    except OSError:
        complete = False
    if not complete:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OSError(f"Blender wrote no complete PNG for {final} (is the disk full?)")


def is_done(out_dir: str, item: dict) -> bool:
    marker = os.path.join(out_dir, item["stem"] + ".json")
    try:
        with open(marker) as fh:
            return json.load(fh).get("key") == item["key"]
    except (OSError, ValueError):
        return False


def _read_ids(tmp_dir: str, height: int, width: int) -> np.ndarray:
    import bpy

    names = [n for n in os.listdir(tmp_dir) if n.startswith("ids_") and n.endswith(".exr")]
    if len(names) != 1:
        raise RuntimeError(f"expected one index EXR in {tmp_dir}, found {names}")
    path = os.path.join(tmp_dir, names[0])
    img = bpy.data.images.load(path)
    px = np.empty(width * height * img.channels, np.float32)
    img.pixels.foreach_get(px)
    channels = img.channels
    bpy.data.images.remove(img)
    os.remove(path)
    ids = px.reshape(height, width, channels)[::-1, :, 0]  # Blender rows run bottom-up
    return np.rint(ids).astype(np.uint16)


def _mesh_arrays(mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (V, 4) homogeneous, triangles (T, 3) and bounding-box corners (8, 4)."""
    co = np.empty(len(mesh.vertices) * 3, np.float64)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    mesh.calc_loop_triangles()
    tris = np.empty(len(mesh.loop_triangles) * 3, np.int64)
    mesh.loop_triangles.foreach_get("vertices", tris)
    lo, hi = co.min(0), co.max(0)
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    return np.column_stack([co, np.ones(len(co))]), tris.reshape(-1, 3), corners


def _pose(h: dict, ob) -> list[list[float]]:
    """``ob``'s 4x4 pose in the plan's frame (without the turntable that stands in for the
    HDRI rotation, see ``scene``)."""
    return [list(r) for r in h["root"].matrix_world.inverted() @ ob.matrix_world]


def _camera_record(h: dict, proj: np.ndarray, width: int, height: int) -> dict:
    cam = h["camera"]
    K = [[proj[0, 0] * width / 2, 0.0, width / 2], [0.0, proj[1, 1] * height / 2, height / 2],
         [0.0, 0.0, 1.0]]
    return {"matrix_world": _pose(h, cam), "K": K,
            "convention": "blender (looks along -Z, +Y up)",
            "focal_length_mm": cam.data.lens, "sensor_width_mm": cam.data.sensor_width}


def _record(h: dict, plan: dict, width: int, height: int, arrays: list,
            in_scene: list[bool]) -> dict:
    """Camera and object poses, plus each part's unoccluded silhouette area (for visibility),
    its area inside the image (truncation) and projected boxes (all vertices, box corners)."""
    import bpy
    from synthloop.synthesis.blender.raster import project, silhouette

    bpy.context.view_layer.update()
    cam = h["camera"]
    depsgraph = bpy.context.evaluated_depsgraph_get()
    proj = np.array(cam.calc_matrix_camera(depsgraph, x=width, y=height))
    view = np.array(cam.matrix_world.inverted())
    parts = []
    for i, item in enumerate(plan["parts"]):
        ob = h["part_slots"][i]
        co, tris, corners = arrays[item.get("mesh_index", item["class_index"])]
        mvp = proj @ view @ np.array(ob.matrix_world)
        sil = {"pixels": 0, "pixels_in_image": 0, "bbox_xyxy": None}
        box = None
        if in_scene[i]:
            uv, front = project(co @ mvp.T, width, height)
            sil = silhouette(uv, tris, width, height, front)
            cuv, cfront = project(corners @ mvp.T, width, height)
            box = [float(v) for v in (*cuv.min(0), *cuv.max(0))] if cfront.all() else None
        parts.append({"pass_index": ob.pass_index, "class_index": item["class_index"],
                      "variant": item.get("variant", 0), "on_table": in_scene[i],
                      "matrix_world": _pose(h, ob),
                      "unoccluded_pixels": sil["pixels"],
                      "unoccluded_pixels_in_image": sil["pixels_in_image"],
                      "projected_bbox_xyxy": sil["bbox_xyxy"], "corners_bbox_xyxy": box})
    distractors = [{"pass_index": h["dis_slots"][i].pass_index, "shape": d["shape"],
                    "matrix_world": _pose(h, h["dis_slots"][i])}
                   for i, d in enumerate(plan["distractors"])]
    return {"camera": _camera_record(h, proj, width, height),
            "hdri": os.path.basename(h["world"]["env"].image.filepath), "parts": parts,
            "distractors": distractors}


def rejected_before_render(record: dict, finish: dict | None) -> str | None:
    """Why an image can be dropped without rendering it (``drop_empty_images``): no part is in
    view and inside the truncation limit. Occlusion needs the render, so it is not judged."""
    if not finish or not finish.get("drop_empty_images"):
        return None
    for part in record["parts"]:
        full = part["unoccluded_pixels"]
        if full > 0 and 1.0 - part["unoccluded_pixels_in_image"] / full <= finish["max_truncation"]:
            return None
    return "no part in view within max_truncation (not rendered)"


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _render_one(h: dict, job: dict, item: dict, tmp_dir: str) -> dict:
    """Pose the scene for one plan, render it (unless rejected first) and return its marker."""
    from synthloop.synthesis.blender import scene as scene_lib

    out_dir, width, height = job["out_dir"], job["width"], job["height"]
    stem, plan = item["stem"], item["plan"]
    clock = [time.time()]
    in_scene = scene_lib.apply(h, plan)  # includes the preset's settle (a rigid-body drop)
    clock.append(time.time())
    record = _record(h, plan, width, height, h["arrays"], in_scene)
    record["rejected"] = rejected_before_render(record, job.get("finish"))
    clock.append(time.time())
    if not record["rejected"]:
        png = os.path.join(out_dir, stem + ".png")
        h["scene"].render.filepath = f"{png}.tmp{os.getpid()}.png"
        record["render_device"] = h["renderer"].render().record()  # a GPU failure: CPU again
        _require_complete_png(h["scene"].render.filepath, png)
        os.replace(h["scene"].render.filepath, png)
        clock.append(time.time())
        buf = io.BytesIO()
        np.savez_compressed(buf, ids=_read_ids(tmp_dir, height, width))
        _atomic_write(os.path.join(out_dir, stem + ".ids.npz"), buf.getvalue())
        clock.append(time.time())
    phases = ("pose", "silhouettes", "render", "ids")
    record["phase_seconds"] = {k: round(b - a, 3) for k, a, b in zip(phases, clock, clock[1:])}
    return record


def _renderer(h: dict, job: dict, renderer):
    """The job's ``Renderer`` (``devices``): chosen once per worker (after the first scene
    build: it resets the preferences), moved onto a rebuilt scene, kept in ``h``."""
    import bpy
    from synthloop.synthesis.blender import devices

    if renderer is None:
        choice = devices.choose(job.get("device", "cpu"))
        renderer = devices.Renderer(h["scene"], choice,
                                    lambda: bpy.ops.render.render(write_still=True))
    elif renderer.scene is not h["scene"]:
        renderer.use_scene(h["scene"])
    h["renderer"] = renderer
    return renderer


def _build(job: dict, images: list[dict], tmp_dir: str) -> dict:
    from synthloop.synthesis.blender import scene as scene_lib

    h = scene_lib.build({**job, "images": images}, tmp_dir)
    h["arrays"] = [_mesh_arrays(m) for m in h["part_meshes"]]
    return h


def run(job: dict) -> int:
    """Render every image of ``job`` that is not done yet; returns how many were rendered.

    ``profile='blender_default'`` rebuilds the whole scene for every image (the paper's way:
    a fresh Blender scene per image); otherwise one scene serves the whole job.
    """
    out_dir = job["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    todo = [item for item in job["images"] if not is_done(out_dir, item)]
    if not todo:
        return 0
    tmp_dir = os.path.join(out_dir, ".tmp", f"worker-{os.getpid()}")
    os.makedirs(tmp_dir, exist_ok=True)
    fresh = job.get("profile") == "blender_default"
    t0 = time.time()
    h = None if fresh else _build(job, todo, tmp_dir)
    print(f"synthloop-worker: scene built in {time.time() - t0:.2f}s", flush=True)
    renderer = None
    for item in todo:
        t, cpu = time.time(), time.process_time()
        if fresh:
            h = _build(job, [item], tmp_dir)
        renderer = _renderer(h, job, renderer)
        record = {"key": item["key"], "index": item["plan"]["index"], "stem": item["stem"],
                  **_render_one(h, job, item, tmp_dir), "part_scales": h["part_scales"],
                  "render_seconds": round(time.time() - t, 3),
                  "cpu_seconds": round(time.process_time() - cpu, 3),
                  "peak_rss_mb": _peak_rss_mb()}
        _atomic_write(os.path.join(out_dir, item["stem"] + ".json"), json.dumps(record).encode())
        print(f"synthloop-worker: done {item['stem']} {time.time() - t:.2f}s", flush=True)
    if not os.listdir(tmp_dir):
        os.rmdir(tmp_dir)
    return len(todo)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m synthloop.synthesis.blender.worker JOB.json", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        job = json.load(fh)
    run(job)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
