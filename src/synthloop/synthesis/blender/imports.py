"""Mesh data for the worker: imported part/distractor files and shipped primitives.

Part meshes are recentred at their bounding-box centre and scaled to metres per class
(``unit='auto'``: a class whose largest variant is over ``AUTO_MM_DIAGONAL`` units across is in
millimetres). Distractor files are recentred and scaled to about 1 across (the plan sizes them).
"""

from __future__ import annotations

import math
import os

import bpy  # isort: skip  (bmesh and mathutils only import after bpy)
import bmesh
import numpy as np
from mathutils import Matrix, Vector

from synthloop.synthesis.blender.objects import bmesh_mesh

AUTO_MM_DIAGONAL = 10.0  # same rule as synthloop.synthesis.meshes (kept bpy-side: no import)
UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254}
_IMPORTERS = {".stl": lambda p: bpy.ops.wm.stl_import(filepath=p),
              ".obj": lambda p: bpy.ops.wm.obj_import(filepath=p),
              ".ply": lambda p: bpy.ops.wm.ply_import(filepath=p),
              ".glb": lambda p: bpy.ops.import_scene.gltf(filepath=p),
              ".gltf": lambda p: bpy.ops.import_scene.gltf(filepath=p)}


def _join_imported(objs, name: str) -> bpy.types.Mesh:
    def build(bm) -> None:
        for ob in objs:
            me = ob.data.copy()
            me.transform(ob.matrix_world)
            bm.from_mesh(me)
            bpy.data.meshes.remove(me)

    return bmesh_mesh(name, build)


def _bounds(mesh) -> tuple[np.ndarray, np.ndarray]:
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    return co.min(0), co.max(0)


def import_mesh(path: str, name: str) -> bpy.types.Mesh:
    """One mesh file as a single mesh datablock, recentred at its bounding-box centre, one
    material slot, flat shading; raises RuntimeError naming the file if it has no geometry."""
    before = set(bpy.data.objects)
    ext = os.path.splitext(path)[1].lower()
    try:
        _IMPORTERS[ext](path)
    except RuntimeError as exc:
        raise RuntimeError(f"mesh {path}: Blender cannot import it ({exc})") from None
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH" and len(o.data.vertices)]
    if not meshes:
        raise RuntimeError(f"mesh {path}: import produced no geometry")
    mesh = _join_imported(meshes, name)
    for ob in new:
        bpy.data.objects.remove(ob, do_unlink=True)
    lo, hi = _bounds(mesh)
    mesh.transform(Matrix.Translation(-Vector((lo + hi) / 2)))
    mesh.materials.clear()
    mesh.materials.append(None)
    mesh.shade_flat()
    return mesh


def import_parts(specs: list[dict]) -> tuple[list, list[float]]:
    """Import every variant of every class (``meshes.prepare_part_meshes`` entries); returns
    meshes in entry order and the metre scale applied to each."""
    meshes = [import_mesh(s["path"], f"part_{s['name']}_{s.get('variant', 0)}") for s in specs]
    diag: dict[int, float] = {}
    for spec, mesh in zip(specs, meshes):
        lo, hi = _bounds(mesh)
        c = spec.get("class_index", 0)
        diag[c] = max(diag.get(c, 0.0), float(np.linalg.norm(hi - lo)))
    scales = []
    for spec, mesh in zip(specs, meshes):
        auto = 0.001 if diag[spec.get("class_index", 0)] > AUTO_MM_DIAGONAL else 1.0
        s = UNIT_SCALE.get(spec["unit"], auto)
        mesh.transform(Matrix.Diagonal((s, s, s, 1.0)))
        scales.append(s)
    return meshes, scales


def import_distractor(path: str, index: int) -> bpy.types.Mesh:
    """A user distractor mesh, recentred and scaled so that its largest side is 1."""
    mesh = import_mesh(path, f"distractor_mesh_{index}")
    lo, hi = _bounds(mesh)
    s = 1.0 / max(float((hi - lo).max()), 1e-9)
    mesh.transform(Matrix.Diagonal((s, s, s, 1.0)))
    return mesh


def _torus(bm) -> None:
    major, minor, nu, nv = 0.35, 0.15, 24, 12
    verts = [[bm.verts.new(((major + minor * math.cos(v)) * math.cos(u),
                            (major + minor * math.cos(v)) * math.sin(u), minor * math.sin(v)))
              for v in np.linspace(0, 2 * math.pi, nv, endpoint=False)]
             for u in np.linspace(0, 2 * math.pi, nu, endpoint=False)]
    for i in range(nu):
        for j in range(nv):
            bm.faces.new((verts[i][j], verts[(i + 1) % nu][j], verts[(i + 1) % nu][(j + 1) % nv],
                          verts[i][(j + 1) % nv]))


def _lathe(profile: list[tuple[float, float]], segments: int = 24):
    """A closed solid of revolution about z from (radius, z) points, bottom to top."""
    def build(bm) -> None:
        rings = [[bm.verts.new((r * math.cos(a), r * math.sin(a), z))
                  for a in np.linspace(0, 2 * math.pi, segments, endpoint=False)]
                 for r, z in profile]
        for lo, hi in zip(rings, rings[1:]):
            for k in range(segments):
                bm.faces.new((lo[k], lo[(k + 1) % segments], hi[(k + 1) % segments], hi[k]))
        bm.faces.new(rings[0][::-1])
        bm.faces.new(rings[-1])
    return build


_BOTTLE = [(0.5, -0.5), (0.5, 0.15), (0.42, 0.25), (0.2, 0.33), (0.16, 0.42), (0.16, 0.5)]


def shipped_meshes() -> dict[str, bpy.types.Mesh]:
    """Unit-sized primitives (about 1 across, centred) keyed by ``presets.PRIMITIVE_SHAPES`` and
    ``presets.CLUTTER_SHAPES``: distractors of the floating scene and floor clutter."""
    cube = lambda bm: bmesh.ops.create_cube(bm, size=1.0)  # noqa: E731
    builds = {
        "cube": cube, "plate": cube, "box": cube, "pack": cube,
        "sphere": lambda bm: bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12,
                                                       radius=0.5),
        "cylinder": lambda bm: bmesh.ops.create_cone(bm, cap_ends=True, segments=24, radius1=0.5,
                                                     radius2=0.5, depth=1.0),
        "cone": lambda bm: bmesh.ops.create_cone(bm, cap_ends=True, segments=24, radius1=0.5,
                                                 radius2=0.0, depth=1.0),
        "can": lambda bm: bmesh.ops.create_cone(bm, cap_ends=True, segments=24, radius1=0.5,
                                                radius2=0.5, depth=1.0),
        "torus": _torus, "bottle": _lathe(_BOTTLE)}
    out = {}
    for name, build in builds.items():
        mesh = bmesh_mesh(f"shape_{name}", build)
        mesh.materials.append(None)
        (mesh.shade_flat if name in ("cube", "plate", "box", "pack") else mesh.shade_smooth)()
        out[name] = mesh
    return out
