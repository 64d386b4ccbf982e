"""Statistics a reviewer asks for, as plain functions over arrays (no MLflow, no pandas needed).

- ``t_interval``: mean of per-fold metrics with a 95 % Student t interval; with one value there is
  no interval (NaN), rather than a misleading zero-width one.
- ``mcnemar_exact``: are two classifiers' errors on the *same* test clips different? (paired, exact)
- ``speaker_bootstrap`` / ``paired_speaker_bootstrap``: an interval (and, for a difference, a p-value)
  that resamples test *speakers* with all their clips. The folds are speaker-independent, so the
  speaker is the unit that was sampled; clips of one speaker are not independent draws.
- ``paired_bootstrap``: the same difference resampling single clips (kept for comparison: it assumes
  independent clips and is too narrow when clips cluster by speaker).
- ``paired_fold_tests``: paired t-test and Wilcoxon signed-rank over folds x seeds, saying so when
  there are too few pairs to mean anything or no differences to test.
- ``bh_adjust``: Benjamini-Hochberg false discovery rate correction for all-pairs comparisons.

scipy and statsmodels do the statistics; these wrappers only fix conventions (percent, NaN, notes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

__all__ = [
    "Interval",
    "McNemar",
    "PairedTests",
    "bh_adjust",
    "mcnemar_exact",
    "ClusterInterval",
    "paired_bootstrap",
    "paired_fold_tests",
    "paired_speaker_bootstrap",
    "speaker_bootstrap",
    "per_class_recall",
    "t_interval",
    "uar",
    "war",
]

METRICS = ("war", "uar")
# One bootstrap everywhere (compare on the command line, the leaderboard, the report), so the same pair
# gets the same interval wherever it is printed.
RESAMPLES = 2000
SEED = 0
# Below these counts an interval or a test cannot mean anything; the output says so instead of a number.
MIN_CLUSTERS = 5  # speakers (or folds) a cluster bootstrap needs
MIN_T_VALUES = 3  # values a t interval or paired t-test needs (n=2: one degree of freedom)
MIN_WILCOXON_PAIRS = 6  # below 6 pairs the exact two-sided Wilcoxon p is never below 0.05


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval; ``lo``/``hi`` are NaN when none can be given."""

    estimate: float
    lo: float
    hi: float
    n: int
    note: str = ""


def t_interval(
    values: ArrayLike,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
    min_n: int = MIN_T_VALUES,
) -> Interval:
    """Mean and Student t interval (n-1 degrees of freedom) over per-fold x seed values.

    Below ``min_n`` values there is no interval (NaN) and the note says why: from 2 folds the t
    interval has one degree of freedom (t = 12.7) and reads "67 [0, 100]", which tells a reader nothing.
    ``bounds`` is the metric's range (0-100 for a percentage): a t interval reaching past it is cut at
    the bound and the note says so.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, "no values")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), 1, "one value: no interval")
    if n < min_n:
        note = f"n={n}: too few for a t interval (needs {min_n})"
        return Interval(mean, float("nan"), float("nan"), n, note)
    sem = float(st.sem(x))
    if sem == 0.0:
        return Interval(mean, mean, mean, n, "all values equal")
    lo, hi = st.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    if bounds is not None and (lo < bounds[0] or hi > bounds[1]):
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        return Interval(mean, float(lo), float(hi), n, f"cut to the range [{bounds[0]:g}, {bounds[1]:g}]")
    return Interval(mean, float(lo), float(hi), n)


def war(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Weighted average recall = accuracy, in percent."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return 100.0 * float(np.mean(t == p)) if t.size else float("nan")


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[object] | None = None) -> dict:
    """Recall of each true class (percent); a class absent from ``y_true`` is NaN, not 0."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    names = list(classes) if classes is not None else sorted(set(t.tolist()))
    out = {}
    for c in names:
        mask = t == c
        out[c] = 100.0 * float(np.mean(p[mask] == c)) if mask.any() else float("nan")
    return out


