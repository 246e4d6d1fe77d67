"""`synthloop experiment` at toy scale: the paper's grid end to end (real renders, training,
strategies, COCO evaluation, MLflow), then a rerun that skips every finished run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient
from test_demo_pipeline import toy_config

from synthloop.config import load_config
from synthloop.experiments.harness import Harness, grid

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.render]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, render_python):
    config = toy_config(tmp_path_factory.mktemp("exp"))
    cfg = load_config(config)
    harness = Harness(cfg, scale="toy", progress=False)
    return config, cfg, harness, harness.run()


def test_every_cell_of_the_toy_grid_ran(finished):
    _, cfg, _, summary = finished
    exp = cfg.experiment.at_scale("toy")
    keys = {(r["spec"]["setting"], r["spec"]["strategy"], r["spec"]["seed"], r["spec"]["k"])
            for r in summary["single"]}
    # R: random x 2 seeds x 2 ks; S+R: random x 2 seeds x 2 ks + margin, dbal x 2 ks
    assert len(keys) == len(grid(exp)) == 4 + 4 + 2 + 2
    for r in summary["single"]:
        assert r["labels_total"] == r["spec"]["k"] == len(set(r["selected"]))
        assert 0.0 <= r["metrics"]["AP"] <= 1.0 and "AP_blade" in r["metrics"]
    same_seed = [r["selected"] for r in summary["single"]
                 if r["spec"]["strategy"] == "random" and r["spec"]["seed"] == 1 and r["spec"]["k"] == 2]
    assert same_seed[0] == same_seed[1]  # R and S+R random with one seed pick the same images


def test_multi_cycle_accumulates_labels(finished):
    _, _, _, summary = finished
    multi = summary["multi"]
    assert [r["spec"]["cycle"] for r in multi] == [1, 2]
    assert multi[0]["labels_total"] == 2
    assert multi[1]["labels_total"] == multi[0]["labels_total"] + multi[1]["labels_new"]


def test_table_and_figures_are_written_and_logged(finished):
    _, cfg, harness, summary = finished
    table = (harness.root / "table.md").read_text()
    assert "| real images | R random (mean of seeds) | S+R random (mean of seeds) | S+R margin" in table
    assert "S+R dbal, cycles of 2" in table and "| 4 |" in table
    for name in ("fig6.png", "fig8.png", "results.json"):
        assert (harness.root / name).stat().st_size > 1000
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment_name)
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'experiment'")
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
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'experiment'")
    assert len(runs) == 1 + len(summary["single"]) + len(summary["multi"])  # nothing new


def test_unknown_scale_is_a_clear_error(finished):
    config = finished[0]
    out = subprocess.run([sys.executable, "-m", "synthloop", "experiment", "-c", str(config),
                          "--scale", "huge"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "unknown experiment scale 'huge'; known: cpu, paper, toy" in out.stderr
