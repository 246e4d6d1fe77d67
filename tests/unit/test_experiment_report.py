"""The experiment grid, scales, and the Table A1 / Fig. 6 / Fig. 8 report from known numbers
(the paper's own, PAPER.md), with standard errors, bootstrap intervals and the labels DBAL
needs to match random."""

from __future__ import annotations

import math

import pytest

from synthloop.config import ExperimentConfig, MultiCycleConfig
from synthloop.experiments.analysis import analyse
from synthloop.experiments.grid import RunSpec, grid
from synthloop.experiments.report import mean_se, table_markdown, write_report


def test_paper_grid_has_the_papers_cells_over_every_seed():
    specs = grid(ExperimentConfig())
    # R: random x 3 seeds x 6 ks; S+R: random, margin, dbal x 3 seeds x 6 ks
    assert len(specs) == 18 + 3 * 18
    assert {s.strategy for s in specs if s.setting == "R"} == {"random"}
    assert {s.seed for s in specs if s.strategy == "dbal"} == {1, 2, 3}
    assert RunSpec("S+R", "dbal", 1, 25).key == "SR-dbal-s1-k25"
    assert RunSpec("S+R", "dbal", 1, 25, cycle=3).key == "SR-dbal-s1-k25-c3"


def test_scales_shrink_the_grid_and_unknown_names_are_refused():
    exp = ExperimentConfig()
    cpu = exp.at_scale("cpu")
    assert cpu.ks == [5, 10, 25, 50] and cpu.seeds == [1, 2, 3]
    assert (cpu.finetune_epochs, cpu.min_steps, cpu.finetune_steps) == (8, 30, None)
    assert cpu.multi_cycle == MultiCycleConfig(strategy="dbal", k=10, cycles=5)
    assert exp.at_scale("toy").folds == 2 and exp.at_scale("cpu").folds == 1
    assert exp.at_scale("paper") == exp
    own = ExperimentConfig(scales={"cpu": {"ks": [5], "multi_cycle": {"k": 5, "cycles": 2}}})
    assert own.at_scale("cpu").ks == [5]
    assert own.at_scale("cpu").multi_cycle == MultiCycleConfig(k=5, cycles=2)
    with pytest.raises(ValueError, match="unknown experiment scale 'huge'; known: cpu, paper, toy"):
        exp.at_scale("huge")
    with pytest.raises(ValueError):
        ExperimentConfig(ks=[0, 5])


