"""Named scene randomizers: each draws one aspect of a scene from its own seeded stream.

A randomizer is ``f(rng, ctx, scene) -> value``: ``rng`` is private to (domain seed, image
index, randomizer name), so changing one randomizer's settings never changes what the others
draw; ``scene`` holds what earlier randomizers of the preset drew (the camera for occluders,
the table for dropped parts). Look them up by name with ``get_randomizer``.

Sampling weights (``DomainConfig.sampling_weights``, set by failure steering: stages/steer.py)
reshape a range's draw: a bin by weight, then uniform inside it, from the same one uniform draw
(``weighted_bin``), so the stream's later draws stay in place. A range without weights draws
exactly as it always has (the plan is byte-identical).

Conventions: metres, Blender world axes (+z up); quaternions ``[w, x, y, z]``; the camera sits at
``look_at + distance * (cos el cos az, cos el sin az, sin el)`` looking at ``look_at``.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from synthloop.config import DomainConfig, PartSpec
from synthloop.synthesis.assets import Assets
from synthloop.synthesis.blender.presets import (CLUTTER_SHAPES, FLOOR_MATERIALS, MATERIALS,
                                                 PATTERNS, PRIMITIVE_SHAPES, TABLE_MATERIALS,
                                                 TEXTURE_PREFIX, kelvin_to_rgb)
from synthloop.synthesis.prints import PRINT_DESIGNS


@dataclass(frozen=True)
class Context:
    domain: DomainConfig
    parts: list[PartSpec]
    assets: Assets


def _r(x: float) -> float:
    return round(float(x), 6)


def _vec(v) -> list[float]:
    return [_r(x) for x in v]


def _uniform(rng: np.random.Generator, rng_cfg) -> float:
    return _r(rng.uniform(rng_cfg.min, rng_cfg.max))


def _count(rng: np.random.Generator, rng_cfg) -> int:
    return int(rng.integers(rng_cfg.min, rng_cfg.max + 1))


def weighted_bin(u: float, weights) -> tuple[int, float]:
    """The bin that ``u`` in [0, 1) falls in when bins have probability ``weights / sum``, and
    where inside it (a fraction in [0, 1), itself uniform given the bin): one uniform draw gives
    "a bin by weight, then uniform inside it" and keeps the stream's later draws in place."""
    p = np.asarray(weights, np.float64)
    cdf = np.cumsum(p / p.sum())
    b = min(int(np.searchsorted(cdf, u, side="right")), len(p) - 1)
    start = cdf[b - 1] if b else 0.0
    return b, float(min(max((u - start) / (cdf[b] - start), 0.0), np.nextafter(1.0, 0.0)))


def _draw(rng: np.random.Generator, domain: DomainConfig, key: str) -> float:
    """``domain.<key>`` uniformly, or, with ``domain.sampling_weights[key]``, a bin of equal width
    by weight and a uniform value inside it (without weights: the very same draw as ever)."""
    weights, r = domain.sampling_weights.get(key), getattr(domain, key)
    if weights is None:
        return _uniform(rng, r)
    b, frac = weighted_bin(rng.random(), weights)
    return _r(min(r.min + (b + frac) * (r.max - r.min) / len(weights), r.max))


def _draw_count(rng: np.random.Generator, domain: DomainConfig, key: str) -> int:
    """``domain.<key>`` (a count) uniformly, or with its weights: the values min..max cut
    into ``len(weights)`` runs of (nearly) equal length (``count_bin_starts``), a run by
    weight, a value uniformly inside it."""
    weights, r = domain.sampling_weights.get(key), getattr(domain, key)
    if weights is None:
        return _count(rng, r)
    b, frac = weighted_bin(rng.random(), weights)
    starts = count_bin_starts(r.min, r.max, len(weights))
    return int(starts[b] + min(int(frac * (starts[b + 1] - starts[b])),
                               starts[b + 1] - starts[b] - 1))


