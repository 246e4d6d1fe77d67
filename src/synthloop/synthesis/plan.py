"""Scene sampling plan (host side): every random choice for every image, as plain JSON.

A scene preset is an ordered list of ``(key, randomizer)``; each randomizer draws from
``numpy.random.default_rng([domain.seed, index, crc32(name)])``, so image ``i`` is identical
whichever shard (or rerun) renders it, and one randomizer's settings never shift another's
draws. The presets and their recipes are modules of synthesis/blender/scenes/ (``floating``:
the paper's scene; ``workbench``: parts dropped onto a table), one file each with the worker's
side of the preset.
"""

from __future__ import annotations

import zlib

import numpy as np

from synthloop.config import DomainConfig, PartSpec
from synthloop.synthesis.assets import Assets, resolve_assets
from synthloop.synthesis.backgrounds import get_background_source
from synthloop.synthesis.blender.scenes import get_scene, scene_names
from synthloop.synthesis.randomizers import RANDOMIZERS, Context, get_randomizer

# What every preset's recipe draws: the plan's materials step, the render worker and the image
# records read these keys (``lights`` and a preset's own, like workbench's ``table``, optional).
RECIPE_KEYS = ("camera", "hdri", "parts", "part_materials", "distractors", "distractor_materials")


def get_scene_preset(name: str) -> tuple[tuple[str, str], ...]:
    """The recipe of preset ``name`` (its module's ``RECIPE``). ValueError listing the known
    presets for an unknown name, or naming the ``RECIPE_KEYS`` its recipe does not draw."""
    recipe = tuple(get_scene(name).RECIPE)
    missing = [k for k in RECIPE_KEYS if k not in {key for key, _ in recipe}]
    if missing:
        raise ValueError(f"scene preset {name!r}: its RECIPE draws no {', '.join(missing)} "
                         f"(every preset draws {', '.join(RECIPE_KEYS)})")
    return recipe


def scene_presets() -> dict[str, tuple[tuple[str, str], ...]]:
    """Every preset's recipe, by name."""
    return {name: get_scene_preset(name) for name in scene_names()}


def image_seed(domain_seed: int, index: int) -> list[int]:
    """The entropy for image ``index``: independent of sharding and of the other images."""
    return [int(domain_seed) % 2**63, int(index)]


def stream(domain_seed: int, index: int, name: str) -> np.random.Generator:
    """The private random stream of randomizer ``name`` for image ``index``."""
    return np.random.default_rng([*image_seed(domain_seed, index), zlib.crc32(name.encode())])


def _sensor(rng: np.random.Generator, domain: DomainConfig) -> dict:
    s = domain.sensor
    u = lambda r: round(float(rng.uniform(r.min, r.max)), 6)  # noqa: E731
    return {"noise_std": u(s.noise_std), "blur_sigma": u(s.blur_sigma),
            "jpeg_quality": int(rng.integers(s.jpeg_quality.min, s.jpeg_quality.max + 1)),
            "color_gain": [u(s.color_gain) for _ in range(3)],
            "seed": int(rng.integers(0, 2**31 - 1))}


def plan_image(ctx: Context, index: int, backgrounds) -> dict:
    """The scene of image ``index``: every randomizer of the preset, then background/sensor."""
    seed = ctx.domain.seed
    scene: dict = {"index": index, "scene": ctx.domain.scene}
    for key, name in get_scene_preset(ctx.domain.scene):
        scene[key] = get_randomizer(name)(stream(seed, index, name), ctx, scene)
    for kind in ("part", "distractor"):
        for item, look in zip(scene[f"{kind}s"], scene.pop(f"{kind}_materials")):
            item.update(look)
    scene["background"] = backgrounds.choose(stream(seed, index, "background"))
    scene["sensor"] = _sensor(stream(seed, index, "sensor"), ctx.domain)
    scene["seed"] = int(stream(seed, index, "render_seed").integers(0, 2**31 - 1))
    return scene


def plan_scenes(domain: DomainConfig, parts: list[PartSpec], *, start: int = 0,
                count: int | None = None, assets: Assets | None = None) -> list[dict]:
    """Per-image scene parameters for images ``start .. start+count-1`` (JSON-serialisable).

    Each dict holds ``index``, ``scene``, ``seed`` (Cycles), ``camera``, ``hdri``, ``lights``,
    ``parts`` (class, variant, mesh index, pose, material), ``distractors``, for workbench
    ``table``, plus ``background`` (a choice for ``backgrounds.render_background``) and
    ``sensor`` (noise/blur/JPEG/colour-gain values and a seed). ``assets`` defaults to
    ``resolve_assets(domain, parts)`` (which checks every input first).
    """
    count = domain.num_images - start if count is None else count
    if start < 0 or count < 0:
        raise ValueError(f"plan_scenes: start {start} and count {count} must be >= 0")
    get_scene_preset(domain.scene)
    assets = assets or resolve_assets(domain, parts)
    ctx = Context(domain=domain, parts=list(parts), assets=assets)
    backgrounds = get_background_source(domain.backgrounds)
    return [plan_image(ctx, index, backgrounds) for index in range(start, start + count)]


__all__ = ["RANDOMIZERS", "get_scene_preset", "scene_presets", "image_seed", "plan_image",
           "plan_scenes", "stream", "RECIPE_KEYS"]
