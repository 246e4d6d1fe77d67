"""Scene presets, one module each: the module's name is the preset's name (``domain.scene``).

A preset module defines

- ``RECIPE``: ``((plan key, randomizer name), ...)``, what the host draws for every image, in
  order (synthesis/plan.py; randomizers: synthesis/randomizers.py); it draws at least
  ``plan.RECIPE_KEYS`` (camera, hdri, parts, part_materials, distractors, distractor_materials);
- ``build(scene, shapes, plans, root) -> state``: in the worker, once a job, the objects the
  preset adds (children of ``root``, the scene's turntable; ``shapes``: shipped meshes);
- ``randomize(state, plan, materials)``: per image, before the parts are settled;
- ``settle(state, parts, plan) -> list[bool]``: per image, which parts stay in the scene.

The modules import ``bpy`` inside those functions only: the host imports them for ``RECIPE``
and the names (config validation, ``synthloop init``), the render worker for the rest
(blender/scene.py looks the preset up here, never by name). Adding a preset is one file here.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

DEFAULT = "floating"


def scene_names() -> tuple[str, ...]:
    """The preset names: the modules of this package."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if not m.name.startswith("_")))


def get_scene(name: str) -> ModuleType:
    """The preset module ``name``; ValueError listing the known presets otherwise."""
    if name not in scene_names():
        raise ValueError(f"unknown scene preset {name!r}; known: {', '.join(scene_names())}")
    return importlib.import_module(f"{__name__}.{name}")


__all__ = ["DEFAULT", "get_scene", "scene_names"]
