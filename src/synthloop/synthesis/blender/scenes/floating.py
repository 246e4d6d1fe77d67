"""The paper's scene: parts and distractors in free space, camera on a sphere, HDRI lighting
(plus optional point lights), a photo composited behind. Adds no objects of its own."""

from __future__ import annotations

RECIPE = (("camera", "camera_orbit"), ("hdri", "hdri"), ("lights", "point_lights"),
          ("parts", "parts_floating"), ("part_materials", "part_materials"),
          ("distractors", "distractors_floating"),
          ("distractor_materials", "distractor_materials"))


def build(scene, shapes: dict, plans: list[dict], root) -> None:
    return None


def randomize(state: None, plan: dict, materials) -> None:
    return None


def settle(state: None, parts: list, plan: dict) -> list[bool]:
    """Every part stays where the plan put it."""
    return [True] * len(parts)
