"""Statistics on hand-made predictions whose answers are known or computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from mmder.eval import stats


def test_t_interval_matches_a_hand_computation():
    # values 40, 50, 45: mean 45, sample sd 5, sem 5/sqrt(3), t_{0.975, 2} = 4.302652729911275
    got = stats.t_interval([40.0, 50.0, 45.0])
    half = 4.302652729911275 * 5.0 / math.sqrt(3)
    assert got.n == 3 and got.estimate == pytest.approx(45.0)
    assert (got.lo, got.hi) == pytest.approx((45.0 - half, 45.0 + half), rel=1e-9)


def test_a_percentage_interval_over_two_folds_stays_within_0_and_100_and_says_it_was_cut():
    # the quickstart's CFAS folds: 91.7 and 94.4; the bare t interval reaches past 100 %
    bare = stats.t_interval([91.7, 94.4])
    assert bare.hi > 100.0
    cut = stats.t_interval([91.7, 94.4], bounds=(0.0, 100.0))
    assert cut.lo == pytest.approx(bare.lo) and cut.hi == 100.0 and "cut" in cut.note
    inside = stats.t_interval([40.0, 50.0, 45.0], bounds=(0.0, 100.0))
    assert inside == stats.t_interval([40.0, 50.0, 45.0])  # nothing to cut: unchanged


def test_t_interval_with_one_value_has_no_interval_and_says_so():
    got = stats.t_interval([42.0])
    assert got.estimate == 42.0 and got.n == 1
    assert math.isnan(got.lo) and math.isnan(got.hi) and "no interval" in got.note


def test_mcnemar_exact_on_8_and_2_discordant_pairs():
    # 8 clips only A gets right, 2 only B, 20 both: p = 2 * P(X <= 2), X ~ Bin(10, 0.5) = 0.109375
    a = np.array([1] * 8 + [0] * 2 + [1] * 20, dtype=bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 20, dtype=bool)
    got = stats.mcnemar_exact(a, b)
    assert (got.b, got.c, got.n) == (8, 2, 30)
    assert got.pvalue == pytest.approx(2 * binom.cdf(2, 10, 0.5)) == pytest.approx(0.109375)


def test_mcnemar_without_discordant_pairs_is_p_one():
    same = np.ones(5, dtype=bool)
    assert stats.mcnemar_exact(same, same).pvalue == 1.0


def test_war_uar_and_per_class_recall():
    t = ["a", "a", "a", "b"]
    p = ["a", "a", "b", "b"]
    assert stats.war(t, p) == pytest.approx(75.0)
    assert stats.per_class_recall(t, p) == {"a": pytest.approx(200 / 3), "b": 100.0}
    assert stats.uar(t, p) == pytest.approx((200 / 3 + 100) / 2)
    assert math.isnan(stats.per_class_recall(t, p, classes=["a", "b", "c"])["c"])


def test_paired_bootstrap_interval_contains_the_true_difference():
    rng = np.random.default_rng(1)
    n = 2000
    t = rng.integers(0, 4, n)
    # A is right 80 % of the time, B 60 %: the population WAR difference is 20 points
    a = np.where(rng.random(n) < 0.8, t, (t + 1) % 4)
    b = np.where(rng.random(n) < 0.6, t, (t + 2) % 4)
    for metric in ("war", "uar"):
        got = stats.paired_bootstrap(t, a, b, metric=metric, n_resamples=1000, seed=0)
        assert got.lo < 20.0 < got.hi, (metric, got)
        assert got.lo < got.estimate < got.hi
    assert stats.paired_bootstrap(t, a, b).estimate == pytest.approx(stats.war(t, a) - stats.war(t, b))


def test_paired_bootstrap_of_identical_predictions_is_zero():
    t = np.array([0, 1, 1, 0])
    got = stats.paired_bootstrap(t, t, t)
    assert (got.estimate, got.lo, got.hi) == (0.0, 0.0, 0.0) and got.note


def test_paired_fold_tests_handle_too_few_and_zero_differences():
    few = stats.paired_fold_tests([50.0], [40.0])
    assert math.isnan(few.t_pvalue) and "too few" in few.note
    zero = stats.paired_fold_tests([50.0, 60.0, 70.0], [50.0, 60.0, 70.0])
    assert math.isnan(zero.wilcoxon_pvalue) and "zero" in zero.note
    got = stats.paired_fold_tests([50.0, 62.0, 71.0, 58.0], [45.0, 60.0, 64.0, 50.0])
    assert got.n == 4 and got.mean_diff == pytest.approx(5.5)
    assert 0 < got.t_pvalue < 0.05 and got.wilcoxon_pvalue == pytest.approx(0.125)  # exact: 2 / 2^4


def test_bh_adjust_against_a_hand_computation():
    # sorted p 0.01, 0.02, 0.03, 0.04 (m = 4): p * m / rank = 0.04, 0.04, 0.04, 0.04; 0.5 -> 0.5 * 5/5
    p = [0.04, 0.01, 0.5, 0.03, 0.02]
    # with m = 5: 0.01*5/1=0.05, 0.02*5/2=0.05, 0.03*5/3=0.05, 0.04*5/4=0.05, 0.5*5/5=0.5
    np.testing.assert_allclose(stats.bh_adjust(p), [0.05, 0.05, 0.5, 0.05, 0.05])
    q = [0.001, 0.02, 0.04]  # 0.003, 0.03, 0.04 (monotone from the top)
    np.testing.assert_allclose(stats.bh_adjust(q), [0.003, 0.03, 0.04])
    with_nan = stats.bh_adjust([0.001, float("nan"), 0.02, 0.04])
    assert math.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2, 3]], [0.003, 0.03, 0.04])
