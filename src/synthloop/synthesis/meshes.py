"""Part meshes on the host side: a procedural turbine blade, part resolution and validation.

The blade needs no CAD: a cambered NACA-style airfoil, tapered and twisted along the span,
standing on a platform and a root block. Each of the three shells is closed (every edge is
shared by exactly two triangles) and wound outward. Units are metres.

Validation of STL/OBJ/PLY/glTF/GLB files happens here, before Blender starts. Unit handling
happens in the worker (it sees every format's vertices): ``unit='auto'`` treats a class whose
largest variant's bounding-box diagonal exceeds ``AUTO_MM_DIAGONAL`` as millimetres, other
units scale by ``UNIT_SCALE``; the worker recentres every mesh at its bounding-box centre.
Parametric fasteners (``cad:`` parts) come from ``synthesis/fasteners.py``, in millimetres.
STL I/O, the closed-solid check and ``MeshError`` are in ``synthesis/mesh_io.py``.
"""

from __future__ import annotations

import glob
import json
import logging
import struct
from pathlib import Path

import numpy as np

# The STL primitives live in mesh_io.py (a leaf: fasteners and cad_import use them too);
# importing them from here keeps working.
from synthloop.synthesis.mesh_io import UNIT_SCALE  # noqa: F401  (re-exported)
from synthloop.synthesis.mesh_io import MeshError, check_solid, read_stl, write_stl

MESH_EXTENSIONS = (".stl", ".obj", ".ply", ".glb", ".gltf")
AUTO_MM_DIAGONAL = 10.0  # a part larger than 10 "units" across is surely not metres


log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- generator
def _airfoil_ring(n: int, thickness: float, camber: float) -> np.ndarray:
    """Closed airfoil outline of unit chord, (2n, 2) [x, y]: upper TE->LE, then lower LE->TE.

    Index 0 is the (single) trailing-edge point, index n the leading edge.
    """
    x = (1.0 - np.cos(np.linspace(0.0, np.pi, n + 1))) / 2.0  # cosine spacing, dense at LE/TE
    yt = 5 * thickness * (0.2969 * np.sqrt(x) - 0.1260 * x - 0.3516 * x**2
                          + 0.2843 * x**3 - 0.1036 * x**4)  # closed trailing edge
    p = 0.4
    yc = np.where(x < p, camber / p**2 * (2 * p * x - x**2),
                  camber / (1 - p) ** 2 * ((1 - 2 * p) + 2 * p * x - x**2))
    upper = np.stack([x, yc + yt], 1)[::-1]  # TE .. LE  (n+1 points)
    lower = np.stack([x, yc - yt], 1)[1:n]  # after LE .. before TE (n-1 points)
    ring = np.concatenate([upper, lower])
    ring[:, 0] -= 0.35  # rotate/twist about the ~quarter-chord, not the leading edge
    return ring


def _cap(n: int, offset: int) -> list[tuple[int, int, int]]:
    """Triangulate a ring from ``_airfoil_ring`` as strips between upper and lower surface."""
    up = lambda k: offset + (n - k)  # noqa: E731  upper point at chord station k (0=LE, n=TE)
    lo = lambda k: offset + (n + k) if 0 < k < n else up(k)  # noqa: E731
    tris = [(up(0), up(1), lo(1))]
    for k in range(1, n - 1):
        tris += [(up(k), up(k + 1), lo(k + 1)), (up(k), lo(k + 1), lo(k))]
    tris.append((up(n - 1), up(n), lo(n - 1)))
    return tris


