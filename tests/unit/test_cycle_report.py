"""The cycle report's page (reports/cycle_report.py), its pictures (reports/charts.py) and the
one-model bootstrap behind its AP intervals (gating/bootstrap.py ``metric_intervals``)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from gate_support import exact_detections, exact_set, hand_ap
from report_support import Page
from synthloop.gating.bootstrap import metric_intervals, paired_bootstrap
from synthloop.reports.charts import CurvePoint, curve_svg, draw_boxes
from synthloop.reports.cycle_report import (NOT_RECORDED, CycleRecords, HistoryRow, Thumbnail,
                                            format_value, render_html)


def jpeg(w: int = 100, h: int = 80) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (40, 40, 40)).save(out, format="JPEG")
    return out.getvalue()


GATE = {"promote": False, "rule": "bootstrap", "metric": "AP", "candidate_version": "3",
        "champion_version_before": "2", "candidate_value": 0.41, "champion_value": 0.40,
        "improvement": 0.01, "reason": "90% interval of the gain [-0.02, +0.04] reaches below 0",
        "interval": {"lower": -0.02, "upper": 0.04, "confidence": 0.9, "resamples": 200,
                     "num_images": 15, "seed": 0, "seconds": 2.5},
        "class_drops": [{"name": "Bolt", "candidate": 0.30, "champion": 0.38, "drop": 0.08,
                         "lower": 0.03, "upper": 0.12, "regressed": True},
                        {"name": "Washer", "candidate": 0.52, "champion": 0.42, "drop": -0.1,
                         "lower": -0.15, "upper": -0.05, "regressed": False}]}


def records(**changes) -> CycleRecords:
    base = dict(
        pipeline="bolts", cycle=2, run_id="abc123",
        run_metrics={"val_AP": 0.41234567, "val_AP50": 0.7, "labels_total": 20.0,
                     "labels_new": 10.0, "promoted": 0.0},
        history=[HistoryRow(0, "1", {"AP": 0.13, "AP50": 0.37}, True, {"AP": (0.1, 0.16)}),
                 HistoryRow(1, "2", {"AP": 0.40, "AP50": 0.69}, True,
                            {"AP": (0.35, 0.45), "AP50": (0.6, 0.75)}),
                 HistoryRow(2, "3", {"AP": 0.41234567, "AP50": 0.7, "AP_Bolt": 0.30,
                                     "AP_Washer": 0.52}, False, {})],
        gate=GATE, query={"strategy": "dbal", "params": {"beta": 2.0}, "seed": 2,
                          "model_version": "2", "pool_md5": "5464d6b42b1c0923",
                          "image_ids": [7, 9], "scores": [5.5, 4.25], "new_label_ids": [7]},
        label={"total": 20, "new": [7], "routes": {"simulated": 1}}, label_cost=None,
        class_names=["Bolt", "Washer"],
        thumbnails=[Thumbnail(7, jpeg(), 5.5, 2, True), Thumbnail(9, jpeg(), 4.25, 1, False)],
        thumbnails_left_out=3, gate_figure=None)
    base.update(changes)
    return CycleRecords(**base)


def test_the_page_is_self_contained_and_its_numbers_are_the_runs():
    text = render_html(records(gate_figure=b"\x89PNG fake"))
    page = Page(text)
    assert not {"script", "link", "iframe"} & page.tags
    assert page.refs and all(r.startswith("data:image/") for r in page.refs), page.refs
    assert len(page.images) == 3  # two thumbnails and the gate figure, all inlined
    shown = {k: (float(v), t) for k, v, t in page.metrics}
    assert set(shown) == {"val_AP", "val_AP50", "labels_total", "labels_new", "promoted"}
    for key, value in records().run_metrics.items():
        assert shown[key] == (value, format_value(value, key))
    assert shown["val_AP"][1] == "0.4123" and shown["labels_total"][1] == "20"


def test_the_page_says_the_decision_the_evidence_and_the_batch():
    text = render_html(records())
    assert "kept champion v2 (candidate v3 not promoted)" in text
    assert "[-0.0200, +0.0400]" in text and "200 paired resamples of 15 images" in text
    assert re.search(r"<td>Bolt</td>.*?REGRESSED", text) and "[0.0300, 0.1200]" in text
    assert "[0.3500, 0.4500]" in text and "[0.6000, 0.7500]" in text  # AP, AP50 intervals
    assert "image 7, score 5.5, 2 boxes</figcaption>" in text
    assert "image 9, score 4.25, 1 boxes (labelled before)" in text
    assert "3 more images in the batch not shown" in text
    assert "<b>dbal</b> (beta=2.0), seed 2" in text


def test_absent_evidence_is_named_not_invented():
    text = render_html(records())
    assert text.count(NOT_RECORDED) == 2  # label_seconds and ap_gain_per_label_minute
    assert "failure-analysis" in text and "not enabled" in text
    assert "sim-to-real gap: not measured" in text
    assert "no monitor check recorded since the previous cycle" in text
    assert "no gate figure" in text


def test_label_cost_drift_and_gap_when_recorded():
    cost = {"label_seconds": 312.5, "ap_gain_per_label_minute": 0.0019, "source": "model",
            "saturated": True, "saturation": {"reason": "expected gain 0.001 < 0.002"}}
    check = {"time": "20261202T010000Z", "pool_growth": 12, "trigger": {"fire": True},
             "drift": {"decision": {"reason": "drift: embedding mmd 0.31 > 0.1", "checks": [
                 {"name": "embedding", "method": "mmd", "score": 0.31, "threshold": 0.1,
                  "direction": "above", "drifted": True}]}}}
    r = records(run_metrics={**records().run_metrics, "label_seconds": 312.5},
                label_cost=cost, monitor_checks=[check],
                sim_to_real={"sim_to_real_mmd": 0.25}, failure_analysis={"pose": 1.5})
    text = render_html(r)
    page = Page(text)
    shown = {k: t for k, _, t in page.metrics}
    assert shown["label_seconds"] == "312.5" and shown["sim_to_real_mmd"] == "0.25"
    assert 'data-record="ap_gain_per_label_minute">0.0019<' in text  # from the stage record
    assert NOT_RECORDED not in text and "SATURATED: expected gain" in text
    assert "pool grew by 12 images" in text and "DRIFT" in text and "trigger fired" in text
    assert "not enabled" not in text and "&quot;pose&quot;: 1.5" in text


def test_a_cycle_without_a_gate_record_still_renders():
    text = render_html(records(gate={}, history=[], thumbnails=[], query={}, label={}))
    assert "no image of the batch could be shown" in text and "<svg" in text
    assert "no gate decision recorded for this cycle" in text


def test_format_value():
    assert format_value(0.123456, "val_AP") == "0.1235" and format_value(0.0, "AP_x") == "0.0000"
    assert format_value(10.0, "labels_new") == "10" and format_value(1.5e-3, "x") == "0.0015"
    assert format_value(0.0019, "ap_gain_per_label_minute") == "0.0019"


def test_curve_draws_a_point_and_an_error_bar_per_model_and_metric():
    points = [CurvePoint(0, {"AP": 0.1, "AP50": 0.3}, {"AP": (0.05, 0.15)}, True),
              CurvePoint(1, {"AP": 0.2, "AP50": 0.5}, {"AP": (0.1, 0.3), "AP50": (0.4, 0.6)},
                         False)]
    svg = curve_svg(points)
    assert svg.count("<circle") == 4 and svg.count("<polyline") == 2
    assert svg.count('fill="#fff"') == 2  # the kept-out model's two markers are hollow
    # error bars: one line per interval, on top of grid lines and legend lines
    assert len(re.findall(r'<line x1="([\d.]+)" x2="\1" y1', svg)) == 3
    assert ">0.60<" in svg and ">0.70<" not in svg  # the axis stops at the interval's top
    assert ">0.80<" in curve_svg([CurvePoint(0, {"AP": 0.61}, {}, True)])  # steps of 0.2


def test_draw_boxes_scales_the_image_and_outlines_each_box():
    boxes = np.array([[10, 10, 60, 50]], np.float32)  # on a 100x80 image
    out = Image.open(io.BytesIO(draw_boxes(jpeg(), boxes, [1], {1: "Bolt"}, size=200)))
    assert out.format == "JPEG" and out.size == (200, 160)
    edge = np.asarray(out.convert("RGB"))[60, 20]  # on the left edge of the scaled box
    inside = np.asarray(out.convert("RGB"))[60, 60]
    assert edge[0] > 150 and edge[2] < 100 and inside.max() < 80  # orange outline, dark inside


def test_metric_intervals_of_a_perfect_model_are_a_point_and_follow_the_gates_draws():
    ds = exact_set(12)
    perfect = exact_detections(ds, {1: set(range(1, 13))})
    assert metric_intervals(ds, perfect, resamples=30) == {"AP": (1.0, 1.0), "AP50": (1.0, 1.0)}
    half = exact_detections(ds, {1: set(range(1, 7))})
    got = metric_intervals(ds, half, resamples=60, confidence=0.8, seed=3)
    lo, hi = got["AP"]
    assert lo < hand_ap(6, 12) < hi and 0.0 <= lo and hi <= 1.0
    assert got == metric_intervals(ds, half, resamples=60, confidence=0.8, seed=3)
    # the same resamples as the gate's: the paired bootstrap's candidate column matches
    _, samples = paired_bootstrap(ds, half, perfect, resamples=60, confidence=0.8, seed=3)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(samples[:, 0], [10, 90])))


def test_metric_intervals_check_their_arguments():
    ds = exact_set(3)
    with pytest.raises(ValueError, match="resamples"):
        metric_intervals(ds, [], resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        metric_intervals(ds, [], confidence=1.0)
