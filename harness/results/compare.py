"""``mmder compare``: is setting A really better than B on the same folds, seeds and test clips?

Glue only: pairs the finished runs of two settings by (fold, seed), loads their predictions.csv,
checks the test sets are identical, and hands arrays to ``mmder.eval.stats``. Runs whose test clips
differ are refused: a paired test over different clips answers a different question.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.results.leaderboard import ExperimentRuns
from mmder.eval import stats


class NotComparable(ValueError):
    """Two settings' runs cannot be paired (different test clips, or nothing finished in common)."""


@dataclass
class Comparison:
    dataset: str
    a: str
    b: str
    metric: str
    pairs: list[tuple[int, int]]  # (fold, seed) both finished
    unpaired: list[str]  # cells finished for one setting only, left out
    n_clips: int
    value_a: float  # pooled metric of A over the paired runs
    value_b: float
    bootstrap: stats.Interval
    mcnemar: stats.McNemar
    folds: stats.PairedTests
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.a} vs {self.b}"


def _finished(exp: ExperimentRuns, dataset: str, setting: str) -> pd.DataFrame:
    runs = exp.finished
    return runs[(runs["dataset"] == dataset) & (runs["setting"] == setting)]


def _seedless(setting: str) -> bool:
    """A classical baseline runs once per fold: its result cannot depend on the seed."""
    from mmder.registry import BASELINES

    return setting in BASELINES


