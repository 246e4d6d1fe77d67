"""Printed packaging: the ``printed`` material's designs, their plan entries and their files."""

import numpy as np
import pytest
from PIL import Image

from synthloop.config import DomainConfig, IntRange, PartSpec, load_config
from synthloop.synthesis.plan import plan_scenes
from synthloop.synthesis.prints import (KINDS, PRINT_DESIGNS, PRINT_SIZE, draw_print, print_kind,
                                        uses_prints, write_prints)
from synthloop.synthesis.render import _print_designs
from tests_support import ROOT

PARTS = [PartSpec.model_validate({"name": "Bolt", "cad": {"fastener": "hex-bolt",
                                                           "sizes": ["M10x40"]}})]


def test_designs_are_deterministic_distinct_and_busy():
    a, b = np.asarray(draw_print(3)), np.asarray(draw_print(3))
    assert a.shape == (PRINT_SIZE, PRINT_SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)  # the same pixels every call: image keys can rely on it
    others = [np.asarray(draw_print(d)) for d in (0, 1, 2, 4)]
    assert all(not np.array_equal(a, o) for o in others)
    for d in range(len(KINDS)):  # every kind has detail (letters, edges), not a flat colour
        img = np.asarray(draw_print(d)).astype(np.float32)
        edges = np.abs(np.diff(img.mean(-1), axis=1))
        assert (edges > 20).mean() > 0.005, print_kind(d)
    with pytest.raises(ValueError, match="outside 0..47"):
        draw_print(PRINT_DESIGNS)


def test_write_prints_draws_missing_files_and_keeps_existing(tmp_path):
    written = write_prints({5, 1}, tmp_path / "prints")
    assert [p.name for p in written] == ["print_001.png", "print_005.png"]
    with Image.open(written[0]) as img:
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(draw_print(1)))
    mtime = written[1].stat().st_mtime_ns
    write_prints({5}, tmp_path / "prints")
    assert written[1].stat().st_mtime_ns == mtime
    assert not [p for p in (tmp_path / "prints").iterdir() if p.suffix == ".tmp"]
    (tmp_path / "prints" / "VERSION").write_text("0\n")  # drawn by another version: redrawn
    write_prints({1}, tmp_path / "prints")
    assert sorted(p.name for p in (tmp_path / "prints").glob("*.png")) == ["print_001.png"]


def test_printed_clutter_in_the_plan():
    domain = DomainConfig(num_images=4, seed=2, scene="workbench",
                          distractors=IntRange(min=6, max=6), distractor_materials=["printed"])
    assert uses_prints(domain, PARTS)
    assert not uses_prints(domain.model_copy(update={"distractor_materials": ["cardboard"]}),
                           PARTS)
    plans = plan_scenes(domain, PARTS)
    looks = [d for p in plans for d in p["distractors"]]
    designs = [lk["print"] for lk in looks if "print" in lk]
    assert len(designs) == 24 and all(0 <= d < PRINT_DESIGNS for d in designs)
    assert len(set(designs)) > 8  # drawn from the pool, not one design
    assert all(lk["tex_scale"] == 1.0 for lk in looks)
    assert _print_designs(plans) == set(designs)
    assert plan_scenes(domain, PARTS) == plans  # seeded


def test_the_printed_overlay_loads_with_bolts():
    cfg = load_config(ROOT / "pipelines" / "bolts.yaml",
                      overlays=[ROOT / "pipelines" / "overlays" / "bolts_printed_clutter.yaml"])
    assert "printed" in cfg.synthetic.distractor_materials
    assert uses_prints(cfg.synthetic, cfg.parts)
    assert cfg.pretrain.lr_decay == "cosine"  # the recipe its figures were measured with
    # its own workspace: the shipped demo's renders and models are never reused for it
    assert cfg.workspace != load_config(ROOT / "pipelines" / "bolts.yaml").workspace