def count_bin_starts(lo: int, hi: int, bins: int) -> list[int]:
    """Where each of ``bins`` runs of the values lo..hi starts, plus hi + 1 at the end."""
    n = hi - lo + 1
    return [lo + (k * n) // bins for k in range(bins + 1)]


def _quaternion(rng: np.random.Generator) -> list[float]:
    """A uniformly random rotation, [w, x, y, z]."""
    q = rng.normal(size=4)
    return _vec(q / np.linalg.norm(q))


def _yaw(rng: np.random.Generator, lo: float = 0.0, hi: float = 2 * np.pi) -> list[float]:
    a = rng.uniform(lo, hi) / 2
    return _vec([np.cos(a), 0.0, 0.0, np.sin(a)])


def appearance(rng: np.random.Generator, entry: str, assets: Assets) -> dict:
    """One material draw: preset name, linear RGB colour, roughness (and texture file/pattern)."""
    if entry.startswith(TEXTURE_PREFIX):
        files = assets.textures[entry]
        return {"material": "texture", "texture": files[int(rng.integers(len(files)))],
                "color": _vec(rng.uniform(0.8, 1.0, 3)), "roughness": _r(rng.uniform(0.3, 0.9)),
                "tex_scale": _r(rng.uniform(2.0, 12.0))}
    p = MATERIALS[entry]
    rgb = colorsys.hsv_to_rgb(rng.uniform(*p["hue"]) % 1.0, rng.uniform(*p["sat"]),
                              rng.uniform(*p["val"]))
    out = {"material": entry, "color": _vec(rgb), "roughness": _r(rng.uniform(*p["rough"]))}
    if p["texture"] == "print":
        out.update(print=int(rng.integers(PRINT_DESIGNS)), tex_scale=1.0)
    if p["texture"] == "pattern":
        second = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 1.0), rng.uniform(0.05, 0.95))
        out.update(color2=_vec(second), pattern=int(rng.integers(len(PATTERNS))),
                   tex_scale=_r(np.exp(rng.uniform(np.log(2.0), np.log(60.0)))))
    return out


# ------------------------------------------------------------------------------ camera
def _camera(rng, domain: DomainConfig, look_at: np.ndarray) -> dict:
    return {"distance": _draw(rng, domain, "camera_distance"),
            "elevation_deg": _draw(rng, domain, "camera_elevation_deg"),
            "azimuth_deg": _draw(rng, domain, "camera_azimuth_deg"),
            "look_at": _vec(look_at), "roll_deg": _draw(rng, domain, "camera_roll_deg"),
            "focal_length_mm": _draw(rng, domain, "focal_length_mm")}


def camera_orbit(rng, ctx: Context, scene: dict) -> dict:
    """Camera on a sphere around the origin (distance, elevation, azimuth, roll, focal length
    from the config), looking at the origin moved by up to ``look_at_jitter_m`` on each axis."""
    j = ctx.domain.look_at_jitter_m
    return _camera(rng, ctx.domain, rng.uniform(-j, j, 3))


def camera_overhead(rng, ctx: Context, scene: dict) -> dict:
    """Camera above the table top (z = 0) looking at a point of it jittered in x/y by up to
    ``look_at_jitter_m``; ``camera_elevation_deg`` is the tilt (90 = straight down)."""
    j = ctx.domain.look_at_jitter_m
    return _camera(rng, ctx.domain, np.array([*rng.uniform(-j, j, 2), 0.0]))


# ---------------------------------------------------------------------------- lighting
def hdri(rng, ctx: Context, scene: dict) -> dict:
    """Environment map: a uniform choice (``pick`` in [0, 1) indexes the HDRI list), strength
    and rotation about z from ``hdri_strength`` / ``hdri_rotation_deg``."""
    return {"pick": _r(rng.random()), "strength": _draw(rng, ctx.domain, "hdri_strength"),
            "rotation_deg": _draw(rng, ctx.domain, "hdri_rotation_deg")}


def point_lights(rng, ctx: Context, scene: dict) -> list[dict]:
    """``point_lights`` lamps on a half-sphere around the camera's target: power (W), colour
    temperature (K, stored also as linear RGB) and radius (soft shadows)."""
    d = ctx.domain
    cam = scene.get("camera", {"look_at": [0.0, 0.0, 0.0], "distance": 1.0})
    out = []
    for _ in range(_draw_count(rng, d, "point_lights")):
        el, az = np.radians(rng.uniform(20, 85)), rng.uniform(0, 2 * np.pi)
        r = cam["distance"] * rng.uniform(0.6, 2.0)
        loc = np.asarray(cam["look_at"]) + r * np.array([np.cos(el) * np.cos(az),
                                                         np.cos(el) * np.sin(az), np.sin(el)])
        kelvin = _draw(rng, d, "point_light_kelvin")
        out.append({"location": _vec(loc), "power_w": _draw(rng, d, "point_light_power_w"),
                    "kelvin": kelvin, "color": list(kelvin_to_rgb(kelvin)),
                    "radius": _r(rng.uniform(0.02, 0.15))})
    return out


