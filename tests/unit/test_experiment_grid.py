"""The experiment grid (every strategy x seed x fold), the fine-tuning budget that grows with the
labelled set, the validation-fold split, and the experiment settings that choose them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from tests_support import write_toy_pipeline

from synthloop.config import ExperimentConfig, load_config
from synthloop.data.coco import CocoDataset, categories_for
from synthloop.experiments.folds import fold_split, rotation_folds, union_dataset
from synthloop.experiments.grid import RunSpec, finetune_budget, grid, multi_cycle_chains


def test_every_strategy_runs_over_every_seed_and_fold():
    exp = ExperimentConfig(ks=[5, 10], seeds=[1, 2, 3], folds=2)
    specs = grid(exp)
    # R: random; S+R: random, margin, dbal; x 2 ks x 3 seeds x 2 folds
    assert len(specs) == (1 + 3) * 2 * 3 * 2
    assert len({s.key for s in specs}) == len(specs)
    cells = Counter((s.setting, s.strategy, s.k) for s in specs)
    assert set(cells.values()) == {6}
    for cell in cells:
        assert {(s.seed, s.fold) for s in specs if (s.setting, s.strategy, s.k) == cell} == \
            {(seed, fold) for seed in (1, 2, 3) for fold in (1, 2)}
    assert {s.strategy for s in specs if s.setting == "R"} == {"random"}
    # k by k, then seed by seed: a grid stopped early has whole cells of its smaller ks
    assert [(s.k, s.seed, s.fold) for s in specs] == sorted((s.k, s.seed, s.fold) for s in specs)
    first = specs[:len(specs) // 2]
    assert {s.k for s in first} == {5}
    assert Counter((s.setting, s.strategy) for s in first) == {
        ("R", "random"): 6, ("S+R", "random"): 6, ("S+R", "margin"): 6, ("S+R", "dbal"): 6}


def test_without_folds_keys_are_unchanged():
    specs = grid(ExperimentConfig(ks=[25], seeds=[1, 2]))
    assert {s.fold for s in specs} == {0}
    assert RunSpec("S+R", "dbal", 2, 25).key == "SR-dbal-s2-k25"
    assert RunSpec("S+R", "dbal", 1, 25, cycle=3).key == "SR-dbal-s1-k25-c3"
    assert RunSpec("S+R", "dbal", 1, 25, cycle=3, fold=2).key == "SR-dbal-s1-k25-c3-f2"


def test_multi_cycle_runs_one_chain_a_seed_and_fold():
    chains = multi_cycle_chains(ExperimentConfig(seeds=[1, 2], folds=3))
    assert len(chains) == 6
    assert all([s.cycle for s in c] == list(range(1, 9)) for c in chains)
    assert {(c[0].seed, c[0].fold) for c in chains} == {(s, f) for s in (1, 2) for f in (1, 2, 3)}
    assert multi_cycle_chains(ExperimentConfig(multi_cycle=None)) == []
    # a grid may chain fewer seeds than its single-cycle cells run
    fewer = ExperimentConfig(seeds=[1, 2, 3], multi_cycle={"k": 5, "cycles": 2, "seeds": [2]})
    assert [[(s.seed, s.cycle) for s in c] for c in multi_cycle_chains(fewer)] == [[(2, 1), (2, 2)]]
    assert {s.seed for s in grid(fewer)} == {1, 2, 3}


def test_epochs_budget_grows_with_the_labelled_set():
    # batch 4: 25 images are 7 steps an epoch, 50 images 13
    assert finetune_budget(25, 4, epochs=8, steps=None, min_steps=30) == (8, 56)
    assert finetune_budget(50, 4, epochs=8, steps=None, min_steps=30) == (8, 104)
    steps = [finetune_budget(n, 4, epochs=8, steps=None, min_steps=0)[1] for n in (5, 10, 25, 50)]
    assert steps == sorted(steps) and steps[-1] > 5 * steps[0]


def test_min_steps_floor_applies_to_small_sets():
    # 5 images: 2 steps an epoch; 8 epochs are 16 steps, below the floor of 30 -> 15 epochs
    assert finetune_budget(5, 4, epochs=8, steps=None, min_steps=30) == (15, 30)
    assert finetune_budget(10, 4, epochs=8, steps=None, min_steps=30) == (10, 30)
    assert finetune_budget(1, 4, epochs=1, steps=None, min_steps=0) == (1, 1)


def test_fixed_steps_budget_is_rounded_to_whole_epochs():
    assert finetune_budget(5, 4, epochs=None, steps=40) == (20, 40)
    assert finetune_budget(100, 4, epochs=None, steps=40) == (2, 50)
    with pytest.raises(ValueError):
        finetune_budget(5, 4, epochs=2, steps=40)


def test_experiment_budget_settings():
    assert ExperimentConfig().finetune_epochs is not None and ExperimentConfig().finetune_steps is None
    steps = ExperimentConfig(finetune_steps=40)  # giving steps switches the default epochs off
    assert (steps.finetune_steps, steps.finetune_epochs) == (40, None)
    with pytest.raises(ValueError, match="exactly one of finetune_epochs and finetune_steps"):
        ExperimentConfig(finetune_steps=40, finetune_epochs=5)
    with pytest.raises(ValueError, match="exactly one"):
        ExperimentConfig(finetune_epochs=None)
    # a scale that sets one budget replaces the other
    exp = ExperimentConfig(finetune_steps=40, scales={"mine": {"finetune_epochs": 3}})
    assert (exp.at_scale("mine").finetune_epochs, exp.at_scale("mine").finetune_steps) == (3, None)
    exp = ExperimentConfig(scales={"mine": {"finetune_steps": 7}})
    assert (exp.at_scale("mine").finetune_epochs, exp.at_scale("mine").finetune_steps) == (None, 7)


def test_random_seeds_is_the_old_name_of_seeds():
    assert ExperimentConfig(random_seeds=[4, 5]).seeds == [4, 5]
    assert ExperimentConfig(scales={"x": {"random_seeds": [9]}}).at_scale("x").seeds == [9]
    with pytest.raises(ValueError, match="'random_seeds' is its old name"):
        ExperimentConfig(seeds=[1], random_seeds=[2])
    with pytest.raises(ValueError, match="seeds repeat"):
        ExperimentConfig(seeds=[1, 1])


def test_fold_split_is_disjoint_covering_balanced_and_seeded():
    names = [f"bolts_{i:03d}.jpg" for i in range(90)]
    parts = fold_split(names, folds=5, seed=0)
    assert [len(p) for p in parts] == [18] * 5
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(90))  # disjoint and covering
    assert fold_split(names, folds=5, seed=0) == parts
    assert fold_split(names, folds=5, seed=1) != parts
    # the order the names come in does not matter: the same names land in the same folds
    shuffled = names[::-1]
    again = fold_split(shuffled, folds=5, seed=0)
    assert [sorted(shuffled[i] for i in p) for p in again] == [sorted(names[i] for i in p) for p in parts]
    assert [len(p) for p in fold_split(names[:17], folds=5, seed=0)] == [4, 4, 3, 3, 3]
    with pytest.raises(ValueError, match="cannot split 3 images into 5 folds"):
        fold_split(names[:3], folds=5, seed=0)


def _coco(root: Path, names: list[str], first_id: int) -> CocoDataset:
    raw = {"images": [{"id": first_id + i, "file_name": n, "width": 100, "height": 100}
                      for i, n in enumerate(names)],
           "annotations": [{"id": first_id + i, "image_id": first_id + i, "category_id": 1,
                            "bbox": [10, 10, 20, 20 + i]} for i in range(len(names))],
           "categories": categories_for(["bolt"])}
    return CocoDataset.from_dict(raw, image_root=root)


def test_rotation_folds_pool_and_val_photos_in_memory(tmp_path):
    pool = _coco(tmp_path / "ws" / "data" / "pool" / "images", [f"p{i}.jpg" for i in range(8)], 1)
    val = _coco(tmp_path / "ws" / "data" / "val" / "images", [f"v{i}.jpg" for i in range(4)], 1)
    union = union_dataset(pool, val)
    assert union.image_root == tmp_path / "ws" / "data"
    assert union.images[0].file_name == "pool/images/p0.jpg"
    assert union.images[-1].file_name == "val/images/v3.jpg"
    assert [im.id for im in union.images] == list(range(1, 13))
    assert union.image_path(union.images[-1]) == val.image_path(val.images[-1])
    # annotations follow their images through the renumbering
    assert union.boxes_xyxy(12)[0].tolist() == val.boxes_xyxy(4)[0].tolist()

    folds = rotation_folds(pool, val, folds=3, seed=0)
    assert [f.index for f in folds] == [1, 2, 3]
    vals = [{im.file_name for im in f.val.images} for f in folds]
    assert [len(v) for v in vals] == [4, 4, 4] and set().union(*vals) == {
        im.file_name for im in union.images}
    for f in folds:
        pool_names = {im.file_name for im in f.pool.images}
        assert len(pool_names) == 8 and not pool_names & {im.file_name for im in f.val.images}
        assert len(f.val.annotations) == 4
    assert len({f.tag for f in folds}) == 3
    assert [f.tag for f in rotation_folds(pool, val, folds=3, seed=0)] == [f.tag for f in folds]

    (only,) = rotation_folds(pool, val, folds=1, seed=0)
    assert only.index == 0 and only.pool is pool and only.val is val


def test_harness_seeds_the_fine_tuning_and_sizes_its_budget(tmp_path):
    from synthloop.stages.experiment import Harness

    cfg = load_config(write_toy_pipeline(tmp_path, update={"experiment": {
        "scales": {"t": {"finetune_epochs": 2, "min_steps": 3}}}}))
    harness = Harness(cfg, scale="t", progress=False)
    tcfg = harness._train_cfg("S+R", 4, seed=3)  # finetune batch 2: 2 steps an epoch
    assert tcfg.seed == cfg.finetune.seed + 3 and tcfg.epochs == 2 and tcfg.max_minutes is None
    assert harness._train_cfg("S+R", 2, seed=1).epochs == 3  # 1 step an epoch, floor of 3
    assert harness._train_cfg("R", 16, seed=1).batch_size == cfg.pretrain.batch_size


def test_real_only_runs_see_real_parts_at_their_own_size(tmp_path):
    # crop_scale matches the renders' part sizes to the photos'; R trains on photos only
    from synthloop.stages.experiment import Harness

    cfg = load_config(write_toy_pipeline(tmp_path, update={
        "pretrain": {"crop": 64, "crop_scale": [0.5, 1.0]},
        "experiment": {"scales": {"t": {"finetune_epochs": 2, "min_steps": 3}}}}))
    harness = Harness(cfg, scale="t", progress=False)
    assert cfg.pretrain.crop_scale == (0.5, 1.0)
    r = harness._train_cfg("R", 16, seed=1)
    assert r.crop_scale is None and r.crop == 64


def test_warm_up_takes_at_most_a_fifth_of_a_run(tmp_path):
    from synthloop.stages.experiment import Harness

    cfg = load_config(write_toy_pipeline(tmp_path, update={
        "pretrain": {"warmup_steps": 30, "batch_size": 4},
        "experiment": {"scales": {"t": {"finetune_epochs": 8, "min_steps": 30}}}}))
    harness = Harness(cfg, scale="t", progress=False)
    short = harness._train_cfg("R", 10, seed=1)  # 3 steps an epoch, 10 epochs: 30 steps
    assert (short.epochs, short.warmup_steps) == (10, 6)
    long = harness._train_cfg("R", 200, seed=1)  # 50 steps an epoch, 8 epochs: 400 steps
    assert long.warmup_steps == 30


def test_a_scale_can_leave_the_multi_cycle_runs_out():
    exp = ExperimentConfig(scales={"small": {"ks": [10], "multi_cycle": False},
                                   "keep": {"ks": [10]}})
    assert exp.at_scale("small").multi_cycle is None
    assert multi_cycle_chains(exp.at_scale("small")) == []
    assert exp.at_scale("keep").multi_cycle == exp.multi_cycle


def test_an_r_run_starts_from_heads_drawn_from_its_seed_alone(tmp_path):
    import torch

    from synthloop.stages.experiment import Harness

    cfg = load_config(write_toy_pipeline(tmp_path))
    harness = Harness(cfg, scale="toy", progress=False)
    a = harness._start_model(None, seed=7).state_dict()
    torch.rand(1000)  # whatever the process drew before (another run, an evaluation)
    b = harness._start_model(None, seed=7).state_dict()
    c = harness._start_model(None, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
