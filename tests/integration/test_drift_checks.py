"""Evidently drift checks on controlled features: quiet on the same distribution, loud on shifts."""

from __future__ import annotations

import numpy as np
import pytest

from synthloop.config import MonitoringConfig
from synthloop.monitoring.decision import decide_drift
from synthloop.monitoring.drift import run_checks
from synthloop.monitoring.features import FeatureTable, image_statistics


def table(n: int, seed: int, *, emb_shift: float = 0.0, brightness: float = 120.0,
          dims: int = 64) -> FeatureTable:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(8, dims))  # a low-rank "embedding" space
    emb = rng.normal(size=(n, 8)) @ basis + rng.normal(scale=0.3, size=(n, dims))
    emb += emb_shift
    return FeatureTable(
        image_ids=tuple(range(n)), embeddings=emb.astype(np.float32),
        confidence=rng.beta(8, 2, n).astype(np.float32),
        stats={"brightness": rng.normal(brightness, 15, n), "contrast": rng.normal(50, 5, n),
               "sharpness": rng.normal(300, 40, n), "width": np.full(n, 320.0),
               "height": np.full(n, 240.0)})


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
    ref, cur = table(60, 1), table(30, 5, emb_shift=0.5, brightness=130.0)
    with_report = run_checks(ref, cur, cfg)
    without = run_checks(ref, cur, cfg, report=False)
    assert [c.name for c in with_report] == [c.name for c in without]
    for a, b in zip(with_report, without):
        assert a.score == pytest.approx(b.score, rel=1e-6, abs=1e-9), a.name