def test_mean_and_standard_error():
    assert mean_se([0.479, 0.507, 0.507]) == pytest.approx((0.4977, 0.00933), abs=1e-4)
    assert mean_se([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in mean_se([]))


# The paper's numbers (PAPER.md); margin and DBAL were run once, here with seed 1
PAPER = {("R", "random"): {10: [.479, .507, .507], 25: [.578, .582, .601], 50: [.686, .665, .645]},
         ("S+R", "random"): {10: [.636, .655, .660], 25: [.671, .692, .698], 50: [.724, .718, .720]},
         ("S+R", "margin"): {10: [.668], 25: [.712], 50: [.725]},
         ("S+R", "dbal"): {10: [.666], 25: [.718], 50: [.735]}}


def _run(setting, strategy, seed, k, ap, cycle=0, total=None):
    return {"spec": {"setting": setting, "strategy": strategy, "seed": seed, "k": k,
                     "cycle": cycle, "fold": 0},
            "labels_total": total or k, "labels_new": k,
            "metrics": {"AP": ap, "AP50": ap + 0.2, "AP_blade": ap}}


def _summary():
    single = [_run(setting, strategy, seed, k, v)
              for (setting, strategy), by_k in PAPER.items()
              for k, values in by_k.items() for seed, v in enumerate(values, 1)]
    multi = [_run("S+R", "dbal", 1, 25, ap, cycle=t, total=25 * t)
             for t, ap in enumerate([.718, .747, .768, .778], 1)]
    return {"pipeline": "paper", "scale": "paper", "val_images": 300, "pool_images": 1000,
            "detector": {"architecture": "resnet50_fpn", "min_size": 360, "max_size": 640},
            "experiment": {"ks": [10, 25, 50], "seeds": [1, 2, 3], "match_k": 50,
                           "bootstrap_resamples": 2000, "confidence": 0.95, "bootstrap_seed": 0,
                           "multi_cycle": {"strategy": "dbal", "k": 25, "cycles": 4}},
            "m0_s": {"AP": 0.555, "AP50": 0.755},
            "folds": [{"fold": 0, "val_images": 300, "pool_images": 1000,
                       "m0_s": {"AP": 0.555, "AP50": 0.755}}],
            "single": single, "multi": multi}


def test_table_reproduces_the_papers_table_a1_rows():
    table = table_markdown(_summary(), "AP").splitlines()
    assert table[0] == ("| real images | R random | S+R random | S+R margin | S+R dbal | "
                        "S+R dbal, cycles of 25 |")
    rows = {line.split(" | ")[0].strip("| "): line for line in table[2:]}
    assert rows["0"] == "| 0 | - | 0.555 | 0.555 | 0.555 | 0.555 |"
    assert rows["10"] == "| 10 | 0.498 | 0.650 | 0.668 | 0.666 | - |"  # the paper's rows
    assert rows["25"] == "| 25 | 0.587 | 0.687 | 0.712 | 0.718 | 0.718 |"
    assert rows["50"] == "| 50 | 0.665 | 0.721 | 0.725 | 0.735 | 0.747 |"
    assert rows["100"] == "| 100 | - | - | - | - | 0.778 |"


def test_statistics_per_cell():
    stats = analyse(_summary())
    cell = next(c for c in stats["cells"]
                if (c["setting"], c["strategy"], c["k"]) == ("S+R", "random", 10))
    ap = cell["AP"]
    assert ap["n"] == 3 and ap["mean"] == pytest.approx(0.650, abs=5e-4)
    assert ap["se"] == pytest.approx(mean_se([.636, .655, .660])[1])
    assert .636 <= ap["interval"][0] < ap["mean"] < ap["interval"][1] <= .660
    assert ap["per_seed"] == {"1": .636, "2": .655, "3": .660}
    assert ap["per_fold"] == {"0": pytest.approx(0.6503, abs=1e-4)}
    assert stats["bootstrap"]["resamples"] == 2000
    assert [c["cycle"] for c in stats["multi"]] == [1, 2, 3, 4]
    # every metric's mean is recorded too (the per-class table of the report reads the same runs)
    assert cell["means"]["AP"] == pytest.approx(ap["mean"])
    assert set(cell["means"]) >= {"AP", "AP50"}


def test_labels_dbal_needs_to_match_random_at_50():
    section = analyse(_summary())["labels_to_match"]["AP"]
    assert section["reference"] == {"setting": "S+R", "strategy": "random", "k": 50,
                                    "mean": pytest.approx(0.7207, abs=1e-4)}
    rows = {r["curve"]: r for r in section["curves"]}
    target = (.724 + .718 + .720) / 3
    dbal = rows["S+R dbal"]
    assert dbal["labels"] == pytest.approx(25 + (target - .718) / (.735 - .718) * 25)  # 28.9
    assert dbal["interval"][0] == pytest.approx(25.0) and dbal["interval"][1] < 50
    assert dbal["sentence"].startswith("S+R dbal needs 28.9 labels (95% bootstrap interval 25.0 to")
    # margin reaches random's 0.7207 between 25 (0.712) and 50 (0.725)
    assert rows["S+R margin"]["labels"] == pytest.approx(25 + (target - .712) / (.725 - .712) * 25)
    multi = rows["S+R dbal, 4 cycles of 25"]
    assert multi["labels"] == pytest.approx(25 + (target - .718) / (.747 - .718) * 25)


def test_not_reached_is_said_in_words():
    summary = _summary()
    summary["single"] = [r for r in summary["single"]
                         if not (r["spec"]["strategy"] == "dbal" and r["spec"]["k"] == 50)]
    for r in summary["single"]:
        if r["spec"]["strategy"] == "dbal":
            r["metrics"]["AP"] = 0.6
    summary["multi"] = []
    rows = {r["curve"]: r for r in analyse(summary)["labels_to_match"]["AP"]["curves"]}
    dbal = rows["S+R dbal"]
    assert dbal["labels"] is None and dbal["interval"] == [None, None]
    assert dbal["sentence"] == ("S+R dbal does not reach the AP of S+R random at k = 50 (0.721) "
                                "within 25 labels: not reached (0% of bootstrap resamples reach it).")


def test_a_synthetic_model_that_already_matches_needs_no_labels():
    summary = _summary()
    summary["folds"][0]["m0_s"]["AP"] = 0.75
    rows = {r["curve"]: r for r in analyse(summary)["labels_to_match"]["AP"]["curves"]}
    assert rows["S+R dbal"]["labels"] == 0.0
    assert rows["S+R dbal"]["sentence"] == ("S+R dbal: M0_S already reaches the AP of S+R random "
                                            "at k = 50 (0.721) before any label.")


def test_largest_k_is_matched_when_50_was_not_run():
    summary = _summary()
    summary["single"] = [r for r in summary["single"] if r["spec"]["k"] != 50]
    summary["experiment"]["ks"] = [10, 25]
    section = analyse(summary)["labels_to_match"]["AP"]
    assert section["reference"]["k"] == 25


def test_report_files(tmp_path):
    files = write_report(_summary(), tmp_path)
    assert [f.name for f in files] == ["table.md", "fig6.png", "fig8.png"]
    text = (tmp_path / "table.md").read_text()
    assert "| S+R random k=10 | 3 | 0.636 / 0.655 / 0.660 | 0.650 | 0.007 | 0.6" in text
    assert "| S+R dbal cycle 2 (50 labels) | 1 | 0.747 | 0.747 | 0.000 | 0.747 to 0.747 |" in text
    assert "- AP: S+R dbal needs 28.9 labels" in text
    assert "DBAL needed 25 labels to match random at k = 50" in text
    assert "AP blade" in text and "Per validation fold" not in text
    assert all(f.stat().st_size > 5000 for f in files[1:])


def test_report_with_folds_shows_each_fold_and_the_pool(tmp_path):
    summary = _summary()
    extra = []
    for r in summary["single"]:
        twin = {**r, "spec": {**r["spec"], "fold": 2}, "metrics": {**r["metrics"]}}
        twin["metrics"]["AP"] = r["metrics"]["AP"] + 0.01
        r["spec"]["fold"] = 1
        extra.append(twin)
    summary["single"] += extra
    summary["folds"] = [{"fold": f, "val_images": 150, "pool_images": 1150,
                         "m0_s": {"AP": ap, "AP50": 0.75}} for f, ap in ((1, 0.55), (2, 0.56))]
    write_report(summary, tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert "2 rotating folds of 150 real images" in text
    assert "| cell | fold 1 | fold 2 | pooled |" in text
    assert "| M0_S (0 labels) | 0.550 | 0.560 | 0.555 |" in text
    assert "| S+R dbal k=10 | 0.666 | 0.676 | 0.671 |" in text
    assert "| S+R dbal k=10 | 2 | 0.671 | 0.671 |" in text  # 2 runs: seed 1 on folds 1, 2