# ------------------------------------------------------------------------------- parts
def _part_identity(rng, ctx: Context) -> dict:
    c = int(rng.integers(len(ctx.parts)))
    v = int(rng.integers(ctx.assets.variants[c]))
    return {"class_index": c, "variant": v, "mesh_index": ctx.assets.mesh_index(c, v)}


def parts_floating(rng, ctx: Context, scene: dict) -> list[dict]:
    """``parts_per_image`` parts of uniformly drawn classes and variants near the origin, each
    uniformly rotated; several parts spread out so that they overlap only sometimes."""
    n = _draw_count(rng, ctx.domain, "parts_per_image")
    spread = 0.0 if n == 1 else 0.04 + 0.02 * n
    out = []
    for _ in range(n):
        loc = rng.uniform(-spread, spread, 3) + rng.uniform(-0.01, 0.01, 3)
        out.append({**_part_identity(rng, ctx), "location": _vec(loc),
                    "rotation_quat": _quaternion(rng)})
    return out


def parts_dropped(rng, ctx: Context, scene: dict) -> list[dict]:
    """``parts_per_image`` parts released above the table in random orientations, spaced
    ~5 cm apart where the table allows; the worker's rigid-body simulation lets them settle."""
    wb, table = ctx.domain.workbench, scene["table"]
    half = np.asarray(table["size"]) / 2 * 0.8
    placed: list[np.ndarray] = []
    out = []
    for k in range(_draw_count(rng, ctx.domain, "parts_per_image")):
        for _ in range(30):
            xy = rng.uniform(-half, half)
            if all(np.hypot(*(xy - p)) > 0.05 for p in placed):
                break
        placed.append(xy)
        z = _uniform(rng, wb.drop_height_m) + 0.01 * k
        out.append({**_part_identity(rng, ctx), "location": _vec([*xy, z]),
                    "rotation_quat": _quaternion(rng)})
    return out


def part_materials(rng, ctx: Context, scene: dict) -> list[dict]:
    """A material per part from its class's pool (``PartSpec.materials``, else the domain's
    ``materials``), with colour and roughness drawn from the preset's ranges."""
    out = []
    for item in scene["parts"]:
        pool = ctx.parts[item["class_index"]].materials or ctx.domain.materials
        out.append(appearance(rng, pool[int(rng.integers(len(pool)))], ctx.assets))
    return out


# -------------------------------------------------------------------------- distractors
def _shape(rng, ctx: Context, shipped: tuple[str, ...]) -> str:
    user = ctx.assets.distractor_meshes
    if user:
        return f"mesh:{int(rng.integers(len(user)))}"
    return shipped[int(rng.integers(len(shipped)))]


def distractors_floating(rng, ctx: Context, scene: dict) -> list[dict]:
    """``distractors`` objects (user meshes, else shipped primitives): about a third on the way
    to the camera as occluders, the rest around the parts; random pose and size (1-6 cm)."""
    cam = scene["camera"]
    el, az = np.radians(cam["elevation_deg"]), np.radians(cam["azimuth_deg"])
    cam_dir = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    look_at = np.asarray(cam["look_at"])
    out = []
    for _ in range(_draw_count(rng, ctx.domain, "distractors")):
        if rng.random() < 0.35:  # an occluder on the way to the camera
            t = rng.uniform(0.3, 0.65)
            loc = look_at + cam_dir * cam["distance"] * t + rng.uniform(-0.05, 0.05, 3) * (1 - t)
            size = rng.uniform(0.01, 0.03)
        else:  # clutter around the parts
            loc = look_at + rng.uniform(-0.16, 0.16, 3)
            size = rng.uniform(0.015, 0.06)
        shape = _shape(rng, ctx, PRIMITIVE_SHAPES)
        scale = size * rng.uniform(0.6, 1.4, 3)
        if shape == "plate":
            scale[2] *= 0.12
        out.append({"shape": shape, "location": _vec(loc), "rotation_quat": _quaternion(rng),
                    "scale": _vec(scale)})
    return out