def _pair_runs(runs_a: pd.DataFrame, runs_b: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """A's and B's runs side by side per (fold, seed); a seedless baseline's one run per fold stands
    beside each seed of the other setting (its predictions are the same for every seed)."""
    if not (_seedless(a) or _seedless(b)):
        return runs_a.merge(runs_b, on=["fold", "seed"], suffixes=("_a", "_b"))
    pairs = runs_a.merge(runs_b, on=["fold"], suffixes=("_a", "_b"))
    pairs["seed"] = pairs["seed_b"] if _seedless(a) and not _seedless(b) else pairs["seed_a"]
    return pairs


def _pair_keys(exp: ExperimentRuns, dataset: str, a: str, b: str) -> tuple[set, set]:
    """The (fold, seed) each side finished, a seedless side standing for every seed of the other."""
    keys_a = set(_finished(exp, dataset, a)[["fold", "seed"]].itertuples(index=False, name=None))
    keys_b = set(_finished(exp, dataset, b)[["fold", "seed"]].itertuples(index=False, name=None))
    if _seedless(b) and not _seedless(a):
        keys_b = {(f, s) for f, s in keys_a if any(f == fb for fb, _ in keys_b)} | keys_b
    if _seedless(a) and not _seedless(b):
        keys_a = {(f, s) for f, s in keys_b if any(f == fa for fa, _ in keys_a)} | keys_a
    return keys_a, keys_b


def paired_predictions(
    exp: ExperimentRuns, dataset: str, a: str, b: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-clip predictions of A and B side by side, and the per-(fold, seed) run pairs.

    Raises NotComparable naming the fold when the two settings were tested on different clips.
    """
    runs_a, runs_b = _finished(exp, dataset, a), _finished(exp, dataset, b)
    for name, runs in ((a, runs_a), (b, runs_b)):
        if runs.empty:
            raise NotComparable(f"{dataset}: setting {name!r} has no finished runs")
    pairs = _pair_runs(runs_a, runs_b, a, b)
    if pairs.empty:
        raise NotComparable(f"{dataset}: {a} and {b} have no (fold, seed) finished in common")
    merged = []
    for p in pairs.itertuples(index=False):
        pred_a = exp.loader.predictions(p.run_id_a)
        pred_b = exp.loader.predictions(p.run_id_b)
        for name, pred in ((a, pred_a), (b, pred_b)):
            if pred is None:
                raise NotComparable(f"{dataset}: {name} fold {p.fold} seed {p.seed} has no predictions.csv")
        ids_a, ids_b = set(pred_a["clip_id"]), set(pred_b["clip_id"])
        if ids_a != ids_b:
            only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
            raise NotComparable(
                f"{dataset} fold {p.fold} seed {p.seed}: {a} and {b} were tested on different clips "
                f"({len(only_a)} only in {a}, e.g. {only_a[:3]}; "
                f"{len(only_b)} only in {b}, e.g. {only_b[:3]}); "
                "a paired test needs the same test set (same corpus options, protocol and fold)"
            )
        m = pred_a.merge(pred_b, on="clip_id", suffixes=("_a", "_b"))
        if not (m["true_a"] == m["true_b"]).all():
            raise NotComparable(
                f"{dataset} fold {p.fold}: the same clips carry different labels in {a} and {b}"
            )
        merged.append(
            pd.DataFrame(
                {
                    "fold": p.fold,
                    "seed": p.seed,
                    "clip_id": m["clip_id"],
                    "true": m["true_a"],
                    "pred_a": m["predicted_a"],
                    "pred_b": m["predicted_b"],
                }
            )
        )
    return pd.concat(merged, ignore_index=True), pairs


def compare(
    exp: ExperimentRuns,
    dataset: str,
    a: str,
    b: str,
    metric: str = "war",
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """McNemar on pooled paired predictions, a paired bootstrap of the difference, fold-level tests."""
    if metric not in stats.METRICS:
        raise ValueError(f"metric {metric!r} is not allowed; allowed: {', '.join(stats.METRICS)}")
    clips, pairs = paired_predictions(exp, dataset, a, b)
    t, pa, pb = clips["true"].to_numpy(), clips["pred_a"].to_numpy(), clips["pred_b"].to_numpy()
    fn = stats.war if metric == "war" else stats.uar
    keys_a, keys_b = _pair_keys(exp, dataset, a, b)
    both = keys_a & keys_b
    unpaired = [f"{a} f{f} s{s}" for f, s in sorted(keys_a - both)] + [
        f"{b} f{f} s{s}" for f, s in sorted(keys_b - both)
    ]
    notes = []
    if unpaired:
        notes.append(f"left out (finished for one setting only): {', '.join(unpaired)}")
    if metric == "uar":
        notes.append("McNemar tests per-clip correctness, i.e. WAR; the bootstrap and fold tests use UAR")
    return Comparison(
        dataset=dataset,
        a=a,
        b=b,
        metric=metric,
        pairs=sorted(both),
        unpaired=unpaired,
        n_clips=len(clips),
        value_a=fn(t, pa),
        value_b=fn(t, pb),
        bootstrap=stats.paired_bootstrap(t, pa, pb, metric, n_resamples=n_resamples, seed=seed),
        mcnemar=stats.mcnemar_exact(pa == t, pb == t),
        folds=stats.paired_fold_tests(pairs[f"{metric}_a"].astype(float), pairs[f"{metric}_b"].astype(float)),
        notes=notes,
    )


@dataclass
class AllPairs:
    """Every pair of settings of one dataset, with BH-corrected McNemar p-values as a matrix."""

    dataset: str
    comparisons: list[Comparison]
    refused: list[str]
    matrix: pd.DataFrame  # settings x settings, corrected p (upper and lower triangle alike)
    table: pd.DataFrame


def compare_all(exp: ExperimentRuns, metric: str = "war", n_resamples: int = 2000) -> list[AllPairs]:
    """All pairs of settings per dataset; the p-values are corrected for the number of pairs (fdr_bh)."""
    out = []
    finished = exp.finished
    for dataset in finished["dataset"].unique():
        present = set(finished.loc[finished["dataset"] == dataset, "setting"])
        settings = [s for s in exp.settings if s in present] + sorted(present - set(exp.settings))
        comps, refused = [], []
        for a, b in itertools.combinations(settings, 2):
            try:
                comps.append(compare(exp, dataset, a, b, metric, n_resamples=n_resamples))
            except NotComparable as err:
                refused.append(str(err))
        corrected = stats.bh_adjust([c.mcnemar.pvalue for c in comps]) if comps else np.array([])
        t_corrected = stats.bh_adjust([c.folds.t_pvalue for c in comps]) if comps else np.array([])
        matrix = pd.DataFrame(np.nan, index=settings, columns=settings)
        rows = []
        for c, p_adj, t_adj in zip(comps, corrected, t_corrected, strict=True):
            matrix.loc[c.a, c.b] = matrix.loc[c.b, c.a] = p_adj
            rows.append(
                {
                    "a": c.a,
                    "b": c.b,
                    f"{metric}_a": c.value_a,
                    f"{metric}_b": c.value_b,
                    "diff": c.bootstrap.estimate,
                    "diff_lo": c.bootstrap.lo,
                    "diff_hi": c.bootstrap.hi,
                    "mcnemar_p": c.mcnemar.pvalue,
                    "mcnemar_p_bh": p_adj,
                    "t_p": c.folds.t_pvalue,
                    "t_p_bh": t_adj,
                    "wilcoxon_p": c.folds.wilcoxon_pvalue,
                    "pairs": len(c.pairs),
                }
            )
        out.append(AllPairs(dataset, comps, refused, matrix, pd.DataFrame(rows)))
    return out


def format_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.4f}"


def format_comparison(c: Comparison) -> str:
    m = c.metric.upper()
    bs, mc, ft = c.bootstrap, c.mcnemar, c.folds
    ci = "no interval" if math.isnan(bs.lo) else f"95 % paired bootstrap [{bs.lo:+.2f}, {bs.hi:+.2f}]"
    lines = [
        f"{c.dataset}: {c.a} (A) vs {c.b} (B), {m}; {len(c.pairs)} (fold, seed) pairs, "
        f"{c.n_clips} paired test predictions",
        f"  pooled {m}: A {c.value_a:.2f}  B {c.value_b:.2f}  A-B {bs.estimate:+.2f} points, {ci}",
        f"  McNemar exact: {mc.b} clips only A right, {mc.c} only B right, p = {format_p(mc.pvalue)}",
        f"  over folds x seeds (n={ft.n}): mean A-B {ft.mean_diff:+.2f}, "
        f"paired t p = {format_p(ft.t_pvalue)}, "
        f"Wilcoxon p = {format_p(ft.wilcoxon_pvalue)}",
    ]
    for note in ([ft.note] if ft.note else []) + ([bs.note] if bs.note else []) + c.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def format_all(results: list[AllPairs]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r.dataset}: all pairs, Benjamini-Hochberg over {len(r.comparisons)} comparisons")
        if not r.table.empty:
            shown = r.table.copy()
            for col in shown.columns:
                if col.endswith("_p") or col.endswith("_bh"):
                    shown[col] = shown[col].map(format_p)
            lines.append(
                "\n".join("  " + ln for ln in shown.to_string(index=False, float_format="%.2f").splitlines())
            )
            lines.append("  BH-corrected McNemar p (row vs column):")
            matrix = r.matrix.map(lambda v: "" if math.isnan(v) else format_p(v))
            lines.append("\n".join("    " + ln for ln in matrix.to_string().splitlines()))
        for msg in r.refused:
            lines.append(f"  refused: {msg}")
        lines.append("")
    return "\n".join(lines).rstrip() or "(no finished cells yet)"
