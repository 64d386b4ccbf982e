"""A two-level bootstrap: trained models (seeds within each fold) and test speakers, both resampled.

The speaker bootstrap (``mmder.eval.stats.speaker_bootstrap``) holds the trained models fixed, so it
leaves seed-to-seed training variance out. Where a (dataset, setting) has several seeds in a fold, each
resample here draws, within every fold, as many seeds as it has with replacement (the trained models),
and test speakers with replacement (each drawn speaker brings every drawn seed's predictions of its
clips), then recomputes the pooled UAR/WAR; the interval is the percentile one.

The speakers are drawn exactly as the speaker bootstrap draws them (``default_rng(seed).integers(0, n,
(B, n))``, what scipy's ``bootstrap`` does in one batch) and the seeds from a separate stream, so where
every seed predicts the same the two intervals coincide: the seed draw can only widen it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from mmder.eval import stats

LABEL = "seed+spk"  # the headline interval's label where seeds are resampled too
SPEAKER_LABEL = "spk"


def several_seeds(pred: pd.DataFrame) -> bool:
    """Whether some fold of these predictions has >= 2 seeds: only then is there training variance to
    resample."""
    if pred.empty or "seed" not in pred.columns:
        return False
    return bool((pred.groupby("fold")["seed"].nunique() >= 2).any())


@dataclass(frozen=True)
class _Side:
    """One setting's predictions as count tables: [cluster, fold, seed slot, class]."""

    counts: NDArray
    hits: NDArray
    seeds_per_fold: list[int]


def _side(frame: pd.DataFrame, cluster_codes: NDArray, classes: NDArray, n_clusters: int) -> _Side:
    """Clip counts and hits per (cluster, fold, seed, true class) of one side's predictions."""
    folds = sorted(frame["fold"].unique().tolist(), key=str)
    seeds = [sorted(frame.loc[frame["fold"] == f, "seed"].unique().tolist(), key=str) for f in folds]
    f_code = frame["fold"].map({f: i for i, f in enumerate(folds)}).to_numpy()
    slot = {(f, s): j for f, ss in zip(folds, seeds, strict=True) for j, s in enumerate(ss)}
    s_code = np.array([slot[(f, s)] for f, s in zip(frame["fold"], frame["seed"], strict=True)], dtype=int)
    t = frame["true"].astype(str).to_numpy()
    k_code = np.searchsorted(classes, t)
    shape = (n_clusters, len(folds), max(len(s) for s in seeds), classes.size)
    counts, hits = np.zeros(shape), np.zeros(shape)
    index = (cluster_codes, f_code, s_code, k_code)
    np.add.at(counts, index, 1.0)
    np.add.at(hits, index, (frame["predicted"].astype(str).to_numpy() == t).astype(float))
    return _Side(counts, hits, [len(s) for s in seeds])


def _seed_weights(side: _Side, n_resamples: int, rng: np.random.Generator) -> NDArray:
    """How often each seed of each fold is drawn in each resample: [resample, fold, seed slot]."""
    n_folds, n_slots = side.counts.shape[1], side.counts.shape[2]
    w = np.zeros((n_resamples, n_folds, n_slots))
    for f, k in enumerate(side.seeds_per_fold):
        draw = rng.integers(0, k, (n_resamples, k))
        w[:, f, :k] = (draw[..., None] == np.arange(k)).sum(axis=1)
    return w


def _metric(metric: str, counts: NDArray, hits: NDArray) -> NDArray:
    """WAR or UAR (percent) from per-class counts and hits over the last axis; absent classes drop out."""
    if metric == "war":
        return 100.0 * hits.sum(axis=-1) / counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(counts > 0, hits / np.maximum(counts, 1.0), np.nan)
    return 100.0 * np.nanmean(recall, axis=-1)


def _value(metric: str, side: _Side, spk: NDArray, seeds: NDArray) -> NDArray:
    """The pooled metric of one side per resample, from speaker draw counts [B, C] and seed draw counts
    [B, F, S]."""
    counts = np.einsum("bc,bfs,cfsk->bk", spk, seeds, side.counts, optimize=True)
    hits = np.einsum("bc,bfs,cfsk->bk", spk, seeds, side.hits, optimize=True)
    return _metric(metric, counts, hits)


