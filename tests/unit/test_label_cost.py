"""Labelling cost in annotator seconds (data/label_cost.py, stages/label_cost.py): the cost
model, Label Studio lead times, the per-cycle record and MLflow metrics, and the stop rule."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from synthloop.config import LabelCostConfig, LabelingConfig, load_config
from synthloop.data.label_cost import (BoxCounts, count_image, cycle_cost, decide_saturation,
                                       gain_per_minute, labelstudio_lead_times, model_seconds)
from synthloop.gating.cycle_lock import read_requests
from synthloop.stages import label_cost
from synthloop.stages.workspace import Workspace, write_record
from tests_support import DEMO_CONFIG

BOX = (10.0, 10.0, 50.0, 50.0)


def test_boxes_are_new_corrected_accepted_or_rejected():
    offered = [(1, BOX), (1, (10.0, 10.0, 40.0, 50.0)), (2, (100.0, 100.0, 120.0, 120.0)),
               (1, (200.0, 200.0, 210.0, 210.0))]
    final = [(1, BOX),                         # kept as offered: accepted
             (1, (12.0, 10.0, 42.0, 50.0)),    # the second one moved a little: corrected
             (2, (300.0, 300.0, 330.0, 330.0)),  # drawn where nothing was offered: new
             (1, (100.0, 100.0, 120.0, 120.0))]  # on the class-2 offer but another class: new
    c = count_image(final, offered, accept_iou=0.9)
    assert c == BoxCounts(images=1, new=2, corrected=1, accepted=1, rejected=2)
    assert c.boxes == 4


def test_the_cost_model_charges_each_action_and_the_user_sets_the_constants():
    c = BoxCounts(images=2, new=3, corrected=1, accepted=4, rejected=1)
    assert model_seconds(c, LabelCostConfig()) == pytest.approx(2 * 5 + 3 * 7 + 7 + 5 * 1)
    classic = load_config(DEMO_CONFIG, overrides=["labeling.cost.new_box_s=35",
                                                  "labeling.cost.image_s=0"]).labeling.cost
    assert model_seconds(c, classic) == pytest.approx(3 * 35 + 7 + 5)
    with pytest.raises(ValidationError):
        LabelCostConfig(new_box_s=-1)
    with pytest.raises(ValidationError):
        LabelingConfig(cost={"per_box": 3})  # unknown key: an error, not ignored


def test_lead_times_come_from_label_studio_where_the_export_has_them():
    tasks = [{"data": {"synthloop_image_id": 1}, "annotations": [{"lead_time": 12.5}]},
             {"data": {"synthloop_image_id": 2},  # a cancelled try took time too
              "annotations": [{"lead_time": 3.0, "was_cancelled": True}, {"lead_time": 4.0}]},
             {"data": {"synthloop_image_id": 3}, "annotations": [{"result": []}]},
             {"data": {"synthloop_image_id": 4}, "annotations": [{"lead_time": math.nan},
                                                                 {"lead_time": True},
                                                                 {"lead_time": -2}]}]
    assert labelstudio_lead_times(tasks) == {1: 12.5, 2: 7.0}
    assert labelstudio_lead_times({"not": "a list"}) == {}
    counts = {1: BoxCounts(1, 2), 3: BoxCounts(1, 1)}
    cost = cycle_cost(counts, LabelCostConfig(), labelstudio_lead_times(tasks))
    assert (cost.source, cost.images_timed) == ("mixed", 1)
    assert cost.seconds == pytest.approx(12.5 + 5 + 7)
    assert cycle_cost({1: BoxCounts(1, 2)}, LabelCostConfig(), {1: 9.0}).source == "lead_time"
    assert cycle_cost({}, LabelCostConfig()).source == "none"


def test_the_stop_rule_is_off_by_default_and_needs_a_window_of_evidence():
    history = [(1, 0.004), (2, 0.0005), (3, 0.0001)]
    assert LabelingConfig().stop_below_gain_per_minute is None
    off = decide_saturation(history, threshold=None, window=2)
    assert not off.saturated and "off" in off.reason
    early = decide_saturation(history[:1], threshold=0.001, window=2)
    assert not early.saturated and "not enough evidence" in early.reason
    sat = decide_saturation(history, threshold=0.001, window=2)
    assert sat.saturated and sat.cycles == (2, 3)
    assert sat.expected_gain_per_minute == pytest.approx(0.0003)
    assert "saturated" in sat.reason and "cycles 2, 3" in sat.reason
    assert not decide_saturation(history, threshold=0.001, window=3).saturated  # mean 0.0015
    assert gain_per_minute(0.02, 600.0) == pytest.approx(0.002)
    assert gain_per_minute(None, 600.0) is None and gain_per_minute(0.02, 0.0) is None


def _cycle(cfg, cycle: int, seconds: float, improvement: float) -> None:
    d = Workspace.of(cfg).cycle_dir(cycle)
    write_record(d / "label.json", {"new": [1], "total": cycle, "cost": {
        "seconds": seconds, "minutes": seconds / 60, "source": "model", "images": 1, "boxes": 3,
        "images_timed": 0, "counts": {"images": 1, "new": 3, "corrected": 0, "accepted": 0,
                                      "rejected": 0}}})
    write_record(d / "gate.json", {"improvement": improvement, "promote": improvement > 0})


def test_a_cycle_records_its_cost_logs_it_and_says_saturated(tmp_path):
    from mlflow import MlflowClient

    from synthloop import tracking

    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", f"tracking.uri=sqlite:///{tmp_path / 'mlruns.db'}",
        "labeling.stop_below_gain_per_minute=0.001"])
    _cycle(cfg, 1, 600.0, 0.03)   # 10 min for +0.03 AP: 0.003 a minute
    _cycle(cfg, 2, 1200.0, 0.004)  # 20 min for +0.004: 0.0002 a minute
    assert not label_cost.saturation(cfg, through=1).saturated  # one cycle is not a window
    assert label_cost.skip_if_saturated(cfg, trigger="nightly:drift") is None
    _cycle(cfg, 3, 1200.0, -0.002)
    exp = tracking.setup(cfg)
    run = MlflowClient().create_run(exp, run_name="cycle-3").info.run_id
    rec = label_cost.after_gate(cfg, cycle=3, parent_run_id=run)
    assert rec["label_seconds"] == 1200.0 and rec["source"] == "model"
    assert rec["ap_gain_per_label_minute"] == pytest.approx(-0.0001)
    assert rec["saturated"] and rec["saturation"]["cycles"] == [2, 3]
    on_disk = json.loads((Workspace.of(cfg).cycle_dir(3) / "label_cost.json").read_text())
    assert on_disk["saturated"] is True
    data = MlflowClient().get_run(run).data
    assert data.metrics["label_seconds"] == 1200.0 and data.metrics["label_minutes"] == 20.0
    assert data.metrics["ap_gain_per_label_minute"] == pytest.approx(-0.0001)
    assert data.metrics["label_saturated"] == 1.0
    assert data.tags["label.saturated"] == "true" and data.tags["label.cost_source"] == "model"
    entry = label_cost.skip_if_saturated(cfg, trigger="nightly:drift")
    assert entry["outcome"] == "saturated" and "below" in entry["reason"]
    assert read_requests(Workspace.of(cfg).root / "state")[-1]["outcome"] == "saturated"


def _pool(boxes_per_image: dict[int, int]):
    from pathlib import Path

    from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for

    images = [CocoImage(i, f"{i}.jpg", 100, 100) for i in boxes_per_image]
    anns = [CocoAnnotation(len(images) * 100 + n * 10 + j, i, 1, (j * 5.0, 0.0, 4.0, 4.0), 16.0)
            for n, (i, count) in enumerate(boxes_per_image.items()) for j in range(count)]
    return CocoDataset(images, anns, categories_for(["part"]), Path("."))


def _exp_run(strategy, seed, picked, ap, cycle=0):
    return {"spec": {"setting": "S+R", "strategy": strategy, "seed": seed, "k": 2,
                     "cycle": cycle, "fold": 0},
            "labels_total": len(picked), "labels_new": len(picked), "selected": picked,
            "metrics": {"AP": ap, "AP50": ap + 0.2}}


def test_the_experiment_report_costs_each_strategys_picks_in_minutes(tmp_path):
    from synthloop.experiments.label_cost import attach_label_cost, label_cost_rows
    from synthloop.experiments.report import write_report

    pool = _pool({1: 1, 2: 1, 3: 9, 4: 11})  # images 3 and 4 are crowded
    single = attach_label_cost([_exp_run("random", 1, [1, 2], 0.30),
                                _exp_run("dbal", 1, [3, 4], 0.36)], {0: pool}, LabelCostConfig())
    assert [r["label_seconds"] for r in single] == [2 * 5 + 2 * 7, 2 * 5 + 20 * 7]
    multi = attach_label_cost([_exp_run("dbal", 1, [3, 1], 0.4, cycle=2),
                               _exp_run("dbal", 1, [1, 2], 0.35, cycle=1)], {0: pool},
                              LabelCostConfig(), chained=True)
    assert [r["label_seconds"] for r in multi] == [3 * 5 + 11 * 7, 2 * 5 + 2 * 7]  # cumulative
    summary = {"pipeline": "toy", "scale": "toy", "val_images": 5, "pool_images": 4,
               "detector": {"architecture": "a", "min_size": 64, "max_size": 96},
               "experiment": {"ks": [2], "seeds": [1], "match_k": 2, "bootstrap_resamples": 50,
                              "confidence": 0.9, "bootstrap_seed": 0, "multi_cycle": None},
               "m0_s": {"AP": 0.25, "AP50": 0.45},
               "folds": [{"fold": 0, "val_images": 5, "pool_images": 4}],
               "single": single, "multi": []}
    rows = {r["strategy"]: r for r in label_cost_rows(summary)}
    assert rows["random"]["minutes"] == pytest.approx(24 / 60)
    assert rows["random"]["AP_gain_per_minute"] == pytest.approx(0.05 / (24 / 60))
    assert rows["dbal"]["AP_gain_per_minute"] == pytest.approx(0.11 / (150 / 60))
    files = write_report(summary, tmp_path)
    assert "fig_label_minutes.png" in [f.name for f in files]
    text = (tmp_path / "table.md").read_text()
    assert "## By labelling minutes" in text
    assert "| S+R dbal | 2 | 1 | 20.0 | 2.5 | 1.25 | 0.360 | 0.0440 |" in text


def test_the_harness_summary_costs_every_run_it_reports(tmp_path):
    """Harness._summary (what results.json and the report get) carries each run's seconds:
    single runs their picks, a multi-cycle run its chain's labelled set so far."""
    from dataclasses import asdict

    from synthloop.experiments.folds import Fold
    from synthloop.experiments.grid import RunResult
    from synthloop.stages.experiment import Harness

    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              "labeling.cost.new_box_s=10"])
    pool = _pool({1: 1, 2: 3, 3: 0})
    harness = Harness.__new__(Harness)  # no workspace, renders or models: only the summary
    harness.cfg, harness.scale, harness.m0_metrics = cfg, "toy", {}
    harness.exp = cfg.experiment.at_scale("toy")
    harness.folds = {0: Fold(0, pool, _pool({9: 1}))}

    def result(strategy, picked, cycle=0):
        spec = {"setting": "S+R", "strategy": strategy, "seed": 1, "k": 2, "cycle": cycle,
                "fold": 0}
        return RunResult(spec, len(picked), len(picked), {"AP": 0.3}, 1.0, 2, picked, 0.1)

    summary = harness._summary([result("random", [1, 2])],
                               [result("dbal", [1, 3], cycle=1), result("dbal", [2, 3], cycle=2)])
    assert summary["single"][0]["label_seconds"] == 2 * 5 + 4 * 10
    assert [r["label_seconds"] for r in summary["multi"]] == [2 * 5 + 10, 3 * 5 + 4 * 10]
    assert summary["label_cost"]["new_box_s"] == 10
    assert asdict(result("x", [1]))["selected"] == [1]  # records on disk are unchanged
