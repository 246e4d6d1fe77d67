"""Part sizes that cannot go silently wrong: checked before a render and after it.

Before: every part's size in metres (the unit rule the worker applies: ``unit``, or for
``auto`` millimetres when the largest variant is over ``AUTO_MM_DIAGONAL`` units across; a
STEP/IGES part in its file's unit) is logged, and checked against the camera. A part larger
than the frame at the farthest, widest camera, or under ``MIN_PART_PIXELS`` at the nearest,
tightest one, is a ``ScaleError`` that names the part, its size under each unit reading and
the ``unit:`` values that would fit.

After: ``check_class_boxes`` turns a class that got no boxes (or far fewer than the other
classes, per placed instance) into a ``ScaleError`` with the reasons its instances were
dropped (``composite.DROP_REASONS``). ``compare_box_sizes`` compares rendered and photo box
sizes per class (warnings, not errors: renders may be meant to differ).
"""

from __future__ import annotations

import json
import logging
import struct
from collections import Counter
from pathlib import Path

import numpy as np

from synthloop.synthesis.meshes import AUTO_MM_DIAGONAL, UNIT_SCALE, read_stl

log = logging.getLogger(__name__)

MIN_PART_PIXELS = 4.0  # a part this small at the nearest camera cannot be learned
SENSOR_MM = 36.0  # Blender's camera: sensor_fit AUTO, 36 mm across the longer image side
MIN_PLACED_FOR_ERROR = 8  # fewer placed instances: a missing class is chance, not an error
MIN_SHARE = 0.2  # a class keeping < 20 % of the best class's box rate is an error


class ScaleError(ValueError):
    """A part is the wrong size for the camera, or a class lost its boxes; says the fix."""


# ------------------------------------------------------------------------------ mesh extents
def _ply_extent(path: Path) -> np.ndarray | None:
    with path.open("rb") as fh:
        fmt, props, count, in_vertex = None, [], 0, False
        for _ in range(500):
            words = fh.readline().decode("ascii", "replace").split()
            if not words:
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                in_vertex = words[1] == "vertex"
                count = int(words[2]) if in_vertex else count
            elif words[0] == "property" and in_vertex:
                if words[1] == "list":
                    return None
                props.append((words[2], words[1]))
            elif words[0] == "end_header":
                break
        names = [p[0] for p in props]
        if not {"x", "y", "z"} <= set(names) or not count:
            return None
        if fmt == "ascii":
            rows = [fh.readline().split() for _ in range(count)]
            xyz = np.array([[float(r[names.index(a)]) for a in "xyz"] for r in rows])
        else:
            types = {"float": "f4", "float32": "f4", "double": "f8", "uchar": "u1", "uint8": "u1",
                     "char": "i1", "int8": "i1", "short": "i2", "int16": "i2", "ushort": "u2",
                     "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4"}
            end = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(n, end + types[t]) for n, t in props])
            rec = np.frombuffer(fh.read(dtype.itemsize * count), dtype=dtype, count=count)
            xyz = np.stack([rec[a].astype(np.float64) for a in "xyz"], 1)
    return xyz.max(0) - xyz.min(0)


def _gltf_extent(path: Path) -> np.ndarray | None:
    data = path.read_bytes()
    if path.suffix.lower() == ".glb":
        length = struct.unpack("<I", data[12:16])[0]
        data = data[20:20 + length]
    doc = json.loads(data)
    lo, hi = [], []
    for mesh in doc.get("meshes", []):  # POSITION accessors must carry min/max (glTF 2.0)
        for prim in mesh.get("primitives", []):
            acc = doc["accessors"][prim["attributes"]["POSITION"]]
            if "min" in acc and "max" in acc:
                lo.append(acc["min"])
                hi.append(acc["max"])
    if not lo:
        return None
    return np.max(hi, 0) - np.min(lo, 0)  # node transforms ignored: a size check, not a pose


def mesh_extent(path: Path | str) -> np.ndarray | None:
    """Bounding-box size (3,) of a mesh file in its own units; None if it cannot be read."""
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext == ".stl":
            flat = read_stl(path).reshape(-1, 3)
            return flat.max(0) - flat.min(0)
        if ext == ".obj":
            with path.open("rb") as fh:
                xyz = np.array([[float(v) for v in line.split()[1:4]] for line in fh
                                if line.startswith(b"v ")])
            return xyz.max(0) - xyz.min(0) if len(xyz) else None
        if ext == ".ply":
            return _ply_extent(path)
        if ext in (".glb", ".gltf"):
            return _gltf_extent(path)
    except (OSError, ValueError, KeyError, IndexError, struct.error):
        return None
    return None


