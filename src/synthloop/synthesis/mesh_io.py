"""Mesh primitives shared by the procedural, parametric and CAD parts: binary/ASCII STL I/O,
the closed-solid check, length units and ``MeshError``.

A leaf of ``synthesis``: meshes.py (part resolution and validation), fasteners.py and
cad_import.py import it; it imports none of them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from synthloop.io_utils import atomic_write_bytes

UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254}


class MeshError(ValueError):
    """A part mesh is missing, empty or of an unknown format; the message names the file."""


def write_stl(path: Path | str, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write a binary STL (little-endian, per-facet normals); returns the path."""
    path = Path(path)
    tri = vertices[faces].astype(np.float32)  # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-20)
    rec = np.zeros(len(faces), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    rec["n"], rec["v"] = normal, tri
    header = b"synthloop procedural mesh".ljust(80, b"\0")
    return atomic_write_bytes(path, header + struct.pack("<I", len(faces)) + rec.tobytes())


def read_stl(path: Path | str) -> np.ndarray:
    """Triangles of a binary or ASCII STL: (F, 3, 3) float32 in file units."""
    data = Path(path).read_bytes()
    if len(data) >= 84:
        count = struct.unpack("<I", data[80:84])[0]
        if 84 + 50 * count == len(data):
            rec = np.frombuffer(data, dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)),
                                             ("attr", "<u2")], count=count, offset=84)
            return rec["v"].copy()
    words = data.decode("ascii", errors="replace").split()
    coords = [float(words[i + k]) for i, w in enumerate(words) if w == "vertex" for k in (1, 2, 3)]
    return np.array(coords, np.float32).reshape(-1, 3, 3)


def check_solid(path: Path, triangles: np.ndarray) -> None:
    """A part must be a closed solid: nonzero volume, every edge shared by exactly two faces.

    ``triangles``: (F, 3, 3) float in file units. A flat or zero-volume mesh renders as a
    sliver with a degenerate box; an open (non-manifold) one breaks the physics drop and the
    instance silhouette. STL repeats each vertex per face: they are welded first.
    """
    if len(triangles) == 0:
        raise MeshError(f"mesh {path}: STL has no triangles")
    extent = triangles.reshape(-1, 3).max(0) - triangles.reshape(-1, 3).min(0)
    a, b, c = (triangles[:, i].astype(np.float64) for i in range(3))
    volume = abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)
    if not np.all(np.isfinite(extent)) or volume <= 1e-9 * float(np.prod(np.maximum(extent, 1e-30))):
        raise MeshError(f"mesh {path}: zero volume (extent {np.round(extent, 6).tolist()} "
                        "in file units): a part must be a solid")
    # CAD exporters write the same corner with float noise: weld on a 1e-6 * size grid
    grid = np.round(triangles.reshape(-1, 3).astype(np.float64) / (1e-6 * float(extent.max())))
    _, vid = np.unique(grid, axis=0, return_inverse=True)
    tri = vid.reshape(-1, 3)
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    bad = int((counts != 2).sum())
    if bad:
        raise MeshError(f"mesh {path}: not a closed solid ({bad} open or non-manifold edges "
                        f"of {len(counts)}); repair it (e.g. Blender 3D-Print Toolbox)")