def uar(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Unweighted average recall = mean of per-class recalls over the classes present, in percent."""
    recalls = [r for r in per_class_recall(y_true, y_pred).values() if np.isfinite(r)]
    return float(np.mean(recalls)) if recalls else float("nan")


@dataclass(frozen=True)
class McNemar:
    """Discordant counts b (A right, B wrong) and c (A wrong, B right) and the exact two-sided p."""

    b: int
    c: int
    pvalue: float
    n: int


def mcnemar_exact(correct_a: ArrayLike, correct_b: ArrayLike) -> McNemar:
    """McNemar's exact (binomial) test on paired per-clip correctness of two classifiers."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired predictions differ in length: {a.size} vs {b.size}")
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    n01, n10 = int(table[0, 1]), int(table[1, 0])
    p = 1.0 if n01 + n10 == 0 else float(mcnemar(table, exact=True).pvalue)
    return McNemar(b=n01, c=n10, pvalue=p, n=int(a.size))


def _vector_metric(metric: str, classes: NDArray) -> object:
    """WAR or UAR over the last axis, vectorised so scipy's bootstrap runs in batches."""

    def war_v(t: NDArray, p: NDArray) -> NDArray:
        return 100.0 * np.mean(t == p, axis=-1)

    def uar_v(t: NDArray, p: NDArray) -> NDArray:
        recalls = []
        for c in classes:
            in_class = t == c
            hits = np.sum(in_class & (p == c), axis=-1)
            count = np.sum(in_class, axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls.append(np.where(count > 0, hits / np.maximum(count, 1), np.nan))
        return 100.0 * np.nanmean(np.stack(recalls), axis=0)

    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not allowed; allowed: {', '.join(METRICS)}")
    return war_v if metric == "war" else uar_v


def paired_bootstrap(
    y_true: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    metric: str = "war",
    confidence: float = 0.95,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """Interval of metric(A) - metric(B) (percent points), resampling test clips with their pairs.

    This treats clips as independent draws; ``paired_speaker_bootstrap`` is the one to report when
    the test set is a sample of speakers.

    Labels are mapped to integer codes first so the vectorised statistic compares small ints.
    """
    t_raw, a_raw, b_raw = (np.asarray(x) for x in (y_true, pred_a, pred_b))
    if not (t_raw.shape == a_raw.shape == b_raw.shape):
        raise ValueError("y_true, pred_a and pred_b must be paired (same length)")
    _, codes = np.unique(np.concatenate([t_raw, a_raw, b_raw]).astype(str), return_inverse=True)
    n = t_raw.size
    t, a, b = codes[:n], codes[n : 2 * n], codes[2 * n :]
    classes = np.unique(t)
    fn = _vector_metric(metric, classes)

    def diff(tt: NDArray, aa: NDArray, bb: NDArray, axis: int = -1) -> NDArray:
        return fn(tt, aa) - fn(tt, bb)

    estimate = float(diff(t, a, b))
    if n < 2:
        return Interval(estimate, float("nan"), float("nan"), n, "fewer than 2 test clips: no interval")
    if np.array_equal(a, b):
        return Interval(estimate, 0.0, 0.0, n, "identical predictions")
    res = st.bootstrap(
        (t, a, b),
        diff,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high), n)


@dataclass(frozen=True)
class ClusterInterval:
    """A metric, or a difference of two, with a bootstrap interval over clusters of test clips.

    ``unit`` names a cluster ("speaker"; "fold" when the predictions name no speaker); ``pvalue`` (a
    difference only) is the two-sided bootstrap p of "no difference". ``lo``/``hi``/``pvalue`` are NaN,
    with a note, when there are too few clusters to resample.
    """

    estimate: float
    lo: float
    hi: float
    clusters: int
    unit: str = "speaker"
    pvalue: float = float("nan")
    note: str = ""
    resamples: int = 0

    @property
    def smallest_p(self) -> bool:
        """No resample reached 0: p is only bounded, by 2 / (resamples + 1)."""
        return self.resamples > 0 and self.pvalue <= 2.0 / (self.resamples + 1.0) + 1e-12

    @property
    def has_interval(self) -> bool:
        return bool(np.isfinite(self.lo))


def _cluster_tables(
    y_true: ArrayLike, preds: Sequence[ArrayLike], clusters: ArrayLike
) -> tuple[NDArray, list[NDArray]]:
    """Per cluster and true class: how many clips (C x K), and how many each prediction got right."""
    t = np.asarray(y_true).astype(str)
    ps = [np.asarray(p).astype(str) for p in preds]
    g = np.asarray(clusters).astype(str)
    if any(x.shape != t.shape for x in (*ps, g)):
        raise ValueError("y_true, the predictions and the clusters must be paired (same length)")
    classes, t_code = np.unique(t, return_inverse=True)
    _, g_code = np.unique(g, return_inverse=True)
    shape = (int(g_code.max()) + 1 if g.size else 0, classes.size)
    counts = np.zeros(shape)
    np.add.at(counts, (g_code, t_code), 1.0)
    hits = []
    for p in ps:
        h = np.zeros(shape)
        np.add.at(h, (g_code, t_code), (p == t).astype(float))
        hits.append(h)
    return counts, hits


def _from_counts(metric: str, counts: NDArray, hits: NDArray) -> NDArray:
    """WAR or UAR (percent) from summed per-class counts and hits; classes absent from a draw drop out."""
    if metric == "war":
        return 100.0 * hits.sum(axis=-1) / counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(counts > 0, hits / np.maximum(counts, 1.0), np.nan)
    return 100.0 * np.nanmean(recall, axis=-1)


def _cluster_bootstrap(
    y_true: ArrayLike,
    preds: Sequence[ArrayLike],
    clusters: ArrayLike,
    metric: str,
    unit: str,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> ClusterInterval:
    """Resample whole clusters with replacement (scipy's bootstrap over cluster indices); the statistic
    is the metric of the first prediction, minus that of the second when there are two."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not allowed; allowed: {', '.join(METRICS)}")
    counts, hits = _cluster_tables(y_true, preds, clusters)

    def statistic(idx: NDArray, axis: int = -1) -> NDArray:
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        values = [_from_counts(metric, counts[idx].sum(axis=-2), h[idx].sum(axis=-2)) for h in hits]
        return values[0] - values[1] if len(values) == 2 else values[0]

    n = counts.shape[0]
    if n == 0:
        return ClusterInterval(float("nan"), float("nan"), float("nan"), 0, unit, note="no test clips")
    estimate = float(statistic(np.arange(n)))
    nan = float("nan")
    if n < MIN_CLUSTERS:
        note = f"{n} {unit}(s): too few to resample for an interval (needs {MIN_CLUSTERS})"
        return ClusterInterval(estimate, nan, nan, n, unit, note=note)
    if len(hits) == 2 and np.array_equal(hits[0], hits[1]):
        return ClusterInterval(estimate, 0.0, 0.0, n, unit, 1.0, "the same clips right: nothing differs")
    res = st.bootstrap(
        (np.arange(n),),
        statistic,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    p = nan
    if len(hits) == 2:  # two-sided: how often a resample puts the difference on the other side of 0
        dist = res.bootstrap_distribution
        tail = min(np.sum(dist <= 0.0), np.sum(dist >= 0.0))
        p = min(1.0, 2.0 * (1.0 + float(tail)) / (n_resamples + 1.0))
    return ClusterInterval(estimate, lo, hi, n, unit, p, resamples=n_resamples)


def speaker_bootstrap(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    speakers: ArrayLike,
    metric: str = "war",
    unit: str = "speaker",
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> ClusterInterval:
    """Pooled WAR/UAR with a 95 % percentile interval that resamples test speakers, all their clips with
    them (every seed's predictions of a speaker stay in its cluster)."""
    return _cluster_bootstrap(y_true, [y_pred], speakers, metric, unit, n_resamples, seed)


def paired_speaker_bootstrap(
    y_true: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    speakers: ArrayLike,
    metric: str = "war",
    unit: str = "speaker",
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> ClusterInterval:
    """metric(A) - metric(B) in points with a 95 % interval and a two-sided p, resampling test speakers
    with both classifiers' predictions of their clips (a cluster bootstrap: the speakers were sampled,
    their clips were not). p = 2 x the share of resamples on the far side of 0, +1-corrected."""
    return _cluster_bootstrap(y_true, [pred_a, pred_b], speakers, metric, unit, n_resamples, seed)


@dataclass(frozen=True)
class PairedTests:
    """Paired t-test and Wilcoxon over fold x seed values; p is NaN with a note when untestable."""

    n: int
    mean_diff: float
    t_pvalue: float
    wilcoxon_pvalue: float
    note: str = ""


def paired_fold_tests(a: ArrayLike, b: ArrayLike) -> PairedTests:
    """Per-fold x seed metric of A vs B on the same folds and seeds.

    A test that cannot mean anything at this n gives NaN and a note instead of a p-value: the paired
    t-test below ``MIN_T_VALUES`` pairs, Wilcoxon below ``MIN_WILCOXON_PAIRS`` (its smallest exact
    two-sided p with 5 pairs is 2/32 = 0.0625).
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {x.size} vs {y.size}")
    n = int(x.size)
    d = x - y
    mean_diff = float(d.mean()) if n else float("nan")
    nan = float("nan")
    if n < 2:
        return PairedTests(n, mean_diff, nan, nan, f"{n} paired fold(s): too few for a test")
    if np.all(d == 0):
        return PairedTests(n, mean_diff, nan, nan, "all differences are zero: nothing to test")
    notes = []
    t_p = nan
    if n < MIN_T_VALUES:
        notes.append(f"n={n}: too few pairs for a paired t-test (needs {MIN_T_VALUES})")
    else:
        t_p = float(st.ttest_rel(x, y).pvalue)
        if not np.isfinite(t_p):  # constant nonzero difference: no variance
            notes.append("constant difference: t-test undefined")
    w_p = nan
    if n < MIN_WILCOXON_PAIRS:
        notes.append(f"n={n}: Wilcoxon cannot reach p<0.05 below {MIN_WILCOXON_PAIRS} pairs")
    else:
        w_p = float(st.wilcoxon(x, y).pvalue)
    return PairedTests(n, mean_diff, t_p, w_p, "; ".join(notes))


def bh_adjust(pvalues: ArrayLike, alpha: float = 0.05) -> NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values; NaNs (untestable pairs) pass through untouched."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method="fdr_bh")[1]
    return out
