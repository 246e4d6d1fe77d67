"""Named presets shared by the host plan and the Blender worker: materials, shapes, quality.

Pure data and math (no bpy, no numpy): the host samples colours/roughness from these ranges,
the worker builds one procedural Cycles material per name. Colours are linear RGB sampled in
HSV. No material needs UV coordinates: textures are evaluated in object space.
"""

from __future__ import annotations

import math

# hue, saturation, value ranges (0..1); roughness range; metallic; anisotropic; texture style
MATERIALS: dict[str, dict] = {
    "brushed_steel": dict(hue=(0.55, 0.62), sat=(0.0, 0.08), val=(0.55, 0.8), rough=(0.18, 0.4),
                          metallic=1.0, anisotropic=0.7, texture="brushed"),
    "dark_blue_metal": dict(hue=(0.58, 0.66), sat=(0.45, 0.85), val=(0.06, 0.2), rough=(0.2, 0.45),
                            metallic=0.9, anisotropic=0.0, texture="speckle"),
    "zinc_plated": dict(hue=(0.5, 0.62), sat=(0.02, 0.12), val=(0.6, 0.85), rough=(0.22, 0.45),
                        metallic=1.0, anisotropic=0.0, texture="speckle"),
    "painted_metal": dict(hue=(0.0, 1.0), sat=(0.45, 0.9), val=(0.25, 0.75), rough=(0.3, 0.6),
                          metallic=0.0, anisotropic=0.0, texture="speckle"),
    "aluminium": dict(hue=(0.55, 0.6), sat=(0.0, 0.04), val=(0.8, 0.93), rough=(0.12, 0.35),
                      metallic=1.0, anisotropic=0.3, texture="brushed"),
    "brass": dict(hue=(0.1, 0.14), sat=(0.45, 0.7), val=(0.55, 0.8), rough=(0.2, 0.4),
                  metallic=1.0, anisotropic=0.0, texture="speckle"),
    "cast_iron": dict(hue=(0.0, 1.0), sat=(0.0, 0.06), val=(0.12, 0.28), rough=(0.5, 0.8),
                      metallic=0.8, anisotropic=0.0, texture="rough"),
    "plastic": dict(hue=(0.0, 1.0), sat=(0.3, 0.95), val=(0.2, 0.9), rough=(0.3, 0.7),
                    metallic=0.0, anisotropic=0.0, texture="none"),
    "rubber": dict(hue=(0.0, 1.0), sat=(0.0, 0.2), val=(0.02, 0.08), rough=(0.7, 0.95),
                   metallic=0.0, anisotropic=0.0, texture="rough"),
    "cardboard": dict(hue=(0.07, 0.1), sat=(0.35, 0.55), val=(0.35, 0.6), rough=(0.8, 0.95),
                      metallic=0.0, anisotropic=0.0, texture="rough"),
    # random procedural pattern (noise, cells, waves, checker, stripes) mixing two random colours:
    # the paper's "random textures" for distractors, without image files
    "random_texture": dict(hue=(0.0, 1.0), sat=(0.2, 0.95), val=(0.1, 0.9), rough=(0.2, 0.9),
                           metallic=0.0, anisotropic=0.0, texture="pattern"),
    # surfaces of the workbench scene
    "laminate": dict(hue=(0.0, 1.0), sat=(0.0, 0.75), val=(0.3, 0.85), rough=(0.35, 0.7),
                     metallic=0.0, anisotropic=0.0, texture="speckle"),
    "wood": dict(hue=(0.06, 0.1), sat=(0.35, 0.65), val=(0.25, 0.6), rough=(0.4, 0.7),
                 metallic=0.0, anisotropic=0.0, texture="grain"),
    "terrazzo": dict(hue=(0.05, 0.12), sat=(0.05, 0.25), val=(0.35, 0.6), rough=(0.5, 0.8),
                     metallic=0.0, anisotropic=0.0, texture="terrazzo"),
    "paper_sheet": dict(hue=(0.0, 1.0), sat=(0.15, 0.6), val=(0.55, 0.95), rough=(0.7, 0.95),
                  metallic=0.0, anisotropic=0.0, texture="none"),
    # printed packaging (product labels, cartons with tape and shipping labels, bags): one of
    # synthesis.prints' designs, box-projected once per face, lightly tinted by the colour
    "printed": dict(hue=(0.0, 1.0), sat=(0.0, 0.1), val=(0.85, 1.0), rough=(0.3, 0.8),
                    metallic=0.0, anisotropic=0.0, texture="print"),
}
TEXTURE_PREFIX = "texture:"  # a material entry "texture:<file or folder>" uses image textures
PATTERNS = ("noise", "cells", "waves", "checker", "stripes")