_CLUTTER_SIZE = {"box": ((0.15, 0.45), (0.15, 0.4), (0.1, 0.35)),
                 "bottle": ((0.06, 0.09), (0.06, 0.09), (0.18, 0.32)),
                 "can": ((0.06, 0.1), (0.06, 0.1), (0.1, 0.2)),
                 "pack": ((0.1, 0.25), (0.08, 0.18), (0.03, 0.08))}


def clutter_floor(rng, ctx: Context, scene: dict) -> list[dict]:
    """``distractors`` objects standing on the floor around the table (boxes, bottles, cans,
    packs; or user meshes), upright with a random heading, never under the table top."""
    table = scene["table"]
    floor_z = -table["height"]
    half = np.asarray(table["size"]) / 2
    out = []
    for _ in range(_draw_count(rng, ctx.domain, "distractors")):
        shape = _shape(rng, ctx, CLUTTER_SHAPES)
        dims = [rng.uniform(*r) for r in _CLUTTER_SIZE.get(shape, _CLUTTER_SIZE["box"])]
        side = rng.integers(4)  # which side of the table, then a spot along it
        along = rng.uniform(-1.6, 1.6) * half[(side + 1) % 2]
        away = half[side % 2] + 0.05 + max(dims[:2]) / 2 + rng.uniform(0.0, 0.6)
        xy = [away, along] if side % 2 == 0 else [along, away]
        xy = np.asarray(xy) * (1 if side < 2 else -1)
        out.append({"shape": shape, "location": _vec([*xy, floor_z + dims[2] / 2]),
                    "rotation_quat": _yaw(rng), "scale": _vec(dims)})
    return out


def distractor_materials(rng, ctx: Context, scene: dict) -> list[dict]:
    """A material per distractor from ``distractor_materials`` (presets, ``random_texture``
    patterns, or ``texture:`` image pools)."""
    pool = ctx.domain.distractor_materials
    return [appearance(rng, pool[int(rng.integers(len(pool)))], ctx.assets)
            for _ in scene["distractors"]]


# ------------------------------------------------------------------------------- table
def table(rng, ctx: Context, scene: dict) -> dict:
    """The workbench: a table top (side lengths from ``workbench.table_size_m``, top at z = 0)
    on legs, with ``workbench.sheets`` coloured paper sheets on it, over a terrazzo floor."""
    wb = ctx.domain.workbench
    size = [_uniform(rng, wb.table_size_m)] * 2
    size[1] = _r(size[0] * rng.uniform(0.75, 1.0))
    sheets = []
    for _ in range(_count(rng, wb.sheets)):
        dims = [0.21, 0.297] if rng.random() < 0.6 else [0.297, 0.42]
        xy = rng.uniform(-0.35, 0.35, 2) * np.asarray(size)
        sheets.append({"size": dims, "location": _vec([*xy, 0.0]), "rotation_quat": _yaw(rng),
                       **appearance(rng, "paper_sheet", ctx.assets)})
    pick = lambda pool: pool[int(rng.integers(len(pool)))]  # noqa: E731
    legs = appearance(rng, "plastic", ctx.assets)
    legs["color"] = [_r(rng.uniform(0.6, 0.85))] * 3 if rng.random() < 0.7 else legs["color"]
    top = appearance(rng, pick(TABLE_MATERIALS), ctx.assets)
    return {"size": size, "height": wb.table_height_m, "top": top, "legs": legs, "sheets": sheets,
            "floor": appearance(rng, pick(FLOOR_MATERIALS), ctx.assets),
            "physics_frames": wb.physics_frames}


RANDOMIZERS: dict[str, Callable] = {f.__name__: f for f in (
    camera_orbit, camera_overhead, hdri, point_lights, parts_floating, parts_dropped,
    part_materials, distractors_floating, clutter_floor, distractor_materials, table)}


def get_randomizer(name: str) -> Callable:
    """The randomizer called ``name``; an unknown name raises ValueError listing the known."""
    if name not in RANDOMIZERS:
        raise ValueError(f"unknown randomizer '{name}'; known: {sorted(RANDOMIZERS)}")
    return RANDOMIZERS[name]
