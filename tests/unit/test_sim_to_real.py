"""The sim-to-real gap math (monitoring/sim_to_real.py) on synthetic Gaussians, and the mix rule."""

from __future__ import annotations

import numpy as np
import pytest

from synthloop.config import FinetuneMixConfig
from synthloop.monitoring.sim_to_real import (domain_auc, measure_gap, median_bandwidth,
                                              mmd2_unbiased, synthetic_count, synthetic_share)


def gaussians(shift: float, *, n: int = 60, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d))
    y[:, 0] += shift
    return x, y


def test_equal_distributions_give_mmd_near_zero_and_auc_near_half():
    x, y = gaussians(0.0)
    gap = measure_gap(x, y, permutations=200)
    assert abs(gap.mmd2) < 0.02
    assert gap.p_value > 0.05
    assert 0.3 < gap.auc < 0.7


def test_shifted_distributions_give_a_large_gap():
    x, y = gaussians(3.0)
    gap = measure_gap(x, y, permutations=200)
    same = measure_gap(*gaussians(0.0), permutations=0)
    assert gap.mmd2 > 0.1 > 5 * abs(same.mmd2)
    assert gap.p_value < 0.01
    assert gap.auc > 0.95


def test_gap_grows_with_the_shift():
    mmds = [mmd2_unbiased(*gaussians(s), bandwidth=4.0)["mmd2"] for s in (0.0, 0.5, 1.0, 2.0)]
    assert mmds == sorted(mmds)
    aucs = [domain_auc(*gaussians(s, n=100)) for s in (0.0, 1.0, 2.0)]
    assert aucs == sorted(aucs)


def test_mmd_is_the_unbiased_estimate():
    # Hand computation on 1-D points with sigma = 1: within-sample sums skip i == j.
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    k = lambda a, b: np.exp(-(a - b) ** 2 / 2)  # noqa: E731
    want = (2 * k(0, 1)) / 2 + (2 * k(0, 2)) / 2 - 2 * (k(0, 0) + k(0, 2) + k(1, 0) + k(1, 2)) / 4
    assert mmd2_unbiased(x, y, bandwidth=1.0)["mmd2"] == pytest.approx(want)
    # The biased (V-statistic) estimate would be >= 0; the unbiased one is negative here.
    assert mmd2_unbiased(np.array([[0.0], [1.0]]), np.array([[0.1], [0.9]]),
                         bandwidth=1.0)["mmd2"] < 0


def test_median_bandwidth_is_the_median_pairwise_distance():
    x, y = np.array([[0.0], [1.0]]), np.array([[3.0], [10.0]])
    # distances 1, 3, 10, 2, 9, 7 -> median of the six: (3 + 7) / 2
    assert median_bandwidth(x, y) == pytest.approx(5.0)


def test_bad_samples_are_refused():
    with pytest.raises(ValueError, match="same d"):
        mmd2_unbiased(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        domain_auc(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mmd2_unbiased(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_share_off_and_fixed():
    assert synthetic_share(FinetuneMixConfig(), auc=0.6, labels=10) == 0.0
    fixed = FinetuneMixConfig(mode="fixed", synthetic_share=0.25)
    assert synthetic_share(fixed, auc=None, labels=10) == 0.25


def test_gap_rule_more_renders_with_few_labels_and_a_small_gap():
    rule = FinetuneMixConfig(mode="gap_rule", base=0.5, n0=20, lo=0.05, hi=0.5)
    # no gap, no labels: the base share
    assert synthetic_share(rule, auc=0.5, labels=0) == pytest.approx(0.5)
    # labels halve it at |L| = n0; an AUC of 0.75 (excess 0.5) halves it again
    assert synthetic_share(rule, auc=0.5, labels=20) == pytest.approx(0.25)
    assert synthetic_share(rule, auc=0.75, labels=20) == pytest.approx(0.125)
    # separable domains or many labels: the floor
    assert synthetic_share(rule, auc=1.0, labels=10) == pytest.approx(0.05)
    assert synthetic_share(rule, auc=0.5, labels=10_000) == pytest.approx(0.05)
    # below-chance AUC counts as no gap
    assert synthetic_share(rule, auc=0.3, labels=0) == pytest.approx(0.5)
    shares = [synthetic_share(rule, auc=a, labels=10) for a in (0.5, 0.6, 0.8, 0.95)]
    assert shares == sorted(shares, reverse=True)
    with pytest.raises(ValueError, match="AUC"):
        synthetic_share(rule, auc=None, labels=10)


def test_mix_config_checks_its_bounds():
    with pytest.raises(ValueError, match="lo"):
        FinetuneMixConfig(mode="gap_rule", lo=0.4, hi=0.2)


def test_synthetic_count_makes_the_share():
    assert synthetic_count(0.0, 10) == 0
    assert synthetic_count(0.25, 30) == 10  # 10 of 40
    assert synthetic_count(0.5, 10) == 10
    with pytest.raises(ValueError):
        synthetic_count(1.0, 10)


def test_the_rule_reads_the_box_level_auc_when_a_class_was_measured():
    from synthloop.stages.sim_to_real import metrics_of, rule_auc

    image = {"mmd2": 0.6, "auc": 1.0, "p_value": 0.01}
    classes = {"Bolt": {"mmd2": 0.1, "auc": 0.9}, "Washer": {"mmd2": 0.2, "auc": 0.8},
               "Nut": {"skipped": "2 render boxes"}}
    assert rule_auc(image, classes) == (pytest.approx(0.85), "box")
    assert rule_auc(image, {"Nut": {"skipped": "none"}}) == (1.0, "image")
    metrics = metrics_of({"image": image, "classes": classes, "rule_auc": 0.85})
    assert metrics == {"sim_to_real_mmd": 0.6, "sim_to_real_auc": 1.0, "sim_to_real_mmd_p": 0.01,
                       "sim_to_real_rule_auc": 0.85, "sim_to_real_mmd.Bolt": 0.1,
                       "sim_to_real_auc.Bolt": 0.9, "sim_to_real_mmd.Washer": 0.2,
                       "sim_to_real_auc.Washer": 0.8}
