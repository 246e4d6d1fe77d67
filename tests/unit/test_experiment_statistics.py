"""The experiment's statistics on known numbers: standard error, percentile bootstrap, and the
labels a curve needs to reach a target (the paper's "25 DBAL labels ~ 50 random ones")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthloop.experiments.statistics import (bootstrap_labels_to_match, bootstrap_mean_interval,
                                              labels_to_match, mean_se, percentile_interval)


def test_standard_error_of_known_values():
    mean, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)  # s / sqrt(n)
    assert mean_se([0.7]) == (0.7, 0.0)
    assert all(math.isnan(v) for v in mean_se([]))


def test_bootstrap_of_constant_values_is_a_point():
    assert bootstrap_mean_interval([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4))
    assert bootstrap_mean_interval([0.3]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_mean_interval([]))


def test_bootstrap_of_two_values_has_the_exact_distribution():
    # resampled means of {0, 1}: 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    assert bootstrap_mean_interval([0.0, 1.0], resamples=4000, confidence=0.95) == (0.0, 1.0)
    assert bootstrap_mean_interval([0.0, 1.0], resamples=4000, confidence=0.4) == (0.5, 0.5)


def test_bootstrap_matches_the_normal_interval_on_a_large_sample():
    values = np.random.default_rng(3).normal(0.6, 0.05, size=400)
    mean, se = mean_se(values)
    lo, hi = bootstrap_mean_interval(values, resamples=4000, confidence=0.95, seed=1)
    assert lo == pytest.approx(mean - 1.96 * se, abs=0.3 * se)
    assert hi == pytest.approx(mean + 1.96 * se, abs=0.3 * se)


def test_bootstrap_is_seeded():
    values = [0.61, 0.64, 0.70, 0.58, 0.66]
    assert bootstrap_mean_interval(values, seed=7) == bootstrap_mean_interval(values, seed=7)
    assert bootstrap_mean_interval(values, seed=7) != bootstrap_mean_interval(values, seed=8)


def test_percentile_interval_keeps_infinite_ends():
    samples = np.array([1.0, 2.0, 3.0, math.inf])
    assert percentile_interval(samples, 0.5) == (1.0, 3.0)
    assert percentile_interval(samples, 0.99)[1] == math.inf


@pytest.mark.parametrize("target, expected", [(0.7, 15.0), (0.6, 10.0), (0.5, 0.0), (0.45, 0.0),
                                              (0.8, 20.0), (0.81, None)])
def test_labels_to_match_interpolates_linearly(target, expected):
    assert labels_to_match([0, 10, 20], [0.5, 0.6, 0.8], target) == (
        None if expected is None else pytest.approx(expected))


def test_labels_to_match_takes_the_first_crossing_in_label_order():
    # points given out of order; the curve rises past 0.7, dips, rises again
    assert labels_to_match([20, 0, 30, 10], [0.6, 0.5, 0.9, 0.75], 0.7) == pytest.approx(8.0)


def test_papers_dbal_curve_against_random_at_50():
    # PAPER.md: S+R random at 50 (three seeds), S+R DBAL at 0 (M0_S), 10, 25, 50
    random_50 = [0.724, 0.718, 0.720]
    dbal = [(0, [0.555]), (10, [0.666]), (25, [0.718]), (50, [0.735])]
    est = bootstrap_labels_to_match(dbal, random_50, resamples=1000, seed=0)
    assert est.target == pytest.approx(np.mean(random_50))
    assert est.labels == pytest.approx(25 + (np.mean(random_50) - 0.718) / (0.735 - 0.718) * 25)
    lo, hi = est.interval
    assert est.reached_share == 1.0
    # only random's seeds vary: its resampled means run from 0.718 (all three draws the
    # lowest seed, p = 1/27 > 2.5%) to 0.724, mapped through DBAL's segment from 25 to 50
    assert lo == pytest.approx(25.0)
    assert hi == pytest.approx(25 + (0.724 - 0.718) / (0.735 - 0.718) * 25)


def test_not_reached_is_said_and_has_no_interval():
    est = bootstrap_labels_to_match([(0, [0.5]), (10, [0.55, 0.56])], [0.7, 0.72], resamples=500)
    assert est.labels is None and est.interval == (None, None) and est.reached_share == 0.0


def test_an_interval_end_is_open_when_some_resamples_never_reach():
    # DBAL at 10 is just above random's mean for some seeds and below it for others
    est = bootstrap_labels_to_match([(0, [0.5, 0.5]), (10, [0.69, 0.72])], [0.70, 0.70],
                                    resamples=2000, confidence=0.95, seed=0)
    assert est.labels == pytest.approx(10 * (0.70 - 0.5) / (0.705 - 0.5))
    assert est.interval[0] is not None and est.interval[1] is None
    assert 0.6 < est.reached_share < 0.9  # 3 of 4 resamples of DBAL's two seeds reach 0.70