# ---------------------------------------------------------------------------- part sizes
def part_sizes(meshes: list[dict]) -> list[dict]:
    """Per class (``prepare_part_meshes`` entries): ``name``, ``extent`` (3,) of its largest
    variant in file units, ``unit_used`` and ``scale`` (metres per file unit, the worker's
    rule), ``size_m`` (3,), ``source`` (the file the user named) and ``configured`` (the unit
    the user can set). ``extent`` is None when the file could not be measured."""
    classes: dict[int, dict] = {}
    for entry in meshes:
        path = Path(entry["path"])
        extent = mesh_extent(path)
        info = {"name": entry["name"], "source": str(path), "configured": entry["unit"],
                "file_unit": None, "unit_used": entry["unit"], "scale": None}
        imported = path.parent / "import.json"
        if imported.is_file():  # a tessellated STEP/IGES part: report the file's own numbers
            meta = json.loads(imported.read_text())
            scale = UNIT_SCALE.get(meta["unit_used"], meta["file_unit_m"])
            info.update(source=meta["source"], file_unit=meta["file_unit"], scale=scale,
                        configured=meta["settings"]["unit"], unit_used=meta["unit_used"])
            if extent is not None:
                extent = extent / (1000.0 * scale)
        c = entry["class_index"]
        best = classes.get(c)
        if best is None or (extent is not None and (best["extent"] is None or
                                                    np.linalg.norm(extent) > np.linalg.norm(best["extent"]))):
            classes[c] = {**info, "extent": extent}
    out = []
    for c in sorted(classes):
        item = classes[c]
        unit = item["unit_used"]
        if unit == "auto":
            diag = float(np.linalg.norm(item["extent"])) if item["extent"] is not None else 0.0
            unit = "mm" if diag > AUTO_MM_DIAGONAL else "m"
            item["unit_used"] = f"{unit} (auto: {diag:.3g} units across)"
        if item["scale"] is None:
            item["scale"] = UNIT_SCALE.get(unit, 1.0)
        item["size_m"] = None if item["extent"] is None else item["extent"] * item["scale"]
        out.append(item)
    return out


def format_sizes(sizes: list[dict]) -> str:
    lines = []
    for s in sizes:
        if s["size_m"] is None:
            lines.append(f"  {s['name']}: size unknown ({s['source']} could not be measured)")
            continue
        dims = " x ".join(f"{v:.4g}" for v in s["size_m"])
        origin = f", file unit {s['file_unit']}" if s["file_unit"] else ""
        lines.append(f"  {s['name']}: {dims} m (unit {s['unit_used']}{origin}; "
                     f"{Path(s['source']).name})")
    return "part sizes in metres:\n" + "\n".join(lines)


def pixels_per_metre(domain, distance_m: float, focal_mm: float) -> float:
    """Image pixels per metre of object at ``distance_m`` (Blender's AUTO sensor fit)."""
    return max(domain.width, domain.height) * focal_mm / (SENSOR_MM * distance_m)


def _pixel_range(domain, side_m: float) -> tuple[float, float]:
    far = side_m * pixels_per_metre(domain, domain.camera_distance.max, domain.focal_length_mm.min)
    near = side_m * pixels_per_metre(domain, domain.camera_distance.min, domain.focal_length_mm.max)
    return far, near


def _problem(domain, side_m: float) -> str | None:
    far, near = _pixel_range(domain, side_m)
    frame = max(domain.width, domain.height)
    if far > frame:
        return (f"{far:.0f} px across at the farthest camera (camera_distance.max "
                f"{domain.camera_distance.max:g} m, focal {domain.focal_length_mm.min:g} mm) in a "
                f"{frame} px frame: it cannot fit")
    if near < MIN_PART_PIXELS:
        return (f"{near:.2f} px across at the nearest camera (camera_distance.min "
                f"{domain.camera_distance.min:g} m, focal {domain.focal_length_mm.max:g} mm): "
                f"under {MIN_PART_PIXELS:g} px")
    return None


