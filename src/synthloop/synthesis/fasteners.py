"""Parametric fastener CAD: ISO-like hex bolts and flat washers as closed meshes in millimetres.

Dimensions (nominal, no tolerances, no chamfer):

- ``hex-bolt`` ``M<d>x<L>`` (ISO 4017-like): a hexagonal head of width across flats ``s`` and
  height ``k`` on a plain round shank of diameter ``d`` and length ``L`` (under the head). The
  head spans z in [0, k], the shank z in [-L, 0]; two head corners lie on the x axis, so the
  bounding box is ``2 s / sqrt(3)`` (across corners) x ``s`` x ``k + L``. ``threads``: ``none``
  (a plain shank), ``full`` (ISO 4017: threaded up to the head) or ``iso`` (ISO 4014: the
  thread runs ``b = 2 d + 6`` mm from the tip, so long bolts keep a plain shank under the head,
  short ones are threaded all along). A thread is cut as V grooves of the ISO coarse pitch, 60
  degrees, depth ``0.61 P`` (rings, not a helix: the same look at the scale of a photo).
- ``washer`` ``M<d>`` (ISO 7089-like): a flat ring of inner diameter ``d1``, outer ``d2``,
  thickness ``h``, z in [0, h].

Each mesh is one closed, outward-wound shell (every edge is shared by exactly two triangles in
opposite directions) made by revolving a profile around the z axis: a ring of the profile may
be a circle, a hexagon or the axis itself. ``fastener_stl_files`` writes meshes into a folder
named after a hash of the parameters (and of ``GENERATOR_VERSION``), so a cache hit is exact and
a changed generator or size list lands in a new folder (a new CAD hash for lineage).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1  # bump when the geometry changes: cached meshes and CAD hashes follow
SEGMENTS = 48  # around the axis; a multiple of 6 so that the hexagon's corners are vertices

# ISO 4017 hex head: thread d -> (across flats s, head height k), millimetres
HEX_HEADS = {3: (5.5, 2.0), 4: (7.0, 2.8), 5: (8.0, 3.5), 6: (10.0, 4.0), 8: (13.0, 5.3),
             10: (16.0, 6.4), 12: (18.0, 7.5), 16: (24.0, 10.0), 20: (30.0, 12.5),
             24: (36.0, 15.0)}
# ISO 4017 preferred lengths under the head, millimetres
BOLT_LENGTHS = (6, 8, 10, 12, 16, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 80, 90, 100, 110,
                120, 130, 140, 150, 160, 180, 200)
# ISO 7089 plain washer: thread d -> (inner d1, outer d2, thickness h), millimetres
WASHERS = {3: (3.2, 7.0, 0.5), 4: (4.3, 9.0, 0.8), 5: (5.3, 10.0, 1.0), 6: (6.4, 12.0, 1.6),
           8: (8.4, 16.0, 1.6), 10: (10.5, 20.0, 2.0), 12: (13.0, 24.0, 2.5),
           16: (17.0, 30.0, 3.0), 20: (21.0, 37.0, 3.0), 24: (25.0, 44.0, 4.0)}
KINDS = ("hex-bolt", "washer")
THREADS = ("none", "full", "iso")
# ISO 261 coarse pitch, millimetres
COARSE_PITCH = {3: 0.5, 4: 0.7, 5: 0.8, 6: 1.0, 8: 1.25, 10: 1.5, 12: 1.75, 16: 2.0, 20: 2.5,
                24: 3.0}


class FastenerError(ValueError):
    """An unknown fastener kind or size; the message lists the known ones."""


def _threads(table: dict) -> str:
    return ", ".join(f"M{d}" for d in table)


def known_sizes(kind: str) -> str:
    """The sizes ``kind`` accepts, in words (for help texts and errors)."""
    if kind == "hex-bolt":
        return (f"M<d>x<L> with d in {_threads(HEX_HEADS)} and L (mm) in "
                f"{', '.join(map(str, BOLT_LENGTHS))}, e.g. M10x60")
    if kind == "washer":
        return f"{_threads(WASHERS)}, e.g. M8"
    raise FastenerError(f"unknown fastener kind {kind!r} (known: {', '.join(KINDS)})")


def fastener_dimensions(kind: str, size: str) -> dict[str, float]:
    """Nominal dimensions (mm) of ``kind`` at ``size``; ``FastenerError`` lists the known ones.

    hex-bolt -> ``{"d", "length", "s", "k"}``; washer -> ``{"d1", "d2", "h"}``.
    """
    known = known_sizes(kind)  # raises for an unknown kind
    text = str(size).strip()
    if kind == "hex-bolt":
        m = re.fullmatch(r"[Mm](\d+)[xX](\d+)", text)
        if m and int(m[1]) in HEX_HEADS and int(m[2]) in BOLT_LENGTHS:
            s, k = HEX_HEADS[int(m[1])]
            return {"d": float(m[1]), "length": float(m[2]), "s": s, "k": k}
    else:
        m = re.fullmatch(r"[Mm](\d+)", text)
        if m and int(m[1]) in WASHERS:
            d1, d2, h = WASHERS[int(m[1])]
            return {"d1": d1, "d2": d2, "h": h}
    raise FastenerError(f"unknown {kind} size {size!r} (known: {known})")


# ------------------------------------------------------------------------------------ geometry
def _angles(n: int = SEGMENTS) -> np.ndarray:
    return np.arange(n) * (2 * np.pi / n)


def _circle(radius: float) -> np.ndarray:
    """(n,) radii of a circle at the ring angles."""
    return np.full(SEGMENTS, float(radius))


def _hexagon(across_flats: float) -> np.ndarray:
    """(n,) radii of a regular hexagon with corners at 0, 60, ... degrees."""
    phi = np.mod(_angles(), np.pi / 3) - np.pi / 6  # angle from the nearest flat's normal
    return (across_flats / 2) / np.cos(phi)


def revolve(profile: list[tuple[np.ndarray | None, float]], *, closed: bool):
    """A closed shell from rings around the z axis: ``vertices`` (V, 3) float, ``faces`` (F, 3).

    ``profile``: rings ``(radii (n,) or None for a point on the axis, z)`` in the order that
    keeps the solid on the right-hand side when walking the (r, z) profile with r to the right
    and z up (e.g. outward over the top, down the outside). ``closed``: the last ring joins the
    first (a ring with a hole, like a washer); otherwise the profile starts and ends on the axis.
    """
    n, theta = SEGMENTS, _angles()
    verts, starts = [], []
    for radii, z in profile:
        starts.append(sum(len(v) for v in verts))
        if radii is None:
            verts.append(np.array([[0.0, 0.0, z]]))
        else:
            verts.append(np.column_stack([radii * np.cos(theta), radii * np.sin(theta),
                                          np.full(n, float(z))]))
    i = np.arange(n)
    j = (i + 1) % n
    faces = []
    pairs = list(zip(range(len(profile)), range(1, len(profile))))
    if closed:
        pairs.append((len(profile) - 1, 0))
    for a, b in pairs:
        pa, pb = profile[a][0] is None, profile[b][0] is None
        ai, aj, bi, bj = starts[a] + i, starts[a] + j, starts[b] + i, starts[b] + j
        if pa:  # fan from the axis point a
            faces.append(np.column_stack([bi, bj, np.full(n, starts[a])]))
        elif pb:  # fan into the axis point b
            faces.append(np.column_stack([np.full(n, starts[b]), aj, ai]))
        else:  # a quad strip, two triangles per segment
            faces.append(np.column_stack([bi, bj, aj]))
            faces.append(np.column_stack([bi, aj, ai]))
    return np.concatenate(verts), np.concatenate(faces).astype(np.int64)


def thread_length(d: float, length: float, threads: str) -> float:
    """Threaded length from the tip, mm: 0 (``none``), ``length`` (``full``) or ISO 4014's
    ``b = 2 d + 6`` capped at ``length`` (``iso``)."""
    if threads not in THREADS:
        raise FastenerError(f"unknown threads {threads!r} (known: {', '.join(THREADS)})")
    return {"none": 0.0, "full": length, "iso": min(length, 2 * d + 6)}[threads]


def _thread_rings(d: float, length: float, threaded: float, pitch: float) -> list:
    """Shank rings from under the head (z = 0) down to the tip: plain down to the thread, then
    V grooves of ``pitch`` (crest at ``d``, root ``0.61 pitch`` deeper) to the tip."""
    crest, root = d / 2, d / 2 - 0.6134 * pitch
    start = -(length - threaded)  # where the thread begins
    rings = [(_circle(crest), 0.0)]
    if start < 0:
        rings.append((_circle(crest), start))
    n = int(np.floor(threaded / pitch))
    for i in range(n):
        z = start - i * pitch
        rings += [(_circle(root), z - pitch / 2), (_circle(crest), z - pitch)]
    if rings[-1][1] > -length + 1e-9:
        rings.append((_circle(crest), -length))
    return rings


def hex_bolt(*, d: float, length: float, s: float, k: float, threads: str = "none",
             pitch: float | None = None):
    """Hex head (across flats ``s``, height ``k``) on a shank (``d`` x ``length``), mm; the
    shank threaded as ``threads`` says (``pitch`` defaults to ISO coarse for ``d``)."""
    if not 0 < d < s or length <= 0 or k <= 0:
        raise FastenerError(f"hex bolt: need 0 < d < s and positive length and k "
                            f"(d={d}, s={s}, length={length}, k={k})")
    threaded = thread_length(d, length, threads)
    pitch = pitch or COARSE_PITCH.get(int(d), 0.15 * d)
    head = _hexagon(s)
    shank = (_thread_rings(d, length, threaded, pitch) if threaded > 0
             else [(_circle(d / 2), 0.0), (_circle(d / 2), -length)])
    return revolve([(None, k), (head, k), (head, 0.0), *shank, (None, -length)], closed=False)


def washer(*, d1: float, d2: float, h: float):
    """Flat ring: inner diameter ``d1``, outer ``d2``, thickness ``h``, mm."""
    if not 0 < d1 < d2 or h <= 0:
        raise FastenerError(f"washer: need 0 < d1 < d2 and h > 0 (d1={d1}, d2={d2}, h={h})")
    inner, outer = _circle(d1 / 2), _circle(d2 / 2)
    return revolve([(inner, h), (outer, h), (outer, 0.0), (inner, 0.0)], closed=True)


def fastener_mesh(kind: str, size: str, threads: str = "none"):
    """``(vertices (V, 3) float mm, faces (F, 3) int)`` of ``kind`` at ``size`` (``threads``:
    bolts only)."""
    dims = fastener_dimensions(kind, size)
    return hex_bolt(**dims, threads=threads) if kind == "hex-bolt" else washer(**dims)


# --------------------------------------------------------------------------------------- files
def fastener_file_name(kind: str, size: str) -> str:
    """``hex_bolt_M10x60.stl``, ``washer_M8.stl``: the size as written, normalised to ``M..x..``."""
    fastener_dimensions(kind, size)
    return f"{kind.replace('-', '_')}_{str(size).strip().upper().replace('X', 'x')}.stl"


def write_fastener(kind: str, size: str, out_dir: Path | str, threads: str = "none") -> Path:
    """Write one fastener as a binary STL in millimetres into ``out_dir``; returns the path."""
    from synthloop.synthesis.mesh_io import write_stl

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_stl(out_dir / fastener_file_name(kind, size),
                     *fastener_mesh(kind, size, threads))


def cad_key(kind: str, sizes: list[str], threads: str = "none") -> str:
    """12 hex digits naming the generated meshes of ``kind`` x ``sizes`` (and the generator).
    Plain bolts (``threads`` none) keep the key they had before threads existed."""
    body = {"generator": GENERATOR_VERSION, "fastener": kind,
            "sizes": [fastener_file_name(kind, s) for s in sizes]}
    if kind == "hex-bolt" and threads != "none":
        body["threads"] = threads
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def fastener_stl_files(kind: str, sizes: list[str], cad_root: Path | str,
                       threads: str = "none") -> list[Path]:
    """The STL of every size, generated once into ``<cad_root>/<cad_key>/`` (a cache).

    Files already there are kept: the folder name fixes their content. Returns the paths in
    ``sizes`` order.
    """
    folder = Path(cad_root) / cad_key(kind, sizes, threads)
    paths = []
    for size in sizes:
        path = folder / fastener_file_name(kind, size)
        paths.append(path if path.is_file() else write_fastener(kind, size, folder, threads))
    return paths
