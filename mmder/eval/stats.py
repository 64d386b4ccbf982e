"""Statistics a reviewer asks for, as plain functions over arrays (no MLflow, no pandas needed).

- ``t_interval``: mean of per-fold metrics with a 95 % Student t interval; with one value there is
  no interval (NaN), rather than a misleading zero-width one.
- ``mcnemar_exact``: are two classifiers' errors on the *same* test clips different? (paired, exact)
- ``paired_bootstrap``: an interval for the WAR/UAR difference, resampling test clips in pairs.
- ``paired_fold_tests``: paired t-test and Wilcoxon signed-rank over folds x seeds, saying so when
  there are too few pairs or no differences to test.
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
    "paired_bootstrap",
    "paired_fold_tests",
    "per_class_recall",
    "t_interval",
    "uar",
    "war",
]

METRICS = ("war", "uar")


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval; ``lo``/``hi`` are NaN when none can be given."""

    estimate: float
    lo: float
    hi: float
    n: int
    note: str = ""


def t_interval(
    values: ArrayLike, confidence: float = 0.95, bounds: tuple[float, float] | None = None
) -> Interval:
    """Mean and Student t interval (n-1 degrees of freedom) over per-fold x seed values.

    ``bounds`` is the metric's range (0-100 for a percentage): with few folds the t interval can
    reach past it ("93 [75, 111] %"), which no reader can use; it is then cut at the bound and the
    note says so.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, "no values")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), 1, "one value: no interval")
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
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Interval of metric(A) - metric(B) (percent points), resampling test clips with their pairs.

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
class PairedTests:
    """Paired t-test and Wilcoxon over fold x seed values; p is NaN with a note when untestable."""

    n: int
    mean_diff: float
    t_pvalue: float
    wilcoxon_pvalue: float
    note: str = ""


def paired_fold_tests(a: ArrayLike, b: ArrayLike) -> PairedTests:
    """Per-fold x seed metric of A vs B on the same folds and seeds."""
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
    t_p = float(st.ttest_rel(x, y).pvalue)
    if not np.isfinite(t_p):  # constant nonzero difference: no variance
        note = "constant difference: t-test undefined"
    else:
        note = ""
    w_p = float(st.wilcoxon(x, y).pvalue)
    if n < 6:
        note = (note + "; " if note else "") + f"n={n}: Wilcoxon cannot reach p<0.05 below 6 pairs"
    return PairedTests(n, mean_diff, t_p, w_p, note)


def bh_adjust(pvalues: ArrayLike, alpha: float = 0.05) -> NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values; NaNs (untestable pairs) pass through untouched."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method="fdr_bh")[1]
    return out
