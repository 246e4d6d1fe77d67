"""Scene sampling plan (host side): every random choice for every image, as plain JSON.

Image ``i`` draws from ``numpy.random.default_rng([domain.seed, i])`` in a fixed order, so it
is identical whichever shard (or rerun) renders it. Scene randomizers are named presets
(``SCENE_PRESETS``); materials come from ``blender.presets.MATERIALS``.

Conventions: metres, Blender world axes (+z up); quaternions are ``[w, x, y, z]``; the camera
sits at ``look_at + distance * (cos el cos az, cos el sin az, sin el)`` looking at ``look_at``.
"""

from __future__ import annotations

import colorsys
from typing import Callable

import numpy as np

from synthloop.config import DomainConfig, PartSpec
from synthloop.synthesis.backgrounds import get_background_source
from synthloop.synthesis.blender.presets import (DISTRACTOR_MATERIALS, DISTRACTOR_SHAPES,
                                                 MATERIALS, check_materials)


def _r(x: float) -> float:
    return round(float(x), 6)


def _uniform(rng: np.random.Generator, rng_cfg) -> float:
    return _r(rng.uniform(rng_cfg.min, rng_cfg.max))


def _quaternion(rng: np.random.Generator) -> list[float]:
    """A uniformly random rotation, [w, x, y, z]."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return [_r(v) for v in q]


def _appearance(rng: np.random.Generator, material: str) -> dict:
    p = MATERIALS[material]
    rgb = colorsys.hsv_to_rgb(rng.uniform(*p["hue"]) % 1.0, rng.uniform(*p["sat"]),
                              rng.uniform(*p["val"]))
    return {"material": material, "color": [_r(c) for c in rgb],
            "roughness": _r(rng.uniform(*p["rough"]))}


def _floating(rng: np.random.Generator, domain: DomainConfig, num_classes: int) -> dict:
    """Parts floating near the origin, distractors around and in front, an orbiting camera."""
    look_at = rng.uniform(-0.03, 0.03, 3)
    dist = _uniform(rng, domain.camera_distance)
    el, az = _uniform(rng, domain.camera_elevation_deg), _r(rng.uniform(0.0, 360.0))
    cam_dir = np.array([np.cos(np.radians(el)) * np.cos(np.radians(az)),
                        np.cos(np.radians(el)) * np.sin(np.radians(az)), np.sin(np.radians(el))])
    camera = {"distance": dist, "elevation_deg": el, "azimuth_deg": az,
              "look_at": [_r(v) for v in look_at], "roll_deg": _r(rng.uniform(-15, 15)),
              "focal_length_mm": _uniform(rng, domain.focal_length_mm)}
    hdri = {"pick": _r(rng.random()), "strength": _uniform(rng, domain.hdri_strength),
            "rotation_deg": _r(rng.uniform(0, 360))}
    n_parts = int(rng.integers(domain.parts_per_image.min, domain.parts_per_image.max + 1))
    spread = 0.0 if n_parts == 1 else 0.04 + 0.02 * n_parts
    parts = []
    for _ in range(n_parts):
        loc = rng.uniform(-spread, spread, 3) + rng.uniform(-0.01, 0.01, 3)
        material = domain.materials[int(rng.integers(len(domain.materials)))]
        parts.append({"class_index": int(rng.integers(num_classes)),
                      "location": [_r(v) for v in loc], "rotation_quat": _quaternion(rng),
                      **_appearance(rng, material)})
    n_dis = int(rng.integers(domain.distractors.min, domain.distractors.max + 1))
    distractors = []
    for _ in range(n_dis):
        if rng.random() < 0.35:  # an occluder on the way to the camera
            t = rng.uniform(0.3, 0.65)
            loc = look_at + cam_dir * dist * t + rng.uniform(-0.05, 0.05, 3) * (1 - t)
            size = rng.uniform(0.01, 0.03)
        else:  # clutter around the parts
            loc = look_at + rng.uniform(-0.16, 0.16, 3)
            size = rng.uniform(0.015, 0.06)
        shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
        scale = size * rng.uniform(0.6, 1.4, 3)
        if shape == "plate":
            scale[2] *= 0.12
        material = DISTRACTOR_MATERIALS[int(rng.integers(len(DISTRACTOR_MATERIALS)))]
        distractors.append({"shape": shape, "location": [_r(v) for v in loc],
                            "rotation_quat": _quaternion(rng), "scale": [_r(v) for v in scale],
                            **_appearance(rng, material)})
    return {"camera": camera, "hdri": hdri, "parts": parts, "distractors": distractors}


SCENE_PRESETS: dict[str, Callable[[np.random.Generator, DomainConfig, int], dict]] = {
    "floating": _floating,
}


def get_scene_preset(name: str) -> Callable[[np.random.Generator, DomainConfig, int], dict]:
    if name not in SCENE_PRESETS:
        raise ValueError(f"unknown scene preset '{name}'; known: {sorted(SCENE_PRESETS)}")
    return SCENE_PRESETS[name]


def image_seed(domain_seed: int, index: int) -> list[int]:
    """The entropy for image ``index``: independent of sharding and of the other images."""
    return [int(domain_seed) % 2**63, int(index)]


def plan_scenes(domain: DomainConfig, parts: list[PartSpec], *, start: int = 0,
                count: int | None = None) -> list[dict]:
    """Per-image scene parameters for images ``start .. start+count-1`` (JSON-serialisable).

    Each dict holds ``index``, ``seed``, ``camera``, ``hdri``, ``parts`` (class index, pose,
    material), ``distractors``, ``background`` (a choice for ``backgrounds.render_background``)
    and ``sensor`` (noise/blur/JPEG/colour-gain values and a seed).
    """
    if not parts:
        raise ValueError("plan_scenes: no parts given")
    count = domain.num_images - start if count is None else count
    if start < 0 or count < 0:
        raise ValueError(f"plan_scenes: start {start} and count {count} must be >= 0")
    check_materials(domain.materials)
    sample_scene = get_scene_preset(domain.scene)
    backgrounds = get_background_source(domain.backgrounds)
    s = domain.sensor
    plans = []
    for index in range(start, start + count):
        rng = np.random.default_rng(image_seed(domain.seed, index))
        scene = sample_scene(rng, domain, len(parts))
        background = backgrounds.choose(rng)
        sensor = {"noise_std": _uniform(rng, s.noise_std), "blur_sigma": _uniform(rng, s.blur_sigma),
                  "jpeg_quality": int(rng.integers(s.jpeg_quality.min, s.jpeg_quality.max + 1)),
                  "color_gain": [_uniform(rng, s.color_gain) for _ in range(3)],
                  "seed": int(rng.integers(0, 2**31 - 1))}
        plans.append({"index": index, "seed": int(rng.integers(0, 2**31 - 1)), **scene,
                      "background": background, "sensor": sensor})
    return plans