def two_level_bootstrap(
    sides: list[pd.DataFrame],
    metric: str = "war",
    unit: str = "speaker",
    n_resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
    confidence: float = 0.95,
    names: Sequence[str] | None = None,
) -> stats.ClusterInterval:
    """The pooled metric of one side (or A - B of two) with a percentile interval over resamples of
    seeds within folds and of test speakers; two sides share the speaker draw (paired on speakers) and
    draw their seeds independently, each from a stream named by ``names`` (so B vs A is exactly the
    negative of A vs B). Each side: columns true, predicted, fold, seed, cluster."""
    if metric not in stats.METRICS:
        raise ValueError(f"metric {metric!r} is not allowed; allowed: {', '.join(stats.METRICS)}")
    nan = float("nan")
    if any(s.empty for s in sides):
        return stats.ClusterInterval(nan, nan, nan, 0, unit, note="no test clips")
    labels, codes = np.unique(pd.concat([s["cluster"] for s in sides]).astype(str), return_inverse=True)
    classes = np.unique(pd.concat([s["true"] for s in sides]).astype(str))
    parts, start = [], 0
    for s in sides:
        parts.append(_side(s, codes[start : start + len(s)], classes, labels.size))
        start += len(s)
    n = labels.size
    whole = [_value(metric, p, np.ones((1, n)), np.ones((1, *p.counts.shape[1:3])))[0] for p in parts]
    estimate = float(whole[0] - whole[1]) if len(whole) == 2 else float(whole[0])
    if n < stats.MIN_CLUSTERS:
        note = f"{n} {unit}(s): too few to resample for an interval (needs {stats.MIN_CLUSTERS})"
        return stats.ClusterInterval(estimate, nan, nan, n, unit, note=note)
    draw = np.random.default_rng(seed).integers(0, n, (n_resamples, n))  # as scipy's bootstrap draws
    spk = np.zeros((n_resamples, n))
    np.add.at(spk, (np.arange(n_resamples)[:, None], draw), 1.0)
    # seeds from streams of their own: the speaker draw stays the speaker bootstrap's
    one = np.random.default_rng([seed, 1])
    rngs = [np.random.default_rng([seed, 1, zlib.crc32(n.encode())]) for n in names] if names else None
    values = [
        _value(metric, p, spk, _seed_weights(p, n_resamples, rngs[i] if rngs else one))
        for i, p in enumerate(parts)
    ]
    dist = values[0] - values[1] if len(values) == 2 else values[0]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (float(x) for x in np.quantile(dist, [alpha, 1.0 - alpha]))
    p = nan
    if len(values) == 2:
        tail = min(np.sum(dist <= 0.0), np.sum(dist >= 0.0))
        p = min(1.0, 2.0 * (1.0 + float(tail)) / (n_resamples + 1.0))
    return stats.ClusterInterval(estimate, lo, hi, n, unit, p, resamples=n_resamples)


def with_clusters(pred: pd.DataFrame, clusters: Any, predicted: str = "predicted") -> pd.DataFrame:
    """The columns ``two_level_bootstrap`` reads, from a predictions frame and its cluster array."""
    return pd.DataFrame(
        {
            "true": pred["true"].to_numpy(),
            "predicted": pred[predicted].to_numpy(),
            "fold": pred["fold"].to_numpy(),
            "seed": pred["seed"].to_numpy(),
            "cluster": np.asarray(clusters),
        }
    )


def interval_words(n_resamples: int = stats.RESAMPLES, seed: int = stats.SEED) -> str:
    """What a [95% seed+spk] interval is, in the words every format carries."""
    return (
        f"[95% {LABEL}]: rows with >= 2 seeds in a fold: 95 % percentile two-level bootstrap, each of "
        f"{n_resamples} resamples (seed {seed}) draws the seeds (trained models) within each fold and the "
        "test speakers with replacement, so training variance is in it"
    )
