"""Named material and distractor presets, shared by the host plan and the Blender worker.

Pure data (no bpy): the host samples colours/roughness from these ranges, the worker builds one
procedural Cycles material per name. Colours are linear RGB sampled in HSV.
"""

from __future__ import annotations

# hue, saturation, value ranges (0..1); roughness range; metallic; anisotropic; texture style
MATERIALS: dict[str, dict] = {
    "brushed_steel": dict(hue=(0.55, 0.62), sat=(0.0, 0.08), val=(0.55, 0.8), rough=(0.18, 0.4),
                          metallic=1.0, anisotropic=0.7, texture="brushed"),
    "dark_blue_metal": dict(hue=(0.58, 0.66), sat=(0.45, 0.85), val=(0.06, 0.2), rough=(0.2, 0.45),
                            metallic=0.9, anisotropic=0.0, texture="speckle"),
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
}

DISTRACTOR_SHAPES = ("cube", "sphere", "cylinder", "cone", "torus", "plate")
DISTRACTOR_MATERIALS = ("plastic", "painted_metal", "rubber", "brushed_steel", "cast_iron")

PART_INDEX_BASE = 1  # parts get pass_index 1..P (the instance number inside the image)
DISTRACTOR_INDEX_BASE = 1001  # distractors get 1001.. so they can never pass for a part


def check_materials(names: list[str] | tuple[str, ...]) -> None:
    """Raise ValueError naming unknown material presets and listing the known ones."""
    unknown = [n for n in names if n not in MATERIALS]
    if unknown:
        raise ValueError(f"unknown material preset(s) {unknown}; known: {sorted(MATERIALS)}")
    if not names:
        raise ValueError(f"no material presets given; known: {sorted(MATERIALS)}")