PRIMITIVE_SHAPES = ("cube", "sphere", "cylinder", "cone", "torus", "plate")
CLUTTER_SHAPES = ("box", "bottle", "can", "pack")  # workbench floor clutter (shipped meshes)
DISTRACTOR_MATERIALS = ("plastic", "painted_metal", "rubber", "brushed_steel", "cast_iron")
TABLE_MATERIALS = ("laminate", "laminate", "laminate", "wood")
FLOOR_MATERIALS = ("terrazzo",)

PART_INDEX_BASE = 1  # parts get pass_index 1..P (the instance number inside the image)
DISTRACTOR_INDEX_BASE = 1001  # distractors and clutter get 1001.. so they never pass for a part
STATIC_INDEX = 3000  # table, floor, sheets

# Cycles settings per quality preset; samples and denoise stay explicit in the config.
# bounces: max, diffuse, glossy, transmission, transparent; denoiser: OIDN quality, prefilter
# (measured on 2 cores: HIGH with the FAST prefilter costs little more than FAST/FAST and gains
# ~0.7 dB; the ACCURATE prefilter costs ~2 s an image at 640x360); sample_map: the world's
# importance-map resolution, rebuilt whenever the HDRI changes (None: Blender's automatic, the
# HDRI's own size: 1024 for the studio lights, ~1 CPU-s a rebuild; 512: ~0.2 s, -0.1 dB).
# "blender_default" leaves all of Blender's own defaults (the paper's generator; benchmarks).
QUALITY: dict[str, dict] = {
    "draft": dict(bounces=(2, 1, 2, 0, 1), adaptive_threshold=0.1, denoiser=("FAST", "NONE"),
                  light_tree=False, sample_map=256),
    "default": dict(bounces=(4, 2, 3, 0, 2), adaptive_threshold=0.05, denoiser=("HIGH", "FAST"),
                    light_tree=False, sample_map=512),
    "paper": dict(bounces=(12, 4, 4, 12, 8), adaptive_threshold=0.01,
                  denoiser=("HIGH", "ACCURATE"), light_tree=True, sample_map=None),
    "blender_default": {},
}


def check_materials(names: list[str] | tuple[str, ...], *, what: str = "material") -> None:
    """Raise ValueError naming unknown material presets and listing the known ones.

    ``texture:<path>`` entries are checked by ``synthesis.assets`` (they need the filesystem).
    """
    unknown = [n for n in names if n not in MATERIALS and not n.startswith(TEXTURE_PREFIX)]
    if unknown:
        raise ValueError(f"unknown {what} preset(s) {unknown}; known: {sorted(MATERIALS)} "
                         f"or '{TEXTURE_PREFIX}<image file or folder>'")
    if not names:
        raise ValueError(f"no {what} presets given; known: {sorted(MATERIALS)}")


def kelvin_to_rgb(kelvin: float) -> tuple[float, float, float]:
    """Approximate linear RGB (max channel 1) of a black body at ``kelvin`` (1000-40000 K).

    Tanner Helland's fit of the CIE data, in sRGB, converted to linear.
    """
    t = min(max(kelvin, 1000.0), 40000.0) / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = (99.4708025861 * math.log(t) - 161.1195681661 if t <= 66
         else 288.1221695283 * (t - 60) ** -0.0755148492)
    b = (255.0 if t >= 66 else 0.0 if t <= 19
         else 138.5177312231 * math.log(t - 10) - 305.0447927307)
    srgb = [min(max(c / 255.0, 0.0), 1.0) for c in (r, g, b)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb]
    top = max(lin)
    return tuple(round(c / top, 6) for c in lin)
