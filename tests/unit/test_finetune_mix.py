"""The fine-tune's render mix (stages/finetune.py): the seeded training set and the chosen share."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthloop.config import load_config
from synthloop.stages.finetune import mix_of, mixed_training_set
from test_detection_training import make_coco
from tests_support import DEMO_CONFIG


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    return (make_coco(root / "labeled" / "images", n=6),
            make_coco(root / "synthetic" / "images", n=12))


def test_the_share_of_renders_holds_for_the_epoch(sets):
    labeled, synthetic = sets
    for share, renders in ((0.25, 2), (0.5, 6), (0.4, 4)):
        mixed, picked = mixed_training_set(labeled, synthetic, share=share, seed=0, cycle=1)
        assert len(picked) == renders and len(mixed.images) == 6 + renders
        # L first, ids renumbered, every file resolves and keeps its boxes
        assert [Path(mixed.image_path(im)) for im in mixed.images[:6]] == \
            [Path(labeled.image_path(im)).resolve() for im in labeled.images]
        assert all(Path(mixed.image_path(im)).is_file() for im in mixed.images)
        assert [im.id for im in mixed.images] == list(range(1, 7 + renders))
        want = len(labeled.annotations) + len(synthetic.subset(picked).annotations)
        assert len(mixed.annotations) == want


def test_the_renders_are_seeded_by_seed_and_cycle(sets):
    labeled, synthetic = sets
    draw = lambda **kw: mixed_training_set(labeled, synthetic, share=0.5, **kw)[1]  # noqa: E731
    assert draw(seed=0, cycle=1) == draw(seed=0, cycle=1)
    assert len({tuple(draw(seed=0, cycle=c)) for c in range(1, 6)}) > 1


def test_share_zero_is_the_labelled_set_and_more_renders_than_exist_take_all(sets):
    labeled, synthetic = sets
    same, picked = mixed_training_set(labeled, synthetic, share=0.0, seed=0, cycle=1)
    assert same is labeled and picked == []
    _, picked = mixed_training_set(labeled, synthetic, share=0.9, seed=0, cycle=1)
    assert len(picked) == len(synthetic.images)


def test_the_default_is_the_paper_l_only(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path}"])
    assert cfg.finetune_mix.mode == "off"
    assert mix_of(cfg, labels=10, gap=None)["share"] == 0.0


def test_the_gap_rule_reads_the_cycles_auc(tmp_path):
    cfg = load_config(DEMO_CONFIG,
                      overrides=[f"workspace={tmp_path}", "finetune_mix.mode=gap_rule"])
    near = mix_of(cfg, labels=10, gap={"image": {"auc": 0.55}})
    far = mix_of(cfg, labels=10, gap={"image": {"auc": 0.95}})
    assert near["share"] > far["share"] and near["auc"] == 0.55
    with pytest.raises(ValueError, match="AUC"):
        mix_of(cfg, labels=10, gap=None)


def test_a_bare_yaml_off_is_the_mode_off(tmp_path):
    # YAML 1.1 reads `mode: off` as false
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path}", "finetune_mix.mode=off"])
    assert cfg.finetune_mix.mode == "off"


def test_the_gap_rule_prefers_the_records_rule_auc(tmp_path):
    cfg = load_config(DEMO_CONFIG,
                      overrides=[f"workspace={tmp_path}", "finetune_mix.mode=gap_rule"])
    mix = mix_of(cfg, labels=0, gap={"image": {"auc": 1.0}, "rule_auc": 0.5})
    assert mix["auc"] == 0.5 and mix["share"] == cfg.finetune_mix.base
