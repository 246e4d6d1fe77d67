"""Evidently drift checks on controlled features: quiet on the same distribution, loud on shifts."""

from __future__ import annotations

import numpy as np
import pytest

from synthloop.config import MonitoringConfig
from synthloop.monitoring.decision import decide_drift
from synthloop.monitoring.drift import run_checks
from synthloop.monitoring.features import (OBJECT_COLUMNS, FeatureTable, image_statistics,
                                           object_statistics, rgb_to_lab)


def table(n: int, seed: int, *, emb_shift: float = 0.0, brightness: float = 120.0,
          dims: int = 64, object_b: float = 5.0, without_objects: float = 0.2) -> FeatureTable:
    """Image features of ``n`` images; object statistics NaN for a ``without_objects`` share."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(8, dims))  # a low-rank "embedding" space
    emb = rng.normal(size=(n, 8)) @ basis + rng.normal(scale=0.3, size=(n, dims))
    emb += emb_shift
    objects = {"object_L": rng.normal(55, 8, n), "object_a": rng.normal(2, 3, n),
               "object_b": rng.normal(object_b, 4, n), "object_area": rng.beta(2, 30, n),
               "object_aspect": rng.normal(0.3, 0.4, n)}
    empty = rng.random(n) < without_objects
    for v in objects.values():
        v[empty] = np.nan
    return FeatureTable(
        image_ids=tuple(range(n)), embeddings=emb.astype(np.float32),
        confidence=rng.beta(8, 2, n).astype(np.float32),
        stats={"brightness": rng.normal(brightness, 15, n), "contrast": rng.normal(50, 5, n),
               "sharpness": rng.normal(300, 40, n), "width": np.full(n, 320.0),
               "height": np.full(n, 240.0), **objects})


def decide(ref, cur, cfg):
    checks = run_checks(ref, cur, cfg)
    return decide_drift(checks, n_reference=len(ref), n_current=len(cur), min_current=20)


@pytest.mark.parametrize("method", ["mmd", "model"])
def test_same_distribution_is_quiet_and_a_shift_is_caught(method, tmp_path):
    cfg = MonitoringConfig(embedding_method=method, permutations=40)
    ref = table(120, seed=1)
    quiet = decide(ref, table(40, seed=2), cfg)
    assert not quiet.drifted, quiet.reason
    html = tmp_path / "report.html"
    shifted = run_checks(ref, table(40, seed=3, emb_shift=2.0), cfg, html_path=html)
    d = decide_drift(shifted, n_reference=120, n_current=40, min_current=20)
    assert d.drifted and "embedding" in d.drifted_checks, d.reason
    assert html.stat().st_size > 10_000  # Evidently's HTML report


def test_brightness_shift_fires_the_image_statistics_check():
    d = decide(table(120, seed=1), table(40, seed=4, brightness=160.0),
               MonitoringConfig(permutations=20))
    assert "brightness" in d.drifted_checks, d.reason


def test_fixed_threshold_is_used_when_configured():
    checks = run_checks(table(60, 1), table(30, 2), MonitoringConfig(embedding_threshold=123.0))
    assert checks[0].name == "embedding" and checks[0].threshold == 123.0


def test_image_statistics_of_a_blurred_image_lose_sharpness():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    blurred = ((img[:-1, :-1].astype(int) + img[1:, 1:] + img[:-1, 1:] + img[1:, :-1]) // 4
               ).astype(np.uint8)
    a, b = image_statistics(img), image_statistics(blurred)
    assert b["sharpness"] < a["sharpness"] / 2
    assert (a["width"], a["height"]) == (80.0, 60.0)
    assert abs(a["brightness"] - b["brightness"]) < 3
    with pytest.raises(ValueError):
        image_statistics(img[..., 0])


def test_the_score_only_path_gives_the_reports_numbers():
    cfg = MonitoringConfig(permutations=10, embedding_threshold=0.5)
    ref, cur = table(60, 1), table(30, 5, emb_shift=0.5, brightness=130.0, object_b=9.0)
    with_report = run_checks(ref, cur, cfg)
    without = run_checks(ref, cur, cfg, report=False)
    assert [c.name for c in with_report] == [c.name for c in without]
    assert with_report[-1].name == "objects"
    for a, b in zip(with_report, without):
        assert a.score == pytest.approx(b.score, rel=1e-6, abs=1e-9), a.name


def test_a_new_part_colour_is_caught_by_the_objects_check_only():
    """The benchmark's missed case: the image, its embedding and its statistics do not move,
    the colour inside the champion's boxes does."""
    cfg = MonitoringConfig(permutations=50)
    ref, cur = table(120, 1), table(40, 6, object_b=12.0)  # b*: grey-blue -> orange-ish
    d = decide(ref, cur, cfg)
    assert d.drifted and d.drifted_checks == ["objects"], d.reason
    obj = d.checks[-1]
    assert obj.method == "mmd" and obj.score > obj.threshold > 0
    assert not decide(ref, table(40, 7), cfg).drifted  # the same objects: quiet
    off = decide(ref, cur, cfg.model_copy(update={"objects": False}))
    assert not off.drifted and "objects" not in [c.name for c in off.checks], off.reason


def test_the_objects_check_waits_for_enough_detections():
    cfg = MonitoringConfig(permutations=20, object_min_images=10)
    ref, cur = table(120, 1), table(40, 6, object_b=14.0, without_objects=0.85)  # ~6 with boxes
    d = decide(ref, cur, cfg)
    assert np.isnan(d.checks[-1].score) and not d.drifted
    assert "not computed: objects" in d.reason
    no_columns = FeatureTable(ref.image_ids, ref.embeddings, ref.confidence,
                              {k: v for k, v in ref.stats.items() if not k.startswith("object_")})
    assert np.isnan(decide(no_columns, cur, cfg).checks[-1].score)  # a table from before


def test_object_statistics_look_inside_the_boxes():
    img = np.full((60, 80, 3), 128, np.uint8)  # grey background
    img[10:30, 20:60] = (230, 120, 30)  # an orange part, 40 x 20 px
    boxes = np.array([[20, 10, 60, 30], [0, 40, 10, 50], [70, 0, 200, 5]], np.float32)
    st = object_statistics(img, boxes, np.array([0.9, 0.2, 0.8]), min_score=0.5, max_objects=1)
    grey = rgb_to_lab(np.array([128, 128, 128], np.uint8))
    assert st["object_b"] > 40 and abs(grey[2]) < 0.05  # orange is far up the b* axis
    assert st["object_area"] == pytest.approx(40 * 20 / (80 * 60))
    assert st["object_aspect"] == pytest.approx(np.log(2.0))
    both = object_statistics(img, boxes, np.array([0.9, 0.2, 0.8]), min_score=0.5, max_objects=3)
    assert both["object_area"] == pytest.approx((800 + 10 * 5) / 2 / 4800)  # 2nd box clipped
    none = object_statistics(img, boxes, np.array([0.1, 0.2, 0.3]), min_score=0.5, max_objects=3)
    assert all(np.isnan(v) for v in none.values()) and set(none) == set(OBJECT_COLUMNS)
    white = rgb_to_lab(np.array([[255, 255, 255]], np.uint8))[0]
    assert white == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
