"""Every named randomizer is deterministic per (seed, image), independent of the others, and
respects its configured ranges; the workbench layout is physically sensible."""

import json

import numpy as np
import pytest

from synthloop.config import DomainConfig, IntRange, PartSpec, Range
from synthloop.synthesis.assets import Assets
from synthloop.synthesis.blender.presets import kelvin_to_rgb
from synthloop.synthesis.plan import get_scene_preset, plan_scenes, scene_presets, stream
from synthloop.synthesis.randomizers import RANDOMIZERS, Context, get_randomizer

PARTS = [PartSpec(name="a", procedural="turbine_blade"),
         PartSpec(name="b", procedural="turbine_blade")]
ASSETS = Assets(variants=(1, 3))


def _domain(**kw) -> DomainConfig:
    base = dict(num_images=6, seed=5, parts_per_image=IntRange(min=1, max=4),
                distractors=IntRange(min=1, max=5), point_lights=IntRange(min=0, max=3),
                distractor_materials=["random_texture", "plastic"])
    return DomainConfig(**{**base, **kw})


def _scene_for(name: str, domain: DomainConfig, index: int = 0) -> dict:
    """Run the preset's randomizers up to and including ``name`` (its inputs)."""
    ctx = Context(domain=domain, parts=PARTS, assets=ASSETS)
    preset = "workbench" if name in ("table", "camera_overhead", "parts_dropped",
                                     "clutter_floor") else "floating"
    scene: dict = {}
    for key, rname in get_scene_preset(preset):
        scene[key] = get_randomizer(rname)(stream(domain.seed, index, rname), ctx, scene)
        if rname == name:
            return scene[key]
    pytest.fail(f"{name} is in no preset")


@pytest.mark.parametrize("name", sorted(RANDOMIZERS))
def test_each_randomizer_is_deterministic_and_seeded(name):
    domain = _domain()
    a, b = _scene_for(name, domain), _scene_for(name, domain)
    assert a == b and json.loads(json.dumps(a)) == a
    others = [_scene_for(name, domain, index=i) for i in range(1, 6)]
    others += [_scene_for(name, _domain(seed=6))]
    if a or any(others):  # empty lists (no lights drawn) may repeat
        assert any(o != a for o in others)


def test_every_preset_randomizer_is_registered():
    for preset in scene_presets().values():
        for _, name in preset:
            assert name in RANDOMIZERS and RANDOMIZERS[name].__doc__
    with pytest.raises(ValueError, match="unknown randomizer 'wind'.*camera_orbit"):
        get_randomizer("wind")
    with pytest.raises(ValueError, match="unknown scene preset 'space'.*floating.*workbench"):
        get_scene_preset("space")


def test_randomizers_draw_from_private_streams():
    base = plan_scenes(_domain(), PARTS, assets=ASSETS)
    more = plan_scenes(_domain(distractors=IntRange(min=7, max=9),
                               materials=["aluminium"]), PARTS, assets=ASSETS)
    for a, b in zip(base, more):
        assert a["camera"] == b["camera"] and a["hdri"] == b["hdri"]
        strip = lambda ps: [{k: p[k] for k in ("class_index", "variant", "location",
                                               "rotation_quat")} for p in ps]  # noqa: E731
        assert strip(a["parts"]) == strip(b["parts"])
        assert len(b["distractors"]) >= 7 and all(p["material"] == "aluminium" for p in b["parts"])


def test_ranges_variants_and_lights():
    domain = _domain(camera_azimuth_deg=Range(min=10, max=20), point_lights=IntRange(min=2, max=2),
                     point_light_kelvin=Range(min=2700, max=2700))
    for p in plan_scenes(domain, PARTS, assets=ASSETS):
        assert 10 <= p["camera"]["azimuth_deg"] <= 20
        for part in p["parts"]:
            assert part["mesh_index"] == (0 if part["class_index"] == 0 else 1 + part["variant"])
        assert len(p["lights"]) == 2 and p["lights"][0]["color"] == list(kelvin_to_rgb(2700))
        for d in p["distractors"]:
            if d["material"] == "random_texture":
                assert {"color2", "pattern", "tex_scale"} <= set(d)


def test_kelvin_colours():
    warm, day, cold = kelvin_to_rgb(2700), kelvin_to_rgb(6500), kelvin_to_rgb(12000)
    assert warm[0] == 1.0 and warm[2] < 0.4
    assert min(day) > 0.85
    assert cold[2] == 1.0 and cold[0] < 1.0


def test_workbench_layout():
    domain = _domain(scene="workbench", parts_per_image=IntRange(min=30, max=40),
                     distractors=IntRange(min=10, max=10))
    for p in plan_scenes(domain, PARTS, assets=ASSETS):
        sx, sy = p["table"]["size"]
        assert 0.5 <= sx <= 0.8 and sy <= sx
        for part in p["parts"]:  # released above the table top (z = 0), inside its edges
            x, y, z = part["location"]
            assert abs(x) < sx / 2 and abs(y) < sy / 2 and z > 0
        floor = -p["table"]["height"]
        for d in p["distractors"]:  # clutter stands on the floor, outside the table
            x, y, z = d["location"]
            assert abs(z - d["scale"][2] / 2 - floor) < 1e-5
            assert abs(x) > sx / 2 or abs(y) > sy / 2
        assert p["camera"]["look_at"][2] == 0.0 and len(p["parts"]) >= 30
        assert np.isclose(np.linalg.norm(p["parts"][0]["rotation_quat"]), 1.0, atol=1e-5)
