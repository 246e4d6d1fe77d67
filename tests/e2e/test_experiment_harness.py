"""`synthloop experiment` at toy scale: the paper's grid end to end (real renders, training,
strategies, COCO evaluation, MLflow) over 2 seeds and 2 rotating validation folds, with its
statistics, then a rerun that skips every finished run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient
from test_demo_pipeline import toy_config

from synthloop.config import load_config
from synthloop.experiments.grid import grid
from synthloop.stages.experiment import Harness

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.render]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, render_python):
    config = toy_config(tmp_path_factory.mktemp("exp"))
    cfg = load_config(config)
    harness = Harness(cfg, scale="toy", progress=False)
    return config, cfg, harness, harness.run()


def test_every_cell_of_the_toy_grid_ran_over_every_seed_and_fold(finished):
    _, cfg, _, summary = finished
    exp = cfg.experiment.at_scale("toy")
    keys = {(r["spec"]["setting"], r["spec"]["strategy"], r["spec"]["seed"], r["spec"]["k"],
             r["spec"]["fold"]) for r in summary["single"]}
    # (R random + S+R random, dbal) x k = 3 x 2 seeds x 2 folds
    assert len(keys) == len(grid(exp)) == 3 * 1 * 2 * 2
    for r in summary["single"]:
        assert r["labels_total"] == r["spec"]["k"] == len(set(r["selected"]))
        assert 0.0 <= r["metrics"]["AP"] <= 1.0 and "AP_blade" in r["metrics"]
        # one epoch, at least 2 steps: R (batch 4) has one step an epoch and gets 2 epochs
        assert r["steps"] == 2
    same_seed = [r["selected"] for r in summary["single"] if r["spec"]["strategy"] == "random"
                 and (r["spec"]["seed"], r["spec"]["fold"]) == (1, 1)]
    assert len(same_seed) == 2 and same_seed[0] == same_seed[1]  # R and S+R pick the same


def test_folds_rotate_the_validation_set_over_pool_and_val(finished):
    _, _, _, summary = finished
    folds = summary["folds"]
    assert [f["fold"] for f in folds] == [1, 2]
    vals = [set(f["val_files"]) for f in folds]
    assert not vals[0] & vals[1] and len(vals[0] | vals[1]) == 10 + 5  # toy pool + val
    assert all(f["val_images"] + f["pool_images"] == 15 and f["m0_s"] for f in folds)
    val_ids = {f["fold"]: set(f["val_ids"]) for f in folds}
    for r in summary["single"] + summary["multi"]:  # nothing trains on its fold's validation
        assert not set(r["selected"]) & val_ids[r["spec"]["fold"]]


def test_multi_cycle_accumulates_labels(finished):
    _, _, _, summary = finished
    chains: dict = {}
    for r in summary["multi"]:
        chains.setdefault((r["spec"]["seed"], r["spec"]["fold"]), []).append(r)
    assert set(chains) == {(s, f) for s in (1, 2) for f in (1, 2)}
    for multi in chains.values():
        assert [r["spec"]["cycle"] for r in multi] == [1, 2]
        assert multi[0]["labels_total"] == 2
        assert multi[1]["labels_total"] == multi[0]["labels_total"] + multi[1]["labels_new"]


def test_statistics_table_and_figures_are_written_and_logged(finished):
    _, cfg, harness, summary = finished
    table = (harness.root / "table.md").read_text()
    assert "| real images | R random | S+R random | S+R dbal | S+R dbal, cycles of 2 |" in table
    assert "| 4 |" in table
    assert "## Labels to match random" in table and "| cell | fold 1 | fold 2 | pooled |" in table
    saved = json.loads((harness.root / "results.json").read_text())
    stats = saved["statistics"]
    cell = next(c for c in stats["cells"] if (c["strategy"], c["k"]) == ("dbal", 3))
    assert cell["AP"]["n"] == 4 and len(cell["AP"]["interval"]) == 2  # 2 seeds x 2 folds
    assert cell["AP"]["interval"][0] <= cell["AP"]["mean"] <= cell["AP"]["interval"][1]
    match = stats["labels_to_match"]["AP"]
    assert match["reference"]["k"] == 3  # k = 50 was not run: the largest k
    curves = {c["curve"] for c in match["curves"]}
    assert curves == {"S+R dbal", "S+R dbal, 2 cycles of 2"}
    assert all(c["sentence"] in table for c in match["curves"])
    for name in ("fig6.png", "fig8.png", "results.json"):
        assert (harness.root / name).stat().st_size > 1000
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment_name)
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'experiment'", max_results=1000)
    assert len(runs) == 1 + len(summary["single"]) + len(summary["multi"])  # parent + one a run
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][0]
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"table.md", "fig6.png", "fig8.png", "results.json"} <= arts


def test_rerun_skips_finished_runs(finished):
    config, cfg, harness, summary = finished
    before = json.loads((harness.root / "results.json").read_text())
    out = subprocess.run([sys.executable, "-m", "synthloop", "experiment", "-c", str(config),
                          "--scale", "toy"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| real images |" in out.stdout
    after = json.loads((harness.root / "results.json").read_text())
    assert [r["metrics"] for r in after["single"]] == [r["metrics"] for r in before["single"]]
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment_name)
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'experiment'", max_results=1000)
    assert len(runs) == 1 + len(summary["single"]) + len(summary["multi"])  # nothing new


def test_unknown_scale_is_a_clear_error(finished):
    config = finished[0]
    out = subprocess.run([sys.executable, "-m", "synthloop", "experiment", "-c", str(config),
                          "--scale", "huge"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "unknown experiment scale 'huge'; known: cpu, paper, toy" in out.stderr
