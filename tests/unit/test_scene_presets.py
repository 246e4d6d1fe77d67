"""A scene preset is one module of synthesis/blender/scenes/: a module added there (here written
into a folder that the test adds to the package's path, so no file of the project names it) is a
preset for the config, `synthloop init` and the host's plan; the render worker's side looks the
preset up by the job's scene name and names none itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from synthloop.config import DomainConfig, IntRange, PartSpec
from synthloop.synthesis.blender import scenes
from synthloop.synthesis.plan import plan_scenes, scene_presets

PARTS = [PartSpec(name="blade", procedural="turbine_blade")]
BLENDER = Path(scenes.__file__).resolve().parents[1]  # src/synthloop/synthesis/blender
NAME = "turntable_only"
PRESET = '''"""A preset of this test only: the paper's floating scene without point lights."""

RECIPE = (("camera", "camera_orbit"), ("hdri", "hdri"), ("parts", "parts_floating"),
          ("part_materials", "part_materials"), ("distractors", "distractors_floating"),
          ("distractor_materials", "distractor_materials"))


def build(scene, shapes, plans, root):
    return None


def randomize(state, plan, materials):
    return None


def settle(state, parts, plan):
    return [True] * len(parts)
'''


def add_preset(folder: Path, monkeypatch, name: str, text: str) -> str:
    (folder / f"{name}.py").write_text(text)
    monkeypatch.setattr(scenes, "__path__", [*scenes.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, f"{scenes.__name__}.{name}", raising=False)
    return name


@pytest.fixture
def added(tmp_path, monkeypatch):
    yield add_preset(tmp_path, monkeypatch, NAME, PRESET)
    sys.modules.pop(f"{scenes.__name__}.{NAME}", None)


def test_a_preset_module_is_a_preset_for_the_config_init_and_the_plan(added):
    assert added in scenes.scene_names()
    assert scene_presets()[added] == tuple(scenes.get_scene(added).RECIPE)
    domain = DomainConfig(num_images=3, seed=2, scene=added, parts_per_image=IntRange(min=1, max=2),
                          distractors=IntRange(min=2, max=2))
    plans = plan_scenes(domain, PARTS)
    assert [p["scene"] for p in plans] == [added] * 3
    for plan in plans:  # its recipe's draws (materials merged into the items), then the rest
        assert set(plan) == {"index", "scene", "seed", "camera", "hdri", "parts", "distractors",
                             "background", "sensor"}, sorted(plan)
        assert 1 <= len(plan["parts"]) <= 2 and len(plan["distractors"]) == 2
        assert all("material" in p for p in plan["parts"] + plan["distractors"])
    from typer.testing import CliRunner

    from synthloop.cli import app

    out = CliRunner().invoke(app, ["init", "--scene", "nowhere"])
    assert out.exit_code == 2 and f"one of floating, {added}, workbench" in out.output


def test_unknown_presets_and_short_recipes_are_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown scene preset 'nowhere'; known: floating, "
                                         "workbench"):
        DomainConfig(num_images=1, scene="nowhere")
    short = add_preset(tmp_path, monkeypatch, "no_distractors",
                       PRESET.replace('("distractors", "distractors_floating"),', ""))
    with pytest.raises(ValueError, match="scene preset 'no_distractors': its RECIPE draws no "
                                         "distractors \\(every preset draws camera, hdri"):
        plan_scenes(DomainConfig(num_images=1, scene=short), PARTS)
    sys.modules.pop(f"{scenes.__name__}.{short}", None)


def test_the_render_worker_looks_presets_up_and_names_none():
    """blender/scene.py builds, randomizes and settles through ``scenes.get_scene(job's
    scene)``; no module of the worker outside scenes/ branches on a preset's name."""
    names = set(scenes.scene_names())
    for path in sorted(BLENDER.glob("*.py")):
        tree = ast.parse(path.read_text())
        named = [(node.lineno, node.value) for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and node.value in names]
        assert not named, f"{path.name} names scene presets: {named}"
    text = (BLENDER / "scene.py").read_text()
    assert "scenes.get_scene(" in text
    for step in ("build(", "randomize(", "settle("):
        assert f'preset.{step}' in text or f'h["preset"].{step}' in text, step