def _box(lo: tuple[float, float, float], hi: tuple[float, float, float]):
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    v = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                  [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], float)
    f = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                  [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    return v, f


def _orient_outward(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    signed_volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    return f if signed_volume > 0 else f[:, ::-1].copy()


def turbine_blade(*, span: float = 0.12, root_chord: float = 0.045, tip_chord: float = 0.028,
                  twist_deg: float = 40.0, thickness: float = 0.11, camber: float = 0.06,
                  sections: int = 20, profile_points: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A turbine-blade-like part: ``vertices`` (V, 3) float metres and ``faces`` (F, 3) int.

    The span runs along +z from the platform; the root block sits below z=0.
    """
    n = profile_points
    ring = _airfoil_ring(n, thickness, camber)
    shells = []
    verts = []
    for s in np.linspace(0.0, 1.0, sections):
        chord = root_chord + (tip_chord - root_chord) * s
        ang = np.radians(twist_deg * s)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        xy = (ring * chord) @ rot.T + np.array([0.004 * s, 0.0])  # slight lean
        z = -0.002 + s * (span + 0.002)  # start inside the platform: no visible seam
        verts.append(np.column_stack([xy, np.full(len(xy), z)]))
    v_blade = np.concatenate(verts)
    r = len(ring)
    faces = []
    for j in range(sections - 1):
        a0, b0 = j * r, (j + 1) * r
        for i in range(r):
            i1 = (i + 1) % r
            faces += [(a0 + i, a0 + i1, b0 + i1), (a0 + i, b0 + i1, b0 + i)]
    faces += _cap(n, 0) + [t[::-1] for t in _cap(n, (sections - 1) * r)]
    shells.append((v_blade, np.array(faces)))
    shells.append(_box((-0.032, -0.018, -0.006), (0.032, 0.018, 0.0)))  # platform
    shells.append(_box((-0.026, -0.011, -0.03), (0.026, 0.011, -0.006)))  # root block
    all_v, all_f, base = [], [], 0
    for v, f in shells:
        all_v.append(v)
        all_f.append(_orient_outward(v, f) + base)
        base += len(v)
    return np.concatenate(all_v), np.concatenate(all_f).astype(np.int64)


# -------------------------------------------------------------------------------- validation
def _check_stl(path: Path, size: int) -> bool:
    with path.open("rb") as fh:
        head = fh.read(84)
    binary_count = struct.unpack("<I", head[80:84])[0] if len(head) == 84 else -1
    if binary_count >= 0 and 84 + 50 * binary_count == size:
        if binary_count == 0:
            raise MeshError(f"mesh {path}: STL has no triangles")
    elif b"facet" not in path.read_bytes()[:4096]:
        raise MeshError(f"mesh {path}: not a valid binary or ASCII STL")
    check_solid(path, read_stl(path))
    return False  # STL carries no UVs


def _check_obj(path: Path) -> bool:
    counts = {b"v": 0, b"vt": 0, b"f": 0}
    with path.open("rb") as fh:
        for line in fh:
            key = line.split(maxsplit=1)[0] if line.strip() else b""
            if key in counts:
                counts[key] += 1
    if counts[b"v"] == 0 or counts[b"f"] == 0:
        raise MeshError(f"mesh {path}: OBJ has {counts[b'v']} vertices and {counts[b'f']} faces")
    return counts[b"vt"] > 0


def _check_ply(path: Path) -> bool:
    with path.open("rb") as fh:
        if fh.readline().strip() != b"ply":
            raise MeshError(f"mesh {path}: not a PLY file (no 'ply' magic)")
        header = []
        for _ in range(200):
            line = fh.readline()
            if not line or line.strip() == b"end_header":
                break
            header.append(line.decode("ascii", "replace").split())
        else:
            line = b""
    if not line:
        raise MeshError(f"mesh {path}: PLY header has no end_header")
    elements = {h[1]: int(h[2]) for h in header if len(h) == 3 and h[0] == "element"
                and h[2].isdigit()}
    if elements.get("vertex", 0) == 0 or elements.get("face", 0) == 0:
        raise MeshError(f"mesh {path}: PLY has {elements.get('vertex', 0)} vertices and "
                        f"{elements.get('face', 0)} faces")
    props = {h[-1] for h in header if h and h[0] == "property"}
    return bool(props & {"s", "u", "texture_u", "texture_s"})


def _check_gltf(path: Path, data: bytes) -> bool:
    if path.suffix.lower() == ".glb":
        if data[:4] != b"glTF" or len(data) < 20:
            raise MeshError(f"mesh {path}: not a GLB file (no 'glTF' magic)")
        declared, chunk_len = struct.unpack("<II", data[8:16])
        if declared != len(data) or data[16:20] != b"JSON":
            raise MeshError(f"mesh {path}: GLB is truncated or corrupt")
        data = data[20:20 + chunk_len]
    try:
        doc = json.loads(data)
    except ValueError:
        raise MeshError(f"mesh {path}: glTF JSON does not parse") from None
    prims = [p for m in doc.get("meshes", []) for p in m.get("primitives", [])]
    if not prims:
        raise MeshError(f"mesh {path}: glTF has no meshes")
    for buf in doc.get("buffers", []):
        uri = buf.get("uri")
        if uri and not uri.startswith("data:") and not (path.parent / uri).is_file():
            raise MeshError(f"mesh {path}: glTF buffer '{uri}' not found")
    return any("TEXCOORD_0" in p.get("attributes", {}) for p in prims)


def mesh_info(path: Path | str) -> dict:
    """Check a mesh file before Blender starts; raise ``MeshError`` naming the file.

    Returns ``{"path", "format", "has_uv"}``. A mesh without UVs is fine: every synthloop
    material is evaluated in object space (no UV unwrapping needed).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MESH_EXTENSIONS:
        raise MeshError(f"mesh {path}: unknown format '{path.suffix}' "
                        f"(known: {', '.join(MESH_EXTENSIONS)})")
    if not path.is_file():
        raise MeshError(f"mesh {path}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise MeshError(f"mesh {path}: file is empty")
    if ext == ".stl":
        has_uv = _check_stl(path, size)
    elif ext == ".obj":
        has_uv = _check_obj(path)
    elif ext == ".ply":
        has_uv = _check_ply(path)
    else:
        has_uv = _check_gltf(path, path.read_bytes())
    return {"path": str(path), "format": ext[1:], "has_uv": has_uv}


def validate_mesh(path: Path | str) -> Path:
    """``mesh_info`` for callers that only need the check; returns the path."""
    mesh_info(path)
    return Path(path)


def part_mesh_files(part) -> list[Path]:
    """The mesh variants of a ``PartSpec`` with a ``mesh``: the file, or every glob match."""
    pattern = str(part.mesh)
    if not any(c in pattern for c in "*?["):
        return [Path(pattern)]
    files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).suffix.lower() in MESH_EXTENSIONS)
    if not files:
        raise MeshError(f"part '{part.name}': mesh pattern {pattern} matched no mesh files")
    return files


def cad_part_files(part, cad_root: Path | str) -> list[Path]:
    """The STL variants of a ``PartSpec`` with ``cad``, generated (once) under ``cad_root``."""
    from synthloop.synthesis.fasteners import fastener_stl_files

    return fastener_stl_files(part.cad.fastener, part.cad.sizes, cad_root, part.cad.threads)


def resolve_cad_parts(parts: list, cad_root: Path | str) -> list:
    """``parts`` with every ``cad`` part generated under ``cad_root`` and turned into a ``mesh``
    part (a glob over its folder, millimetres); other parts are returned as they are."""
    out = []
    for part in parts:
        if part.cad is None:
            out.append(part)
            continue
        folder = cad_part_files(part, cad_root)[0].parent
        out.append(part.model_copy(update={"cad": None, "mesh": folder / "*.stl", "unit": "mm"}))
    return out


def resolve_cad_files(parts: list, cache_root: Path | str) -> list:
    """``parts`` with every STEP/IGES ``mesh`` tessellated (cached by file hash under
    ``cache_root``) and turned into an STL ``mesh`` part in millimetres; others unchanged.
    The cache folder's ``import.json`` records the file's unit and the unit used."""
    from synthloop.synthesis.cad_import import import_cad, is_cad_file

    out = []
    for part in parts:
        if part.mesh is None or not is_cad_file(part.mesh):
            out.append(part)
            continue
        tess = part.tessellation
        got = import_cad(part.mesh, cache_root, solid=part.solid, unit=part.unit,
                         linear_deflection_mm=tess.linear_deflection_mm,
                         angular_deflection_deg=tess.angular_deflection_deg)
        out.append(part.model_copy(update={"mesh": Path(got["stl"]), "unit": "mm",
                                           "solid": None}))
    return out


def prepare_part_meshes(parts: list, mesh_dir: Path | str) -> list[dict]:
    """Resolve every ``PartSpec`` to the mesh files the worker imports, validated.

    Procedural parts are generated into ``mesh_dir``, ``cad`` parts into ``mesh_dir/cad/<key>``
    (deterministic, so reruns rewrite nothing; the render stage generates them into the
    workspace first, see ``resolve_cad_parts``). Returns ``[{"name", "class_index", "variant",
    "path", "unit"}]``: one entry per variant, classes in order; a plan's ``mesh_index`` points
    into this list.
    """
    out = []
    parts = resolve_cad_files(parts, Path(mesh_dir) / "cad_import")
    for class_index, part in enumerate(parts):
        if part.procedural is not None:
            if part.procedural != "turbine_blade":
                raise MeshError(f"part '{part.name}': unknown procedural generator "
                                f"'{part.procedural}' (known: turbine_blade)")
            path = Path(mesh_dir) / f"{part.name}.stl"
            if not path.is_file():
                write_stl(path, *turbine_blade())
            files = [path]
        elif part.cad is not None:
            files = cad_part_files(part, Path(mesh_dir) / "cad")
        else:
            files = part_mesh_files(part)
        for variant, path in enumerate(files):
            info = mesh_info(path)
            if not info["has_uv"]:
                log.debug("mesh %s has no UV map: fine, materials use object space", path)
            out.append({"name": part.name, "class_index": class_index, "variant": variant,
                        "path": str(Path(path).resolve()),
                        "unit": "mm" if part.cad is not None else part.unit})
    return out