def check_scale(sizes: list[dict], domain) -> None:
    """Raise ``ScaleError`` for the first part whose size cannot suit ``domain``'s camera."""
    for s in sizes:
        if s["size_m"] is None:
            log.warning("part %s: size not checked (%s could not be measured)", s["name"],
                        s["source"])
            continue
        problem = _problem(domain, float(np.max(s["size_m"])))
        if problem is None:
            continue
        side = float(np.max(s["extent"]))
        readings = ", ".join(f"{u}: {side * f:.4g} m" for u, f in UNIT_SCALE.items())
        fits = [u for u, f in UNIT_SCALE.items() if _problem(domain, side * f) is None]
        fix = (f"set `unit: {'|'.join(fits)}` on part '{s['name']}'" if fits else
               "no unit fits this camera: change camera_distance / focal_length_mm")
        raise ScaleError(
            f"part '{s['name']}' ({Path(s['source']).name}, {side:.4g} units on its longest side, "
            f"read as {s['unit_used']} = {side * s['scale']:.4g} m) is {problem}. Its size under "
            f"each unit reading: {readings}. Fix: {fix}.")


# ------------------------------------------------------------------------- after the render
def class_box_report(records: list[dict], class_names: list[str]) -> dict[str, dict]:
    """Per class: ``placed`` instances, ``boxes`` kept and ``dropped`` reason counts, from
    ``shards.finish_image`` records of the images that were rendered."""
    report = {n: {"placed": 0, "boxes": 0, "dropped": Counter()} for n in class_names}
    for rec in records:
        unrendered = bool(rec.get("rejected")) and "dropped" not in rec  # no part in view
        for part in rec["meta"]["parts"]:
            report[class_names[part["class_index"]]]["placed"] += 1
            if unrendered:
                report[class_names[part["class_index"]]]["dropped"]["off-frame"] += 1
        for inst in rec["instances"]:
            report[class_names[inst["class_index"]]]["boxes"] += 1
        for drop in rec.get("dropped", []):
            report[class_names[drop["class_index"]]]["dropped"][drop["reason"]] += 1
    return report


def check_class_boxes(records: list[dict], class_names: list[str]) -> dict[str, dict]:
    """Raise ``ScaleError`` if a class placed in enough images got no boxes, or a far smaller
    share of boxes per placed instance than the best class; returns the report."""
    report = class_box_report(records, class_names)
    rates = {n: r["boxes"] / r["placed"] for n, r in report.items() if r["placed"]}
    best = max(rates.values(), default=0.0)
    for name, r in report.items():
        if r["placed"] < MIN_PLACED_FOR_ERROR:
            continue
        rate = rates[name]
        if r["boxes"] == 0 or (len(rates) > 1 and rate < MIN_SHARE * best):
            reasons = ", ".join(f"{k} {v}" for k, v in r["dropped"].most_common()) or "unknown"
            raise ScaleError(
                f"class '{name}': {r['boxes']} boxes for {r['placed']} placed instances "
                f"(best class keeps {best:.0%}); dropped: {reasons}. Too small or off-frame: "
                f"check the part's `unit:` and camera_distance; occluded/truncated: lower "
                f"min_visibility or raise max_truncation")
    return report


def box_size_stats(ds) -> dict[str, float]:
    """Median box size per class name, as sqrt(box area) / image diagonal (resolution-free)."""
    names = {c["id"]: c["name"] for c in ds.categories}
    images = {im.id: im for im in ds.images}
    sizes: dict[str, list[float]] = {}
    for ann in ds.annotations:
        im = images[ann.image_id]
        rel = float(np.sqrt(max(ann.bbox[2] * ann.bbox[3], 0.0)) / np.hypot(im.width, im.height))
        sizes.setdefault(names[ann.category_id], []).append(rel)
    return {n: float(np.median(v)) for n, v in sizes.items() if v}


def compare_box_sizes(rendered, photos, *, factor: float, train_scale: float = 1.0) -> list[str]:
    """Warnings for classes whose median rendered box size differs from the photos' by more
    than ``factor`` (either way), sizes relative to the image diagonal. ``train_scale`` is the
    median scale pretraining applies to the renders' patches (``pretrain.crop_scale``): the
    sizes compared are the ones the detector learns from."""
    ren, pho = box_size_stats(rendered), box_size_stats(photos)
    seen, fix = ("", "camera_distance") if train_scale == 1.0 else (
        f" as pretraining sees them (crop_scale median x{train_scale:.2f})",
        "camera_distance, pretrain.crop_scale")
    out = []
    for name in sorted(set(ren) & set(pho)):
        ratio = ren[name] * train_scale / pho[name]
        if ratio > factor or ratio < 1.0 / factor:
            out.append(f"class '{name}': rendered boxes{seen} are {ratio:.2f}x the photos' "
                       f"(median {ren[name] * train_scale:.3f} vs {pho[name]:.3f} of the image "
                       f"diagonal; limit {factor:g}x): adjust {fix} or the part's unit")
    return out
