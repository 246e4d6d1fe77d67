"""The experiment grid, scales, and the Table A1 / Fig. 6 / Fig. 8 report from known numbers."""

from __future__ import annotations

import math

import pytest

from synthloop.config import ExperimentConfig, MultiCycleConfig
from synthloop.experiments.harness import RunSpec, grid, steps_to_epochs
from synthloop.experiments.report import mean_se, table_markdown, write_report


def test_paper_grid_has_the_papers_cells():
    specs = grid(ExperimentConfig())
    # R: random x 3 seeds x 6 ks; S+R: random x 3 seeds x 6 ks + margin, dbal x 6 ks
    assert len(specs) == 18 + 18 + 6 + 6
    assert {s.strategy for s in specs if s.setting == "R"} == {"random"}
    assert RunSpec("S+R", "dbal", 1, 25).key == "SR-dbal-s1-k25"
    assert RunSpec("S+R", "dbal", 1, 25, cycle=3).key == "SR-dbal-s1-k25-c3"


def test_scales_shrink_the_grid_and_unknown_names_are_refused():
    exp = ExperimentConfig()
    cpu = exp.at_scale("cpu")
    assert cpu.ks == [10, 25, 50] and cpu.finetune_steps == 150
    assert exp.at_scale("paper") == exp
    own = ExperimentConfig(scales={"cpu": {"ks": [5], "multi_cycle": {"k": 5, "cycles": 2}}})
    assert own.at_scale("cpu").ks == [5]
    assert own.at_scale("cpu").multi_cycle == MultiCycleConfig(k=5, cycles=2)
    with pytest.raises(ValueError, match="unknown experiment scale 'huge'; known: cpu, paper, toy"):
        exp.at_scale("huge")
    with pytest.raises(ValueError):
        ExperimentConfig(ks=[0, 5])


def test_steps_to_epochs():
    assert steps_to_epochs(40, 5, 4) == 20  # 2 batches an epoch
    assert steps_to_epochs(40, 100, 4) == 2
    assert steps_to_epochs(1, 3, 4) == 1


def test_mean_and_standard_error():
    assert mean_se([0.479, 0.507, 0.507]) == pytest.approx((0.4977, 0.00933), abs=1e-4)
    assert mean_se([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in mean_se([]))


def _summary():
    single = []
    # The paper's own numbers (PAPER.md) for k = 10 and 25
    paper = {("R", "random"): {10: [.479, .507, .507], 25: [.578, .582, .601]},
             ("S+R", "random"): {10: [.636, .655, .660], 25: [.671, .692, .698]},
             ("S+R", "margin"): {10: [.668], 25: [.712]}, ("S+R", "dbal"): {10: [.666], 25: [.718]}}
    for (setting, strategy), by_k in paper.items():
        for k, values in by_k.items():
            for seed, v in enumerate(values, 1):
                single.append({"spec": {"setting": setting, "strategy": strategy, "seed": seed,
                                        "k": k, "cycle": 0},
                               "labels_total": k, "labels_new": k,
                               "metrics": {"AP": v, "AP50": v + 0.2, "AP_blade": v}})
    multi = [{"spec": {"setting": "S+R", "strategy": "dbal", "seed": 1, "k": 25, "cycle": 1},
              "labels_total": 25, "labels_new": 25, "metrics": {"AP": .718, "AP50": .9}},
             {"spec": {"setting": "S+R", "strategy": "dbal", "seed": 1, "k": 25, "cycle": 2},
              "labels_total": 50, "labels_new": 25, "metrics": {"AP": .747, "AP50": .92}}]
    return {"pipeline": "paper", "scale": "paper", "val_images": 300, "pool_images": 1000,
            "detector": {"architecture": "resnet50_fpn", "min_size": 360, "max_size": 640},
            "experiment": {"ks": [10, 25], "random_seeds": [1, 2, 3],
                           "multi_cycle": {"strategy": "dbal", "k": 25, "cycles": 2}},
            "m0_s": {"AP": 0.555, "AP50": 0.8}, "single": single, "multi": multi}


def test_table_reproduces_the_papers_table_a1_rows():
    table = table_markdown(_summary(), "AP").splitlines()
    assert table[0] == ("| real images | R random (mean of seeds) | S+R random (mean of seeds) | "
                        "S+R margin | S+R dbal | S+R dbal, cycles of 25 |")
    rows = {line.split(" | ")[0].strip("| "): line for line in table[2:]}
    assert rows["0"] == "| 0 | - | 0.555 | 0.555 | 0.555 | 0.555 |"
    assert rows["10"] == "| 10 | 0.498 | 0.650 | 0.668 | 0.666 | - |"  # the paper's row
    assert rows["25"] == "| 25 | 0.587 | 0.687 | 0.712 | 0.718 | 0.718 |"
    assert rows["50"] == "| 50 | - | - | - | - | 0.747 |"


def test_report_files(tmp_path):
    files = write_report(_summary(), tmp_path)
    assert [f.name for f in files] == ["table.md", "fig6.png", "fig8.png"]
    text = (tmp_path / "table.md").read_text()
    assert "| S+R | 10 | 0.636 / 0.655 / 0.660 | 0.650 | 0.007 |" in text
    assert "AP blade" in text
    assert all(f.stat().st_size > 5000 for f in files[1:])
