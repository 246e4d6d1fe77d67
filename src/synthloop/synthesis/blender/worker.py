"""Render worker: ``python -m synthloop.synthesis.blender.worker JOB.json`` (needs bpy).

A job json holds ``out_dir``, ``width``, ``height``, ``samples``, ``denoise``, ``threads``,
``meshes`` ([{name, path, unit}]) and ``images`` ([{stem, key, plan}]). For each image the
worker writes, into ``out_dir``, each file atomically (temp + rename) and in this order:
``<stem>.png`` (RGBA, straight alpha), ``<stem>.ids.npz`` (``ids``: (H, W) uint16 object pass
index, 0 = nothing) and last ``<stem>.json``, the done-marker with camera, object poses and
per-instance silhouette areas. An image whose marker carries the same ``key`` is skipped, so
rerunning a job after a crash renders only what is missing.
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
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


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


def _mesh_arrays(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 4) homogeneous and triangles (T, 3) of a mesh datablock."""
    co = np.empty(len(mesh.vertices) * 3, np.float64)
    mesh.vertices.foreach_get("co", co)
    mesh.calc_loop_triangles()
    tris = np.empty(len(mesh.loop_triangles) * 3, np.int64)
    mesh.loop_triangles.foreach_get("vertices", tris)
    return np.column_stack([co.reshape(-1, 3), np.ones(len(mesh.vertices))]), tris.reshape(-1, 3)


def _record(h: dict, plan: dict, width: int, height: int, arrays: dict) -> dict:
    """Camera and object poses, plus each part's unoccluded silhouette area (for visibility)."""
    import bpy
    from synthloop.synthesis.blender.raster import project, silhouette

    bpy.context.view_layer.update()
    cam = h["camera"]
    depsgraph = bpy.context.evaluated_depsgraph_get()
    proj = np.array(cam.calc_matrix_camera(depsgraph, x=width, y=height))
    view = np.array(cam.matrix_world.inverted())
    K = [[proj[0, 0] * width / 2, 0.0, width / 2], [0.0, proj[1, 1] * height / 2, height / 2],
         [0.0, 0.0, 1.0]]
    parts = []
    for i, item in enumerate(plan["parts"]):
        ob = h["part_slots"][i]
        co, tris = arrays[item["class_index"]]
        uv, front = project(co @ (proj @ view @ np.array(ob.matrix_world)).T, width, height)
        sil = silhouette(uv, tris, width, height, front)
        parts.append({"pass_index": ob.pass_index, "class_index": item["class_index"],
                      "matrix_world": [list(r) for r in ob.matrix_world],
                      "unoccluded_pixels": sil["pixels"],
                      "unoccluded_pixels_in_image": sil["pixels_in_image"],
                      "projected_bbox_xyxy": sil["bbox_xyxy"]})
    distractors = [{"pass_index": h["dis_slots"][i].pass_index, "shape": d["shape"]}
                   for i, d in enumerate(plan["distractors"])]
    w = h["world"]
    return {"camera": {"matrix_world": [list(r) for r in cam.matrix_world], "K": K,
                       "convention": "blender (looks along -Z, +Y up)",
                       "focal_length_mm": cam.data.lens, "sensor_width_mm": cam.data.sensor_width},
            "hdri": os.path.basename(w["env"].image.filepath), "parts": parts,
            "distractors": distractors}


def run(job: dict) -> int:
    """Render every image of ``job`` that is not done yet; returns how many were rendered."""
    out_dir = job["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    todo = [item for item in job["images"] if not is_done(out_dir, item)]
    if not todo:
        return 0
    import bpy
    from synthloop.synthesis.blender import scene as scene_lib

    tmp_dir = os.path.join(out_dir, ".tmp", f"worker-{os.getpid()}")
    os.makedirs(tmp_dir, exist_ok=True)
    t0 = time.time()
    h = scene_lib.build({**job, "images": [item["plan"] for item in todo]}, tmp_dir)
    arrays = [_mesh_arrays(m) for m in h["part_meshes"]]
    width, height = job["width"], job["height"]
    print(f"synthloop-worker: scene built in {time.time() - t0:.2f}s", flush=True)
    for item in todo:
        t = time.time()
        stem, plan = item["stem"], item["plan"]
        scene_lib.apply(h, plan)
        png = os.path.join(out_dir, stem + ".png")
        h["scene"].render.filepath = f"{png}.tmp{os.getpid()}.png"
        bpy.ops.render.render(write_still=True)
        os.replace(h["scene"].render.filepath, png)
        buf = io.BytesIO()
        np.savez_compressed(buf, ids=_read_ids(tmp_dir, height, width))
        _atomic_write(os.path.join(out_dir, stem + ".ids.npz"), buf.getvalue())
        record = {"key": item["key"], "index": plan["index"], "stem": stem,
                  **_record(h, plan, width, height, arrays),
                  "part_scales": h["part_scales"], "render_seconds": round(time.time() - t, 3)}
        _atomic_write(os.path.join(out_dir, stem + ".json"), json.dumps(record).encode())
        print(f"synthloop-worker: done {stem} {time.time() - t:.2f}s", flush=True)
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
