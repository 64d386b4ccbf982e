"""Statistics on hand-made predictions whose answers are known or computed by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, ttest_rel, wilcoxon

from mmder.eval import stats


def test_t_interval_matches_a_hand_computation():
    # values 40, 50, 45: mean 45, sample sd 5, sem 5/sqrt(3), t_{0.975, 2} = 4.302652729911275
    got = stats.t_interval([40.0, 50.0, 45.0])
    half = 4.302652729911275 * 5.0 / math.sqrt(3)
    assert got.n == 3 and got.estimate == pytest.approx(45.0)
    assert (got.lo, got.hi) == pytest.approx((45.0 - half, 45.0 + half), rel=1e-9)


def test_a_percentage_interval_stays_within_0_and_100_and_says_it_was_cut():
    # three folds near the top: the bare t interval reaches past 100 %
    bare = stats.t_interval([91.7, 94.4, 99.5])
    assert bare.hi > 100.0
    cut = stats.t_interval([91.7, 94.4, 99.5], bounds=(0.0, 100.0))
    assert cut.lo == pytest.approx(bare.lo) and cut.hi == 100.0 and "cut" in cut.note
    inside = stats.t_interval([40.0, 50.0, 45.0], bounds=(0.0, 100.0))
    assert inside == stats.t_interval([40.0, 50.0, 45.0])  # nothing to cut: unchanged


def test_two_folds_give_no_t_interval_and_say_so_rather_than_0_to_100():
    # the quickstart's FSLF folds: t with 1 degree of freedom spans [0, 100] once cut
    got = stats.t_interval([40.2, 94.6], bounds=(0.0, 100.0))
    assert got.estimate == pytest.approx(67.4) and got.n == 2
    assert math.isnan(got.lo) and math.isnan(got.hi) and "too few" in got.note
    assert stats.t_interval([40.2, 94.6], min_n=2).hi > 100.0  # what used to be printed, cut


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
    assert got.t_pvalue == pytest.approx(ttest_rel([50.0, 62.0, 71.0, 58.0], [45.0, 60.0, 64.0, 50.0]).pvalue)
    # 4 pairs: the smallest exact Wilcoxon p is 2/2^4 = 0.125, so no p is printed, only why
    assert math.isnan(got.wilcoxon_pvalue) and "cannot reach p<0.05 below 6 pairs" in got.note


def test_two_folds_give_no_paired_t_and_six_pairs_give_the_exact_wilcoxon():
    two = stats.paired_fold_tests([93.1, 93.0], [45.1, 45.2])  # the quickstart's CFAS vs video
    assert math.isnan(two.t_pvalue) and math.isnan(two.wilcoxon_pvalue)
    assert "too few pairs for a paired t-test" in two.note and "Wilcoxon" in two.note
    a, b = [60.0, 62.0, 71.0, 58.0, 66.0, 70.0], [55.0, 61.0, 64.0, 50.0, 60.0, 69.5]
    six = stats.paired_fold_tests(a, b)
    # all 6 differences positive: exact two-sided p = 2 / 2^6
    assert six.wilcoxon_pvalue == pytest.approx(2 / 64) == pytest.approx(wilcoxon(a, b).pvalue)
    assert six.t_pvalue == pytest.approx(ttest_rel(a, b).pvalue) and six.note == ""


def _exact_cluster_bootstrap(t, a, b, groups, metric):
    """Every ordered draw of len(groups) clusters with replacement, each equally likely: the bootstrap
    distribution a resampling bootstrap estimates, computed with the plain metric functions."""
    fn = stats.war if metric == "war" else stats.uar
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    values = []
    for draw in itertools.product(range(len(members)), repeat=len(members)):
        idx = np.concatenate([members[k] for k in draw])
        values.append(fn(t[idx], a[idx]) - fn(t[idx], b[idx]))
    return np.array(values)


@pytest.mark.parametrize("metric", ["war", "uar"])
def test_speaker_bootstrap_matches_the_exact_bootstrap_distribution(metric):
    # 5 speakers of unequal size: 5^5 = 3125 equally likely resamples, enumerated by hand
    rng = np.random.default_rng(3)
    sizes = [6, 9, 4, 8, 7]
    groups = np.repeat(np.arange(5), sizes)
    t = rng.integers(0, 3, groups.size)
    a = np.where(rng.random(groups.size) < 0.75, t, (t + 1) % 3)
    b = np.where(rng.random(groups.size) < 0.7, t, (t + 2) % 3)
    exact = _exact_cluster_bootstrap(t, a, b, groups, metric)
    got = stats.paired_speaker_bootstrap(t, a, b, groups, metric, n_resamples=20000, seed=1)
    fn = stats.war if metric == "war" else stats.uar
    assert got.estimate == pytest.approx(fn(t, a) - fn(t, b)) and got.clusters == 5
    # the distribution is discrete: 20000 draws put each end between the exact 2 % and 3 % quantiles
    q = np.quantile(exact, [0.02, 0.03, 0.97, 0.98])
    assert q[0] <= got.lo <= q[1] and q[2] <= got.hi <= q[3], (got, q)
    exact_p = 2 * min(np.mean(exact <= 0), np.mean(exact >= 0))  # about 0.02 and 0.01 here
    assert 0.005 < exact_p < 0.05 and got.pvalue == pytest.approx(exact_p, abs=0.004)


def test_one_clip_per_speaker_is_the_clip_level_bootstrap():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 4, 400)
    a = np.where(rng.random(400) < 0.8, t, (t + 1) % 4)
    b = np.where(rng.random(400) < 0.7, t, (t + 2) % 4)
    by_speaker = stats.paired_speaker_bootstrap(t, a, b, np.arange(400))
    by_clip = stats.paired_bootstrap(t, a, b)
    assert by_speaker.estimate == pytest.approx(by_clip.estimate)
    assert (by_speaker.lo, by_speaker.hi) == pytest.approx((by_clip.lo, by_clip.hi), abs=1.0)


def _one_speaker_carries_the_difference():
    """6 speakers x 50 clips. A beats B on 40 clips of speaker 0; on each other speaker B gets 2 clips
    A misses. Pooled per clip that is 40 against 10; per speaker it is one speaker against five."""
    t, a, b, spk = [], [], [], []
    for s in range(6):
        right_a = np.r_[np.ones(45), np.zeros(5)] if s == 0 else np.r_[np.ones(30), np.zeros(20)]
        right_b = np.r_[np.ones(5), np.zeros(45)] if s == 0 else np.r_[np.ones(32), np.zeros(18)]
        t += [0] * 50
        a += list(np.where(right_a == 1, 0, 1))
        b += list(np.where(right_b == 1, 0, 1))
        spk += [f"spk{s}"] * 50
    return np.array(t), np.array(a), np.array(b), np.array(spk)


def test_clip_level_mcnemar_is_significant_where_the_speaker_bootstrap_is_not():
    t, a, b, spk = _one_speaker_carries_the_difference()
    clip = stats.mcnemar_exact(a == t, b == t)
    assert (clip.b, clip.c) == (40, 10)
    assert clip.pvalue == pytest.approx(binomtest(10, 50, 0.5).pvalue) and clip.pvalue < 1e-4
    speaker = stats.paired_speaker_bootstrap(t, a, b, spk)
    assert speaker.estimate == pytest.approx(100 * (40 - 10) / 300)
    assert speaker.lo < 0 < speaker.hi and speaker.pvalue > 0.05 and speaker.clusters == 6
    # resampling clips instead hides the clustering and excludes 0
    assert stats.paired_bootstrap(t, a, b).lo > 0


def test_too_few_speakers_give_no_interval_and_say_so():
    t, a, b, spk = _one_speaker_carries_the_difference()
    few = np.where(spk == "spk0", "x", np.where(np.isin(spk, ["spk1", "spk2"]), "y", "z"))
    got = stats.paired_speaker_bootstrap(t, a, b, few, unit="fold")
    assert got.clusters == 3 and got.unit == "fold"
    assert math.isnan(got.lo) and math.isnan(got.pvalue) and "3 fold(s): too few" in got.note
    single = stats.speaker_bootstrap(t, a, spk, "uar")
    assert single.lo <= single.estimate <= single.hi and math.isnan(single.pvalue)


def test_one_seed_and_resample_count_give_the_same_interval_every_time():
    t, a, b, spk = _one_speaker_carries_the_difference()
    assert stats.paired_speaker_bootstrap(t, a, b, spk) == stats.paired_speaker_bootstrap(
        t, a, b, spk, n_resamples=stats.RESAMPLES, seed=stats.SEED
    )


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
