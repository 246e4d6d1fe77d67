"""Scene plans: deterministic per image, independent of sharding, named presets only."""

import json

import pytest

from synthloop.config import DomainConfig, IntRange, PartSpec
from synthloop.synthesis.plan import plan_scenes

PARTS = [PartSpec(name="blade", procedural="turbine_blade"),
         PartSpec(name="other", procedural="turbine_blade")]


def _domain(**kw):
    base = dict(num_images=8, seed=7, distractors=IntRange(min=0, max=4),
                parts_per_image=IntRange(min=1, max=3))
    return DomainConfig(**{**base, **kw})


def test_same_seed_same_plan_and_json_serialisable():
    a, b = plan_scenes(_domain(), PARTS), plan_scenes(_domain(), PARTS)
    assert a == b
    assert json.loads(json.dumps(a)) == a
    assert [p["index"] for p in a] == list(range(8))


def test_image_is_the_same_whatever_shard_renders_it():
    full = plan_scenes(_domain(), PARTS)
    assert plan_scenes(_domain(), PARTS, start=5, count=2) == full[5:7]
    assert plan_scenes(_domain(num_images=100), PARTS, start=3, count=1)[0] == full[3]


def test_other_seed_other_plan_and_ranges_respected():
    a, b = plan_scenes(_domain(), PARTS), plan_scenes(_domain(seed=8), PARTS)
    assert a[0]["camera"] != b[0]["camera"]
    d = _domain()
    for p in a:
        assert 1 <= len(p["parts"]) <= 3 and 0 <= len(p["distractors"]) <= 4
        assert d.camera_distance.min <= p["camera"]["distance"] <= d.camera_distance.max
        assert all(q["class_index"] in (0, 1) and q["material"] in d.materials for q in p["parts"])
        assert p["background"]["source"] == "procedural:workshop"


def test_unknown_material_preset_lists_known():
    with pytest.raises(ValueError, match="unknown material preset.*brushed_steel"):
        plan_scenes(_domain(materials=["chrome_unicorn"]), PARTS)


def test_unknown_background_lists_known():
    with pytest.raises(ValueError, match="procedural:workshop"):
        plan_scenes(_domain(backgrounds="procedural:moon"), PARTS)


@pytest.mark.parametrize("name", ["paper", "bolts", "demo"])
def test_shipped_pipelines_plan(name):
    from synthloop.config import DomainConfig, ImportedDomain, load_config
    from tests_support import ROOT

    cfg = load_config(ROOT / "pipelines" / f"{name}.yaml")
    for domain in (d for d in (cfg.synthetic, cfg.pool, cfg.val) if isinstance(d, DomainConfig)):
        plans = plan_scenes(domain.model_copy(update={"num_images": 2}), cfg.parts)
        assert len(plans) == 2 and plans[0]["scene"] == domain.scene
    if name == "bolts":  # cad variants: 4 bolts and 2 washers, in millimetres
        assert [len(p["parts"]) >= 15 for p in plans] == [True, True]
        assert {q["mesh_index"] for p in plans for q in p["parts"]} <= set(range(6))
        assert cfg.class_names == ["Bolt", "Washer"] and cfg.synthetic.width == 960
        for real in (cfg.pool, cfg.val):  # the real photos, imported with bottles dropped
            assert isinstance(real, ImportedDomain) and real.class_map == {"Bottle": None}
    if name == "paper":
        s = cfg.synthetic
        assert (s.width, s.height, s.scene, s.distractors.max) == (640, 360, "floating", 3)
        assert cfg.detector.architecture == "resnet50_fpn" and cfg.pretrain.lr == 1e-5
