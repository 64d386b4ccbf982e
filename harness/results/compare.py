"""``mmder compare``: is setting A really better than B on the same folds, seeds and test speakers?

Glue only: pairs the finished runs of two settings by (fold, seed), loads their predictions.csv,
checks the test sets are identical, and hands arrays to ``mmder.eval.stats``. Runs whose test clips
differ are refused: a paired test over different clips answers a different question.

The headline is speaker-level: a paired bootstrap that resamples test speakers (the folds are
speaker-independent, so speakers are what was sampled), then the paired tests over folds x seeds.
McNemar on single clips is kept as a secondary line and says that it assumes independent clips.
Rendering (text, CSV, JSON) is in ``harness.results.compare_text``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.results.leaderboard import ExperimentRuns, pooled_predictions, speaker_clusters
from harness.results.seed_bootstrap import (
    LABEL,
    SPEAKER_LABEL,
    several_seeds,
    two_level_bootstrap,
    with_clusters,
)
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
    speaker: stats.ClusterInterval  # A-B, resampling test speakers (the headline)
    mcnemar: stats.McNemar  # per clip: assumes independent clips
    folds: stats.PairedTests
    notes: list[str] = field(default_factory=list)
    pair_diffs: list[tuple[int, int, float]] = field(default_factory=list)  # (fold, seed, A-B) per run pair
    models: tuple[int, int] = (0, 0)  # the trained models (finished runs) behind A and behind B
    interval: str = SPEAKER_LABEL  # "seed+spk" where both sides' seeds were resampled too
    one_model: list[str] = field(default_factory=list)  # the sides on one trained model per fold
    fold_names: dict[int, str] = field(default_factory=dict)  # fold -> the protocol's name for it

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
    return _paired_clips(exp, dataset, a, b, pairs), pairs


def _paired_clips(exp: ExperimentRuns, dataset: str, a: str, b: str, pairs: pd.DataFrame) -> pd.DataFrame:
    """Every pair's clips, A's and B's prediction side by side, in the pairs' order and A's clip order:
    both sides' predictions read once (one table read for a sweep), paired by one merge, not per run."""
    runs = pd.concat(
        [
            pairs[["key_a", "run_id_a"]].set_axis(["key", "run_id"], axis=1),
            pairs[["key_b", "run_id_b"]].set_axis(["key", "run_id"], axis=1),
        ]
    )
    runs = runs.drop_duplicates("key").assign(dataset=dataset, setting="", fold=0, seed=0)
    pooled = pooled_predictions(runs, exp.loader)
    for side, name in (("a", a), ("b", b)):
        lost = pairs[~pairs[f"key_{side}"].isin(set(pooled["key"]))]
        if not lost.empty:
            p = lost.iloc[0]
            raise NotComparable(f"{dataset}: {name} fold {p['fold']} seed {p['seed']} has no predictions.csv")
    has_speaker = "speaker" in pooled.columns
    cols = ["key", "clip_id", "true", "predicted", *(["speaker"] if has_speaker else [])]
    order = pairs[["key_a", "key_b", "fold", "seed"]].reset_index(drop=True).rename_axis("pair").reset_index()
    side_a = order.merge(pooled[cols], left_on="key_a", right_on="key").drop(columns="key")
    side_b = pooled.loc[pooled["key"].isin(set(pairs["key_b"])), cols]
    m = side_a.merge(
        side_b,
        left_on=["key_b", "clip_id"],
        right_on=["key", "clip_id"],
        how="outer",
        suffixes=("_a", "_b"),
        indicator=True,
    )
    # B's rows of another pair's key carry no pair: give them theirs, so a clip only in B is seen
    lone_b = m["_merge"] == "right_only"
    if lone_b.any():
        by_b = order.drop_duplicates("key_b").set_index("key_b")
        m.loc[lone_b, "pair"] = by_b.loc[m.loc[lone_b, "key"], "pair"].to_numpy()
    if (m["_merge"] != "both").any():
        bad = m[m["_merge"] != "both"].sort_values("pair")
        p = order.iloc[int(bad["pair"].iloc[0])]
        mine = m[m["pair"] == p["pair"]]
        only_a = sorted(mine.loc[mine["_merge"] == "left_only", "clip_id"])
        only_b = sorted(mine.loc[mine["_merge"] == "right_only", "clip_id"])
        raise NotComparable(
            f"{dataset} fold {p['fold']} seed {p['seed']}: {a} and {b} were tested on different clips "
            f"({len(only_a)} only in {a}, e.g. {only_a[:3]}; "
            f"{len(only_b)} only in {b}, e.g. {only_b[:3]}); "
            "a paired test needs the same test set (same corpus options, protocol and fold)"
        )
    differ = m["true_a"] != m["true_b"]
    if differ.any():
        fold = m.loc[differ, "fold"].iloc[0]
        raise NotComparable(f"{dataset} fold {fold}: the same clips carry different labels in {a} and {b}")
    speaker = m["speaker_a"] if has_speaker else np.nan
    return pd.DataFrame(
        {
            "fold": m["fold"],
            "seed": m["seed"],
            "clip_id": m["clip_id"],
            "speaker": speaker,
            "true": m["true_a"],
            "pred_a": m["predicted_a"],
            "pred_b": m["predicted_b"],
        }
    ).reset_index(drop=True)


def compare(
    exp: ExperimentRuns,
    dataset: str,
    a: str,
    b: str,
    metric: str = "war",
    n_resamples: int = stats.RESAMPLES,
    seed: int = stats.SEED,
) -> Comparison:
    """A speaker-level paired bootstrap of the difference, fold-level tests, and McNemar per clip."""
    if metric not in stats.METRICS:
        raise ValueError(f"metric {metric!r} is not allowed; allowed: {', '.join(stats.METRICS)}")
    clips, pairs = paired_predictions(exp, dataset, a, b)
    t, pa, pb = clips["true"].to_numpy(), clips["pred_a"].to_numpy(), clips["pred_b"].to_numpy()
    fn = stats.war if metric == "war" else stats.uar
    keys_a, keys_b = _pair_keys(exp, dataset, a, b)
    both = keys_a & keys_b
    names = fold_labels(exp, dataset)
    unpaired = [f"{a} {fold_label(names, f)} s{s}" for f, s in sorted(keys_a - both)] + [
        f"{b} {fold_label(names, f)} s{s}" for f, s in sorted(keys_b - both)
    ]
    clusters, unit, unit_note = speaker_clusters(clips)
    notes = [unit_note] if unit_note else []
    if unpaired:
        notes.append(f"left out (finished for one setting only): {', '.join(unpaired)}")
    if metric == "uar":
        notes.append("McNemar tests per-clip correctness, i.e. WAR; the bootstrap and fold tests use UAR")
    models = (int(pairs["key_a"].nunique()), int(pairs["key_b"].nunique()))
    one_model = one_model_sides(a, b, models, int(pairs["fold"].nunique()))
    if one_model:
        notes.append(one_model_text(" and ".join(one_model)))
    diffs = pairs[f"{metric}_a"].astype(float) - pairs[f"{metric}_b"].astype(float)
    speaker, interval = _difference(clips, clusters, metric, unit, n_resamples, seed, (a, b))
    if interval == LABEL:
        notes.append(seeds_note(clips))
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
        speaker=speaker,
        mcnemar=stats.mcnemar_exact(pa == t, pb == t),
        folds=stats.paired_fold_tests(pairs[f"{metric}_a"].astype(float), pairs[f"{metric}_b"].astype(float)),
        notes=notes,
        pair_diffs=sorted(
            (int(f), int(s), float(d)) for f, s, d in zip(pairs["fold"], pairs["seed"], diffs, strict=True)
        ),
        models=models,
        interval=interval,
        one_model=one_model,
        fold_names=names,
    )


def _difference(
    clips: pd.DataFrame,
    clusters: np.ndarray,
    metric: str,
    unit: str,
    n_resamples: int,
    seed: int,
    names: tuple[str, str],
) -> tuple[stats.ClusterInterval, str]:
    """A - B with its bootstrap: two-level (each side's seeds within folds, and test speakers shared by
    both sides) where both sides have >= 2 seeds in a fold and neither is a seedless baseline; else the
    speaker bootstrap with the trained models held fixed."""
    t, pa, pb = clips["true"].to_numpy(), clips["pred_a"].to_numpy(), clips["pred_b"].to_numpy()
    if several_seeds(clips) and not any(_seedless(n) for n in names):
        sides = [with_clusters(clips, clusters, "pred_a"), with_clusters(clips, clusters, "pred_b")]
        return two_level_bootstrap(sides, metric, unit, n_resamples, seed, names=names), LABEL
    return stats.paired_speaker_bootstrap(t, pa, pb, clusters, metric, unit, n_resamples, seed), SPEAKER_LABEL


def seeds_note(clips: pd.DataFrame) -> str:
    """What the two-level interval and p resample, and how many seeds per fold each side has."""
    per_fold = clips.groupby("fold")["seed"].nunique()
    seeds = ", ".join(f"f{f} {k}" for f, k in per_fold.items())
    return (
        f"seeds resampled too ([95% {LABEL}]): each resample draws both sides' seeds within each fold "
        f"(independently; seeds per fold: {seeds}) and test speakers shared by both sides, so training "
        "variance is in the interval and p"
    )


def one_model_sides(a: str, b: str, models: tuple[int, int], folds: int) -> list[str]:
    """The settings of a pair that rest on one trained model per fold. A speaker-level test of such a
    side resamples test speakers with the models held fixed, so it is conditional on them (a classical
    baseline, which no seed changes, is no such side)."""
    return [s for s, m in zip((a, b), models, strict=True) if m <= folds and not _seedless(s)]


def one_model_text(sides: str, every_pair: bool = False) -> str:
    """The note for one pair, or (``every_pair``) once for all the pairs of ``compare --all``."""
    what = (
        "the speaker-level intervals and p of their pairs are"
        if every_pair
        else "the speaker-level interval and p are"
    )
    return (
        f"one trained model per fold behind {sides}: {what} conditional on these trained models "
        "(seed-to-seed training variance is not in them); they say these models differ on new test "
        "speakers, not that retraining would"
    )


def fold_labels(exp: ExperimentRuns, dataset: str) -> dict[int, str]:
    """fold -> the name its protocol gives it (``fold1``, ``session1``): labels name folds as status,
    the MLflow tags and the report do; the cell keys keep their ``f0`` (identifiers, never relabelled)."""
    runs = exp.runs[exp.runs["dataset"] == dataset]
    return {int(f): str(n) for f, n in zip(runs["fold"], runs["fold_name"], strict=True)}


def fold_label(names: dict[int, str], fold: int) -> str:
    return names.get(int(fold), f"f{fold}")


def pair_diffs_text(diffs: list[tuple[int, int, float]], names: dict[int, str] | None = None) -> str:
    """'fold1 s0 +2.10, fold2 s0 +16.70', or per fold 'fold1: s0 +2.10 s1 +1.40; fold2: ...' where folds
    have seeds (``names``: the folds' names; ``f0`` where none is known)."""
    names = names or {}
    folds = sorted({f for f, _, _ in diffs})
    if len(diffs) == len(folds):
        return ", ".join(f"{fold_label(names, f)} s{s} {d:+.2f}" for f, s, d in diffs)
    return "; ".join(
        f"{fold_label(names, f)}: " + " ".join(f"s{s} {d:+.2f}" for g, s, d in diffs if g == f) for f in folds
    )


def record(c: Comparison) -> dict[str, object]:
    """One comparison as a flat row, full precision: what CSV, JSON and the --all table are made of."""
    sp, mc, ft = c.speaker, c.mcnemar, c.folds
    return {
        "dataset": c.dataset,
        "a": c.a,
        "b": c.b,
        "metric": c.metric,
        "value_a": c.value_a,
        "value_b": c.value_b,
        "diff": sp.estimate,
        "diff_lo": sp.lo,
        "diff_hi": sp.hi,
        "speaker_p": sp.pvalue,
        "speaker_p_floor": sp.smallest_p,  # no resample crossed 0: speaker_p is only an upper bound
        "unit": sp.unit,
        "interval": c.interval,  # "seed+spk": seeds resampled too; "spk": trained models held fixed
        "clusters": sp.clusters,
        "pairs": len(c.pairs),
        "models_a": c.models[0],
        "models_b": c.models[1],
        "pair_diffs": pair_diffs_text(c.pair_diffs, c.fold_names),  # A-B per (fold, seed) run pair, in points
        "fold_mean_diff": ft.mean_diff,
        "t_p": ft.t_pvalue,
        "wilcoxon_p": ft.wilcoxon_pvalue,
        "clips": c.n_clips,
        "mcnemar_only_a": mc.b,
        "mcnemar_only_b": mc.c,
        "mcnemar_p": mc.pvalue,
        "notes": "; ".join(notes(c)),
    }


def notes(c: Comparison) -> list[str]:
    """Everything a reader must know before trusting a number of this comparison, worst first."""
    out = []
    sp, mc = c.speaker, c.mcnemar
    clip_sig = mc.pvalue < 0.05
    if clip_sig and not sp.pvalue < 0.05:
        why = "its interval includes 0" if sp.has_interval else "it cannot be computed"
        out.append(
            f"clip-level McNemar is significant (p = {format_p(mc.pvalue)}) but the speaker-level "
            f"bootstrap is not ({why}): the clips of one speaker are not independent, so the difference "
            "is not established"
        )
    out += [n for n in (sp.note, c.folds.note) if n]
    return out + c.notes


@dataclass
class AllPairs:
    """Every pair of settings of one dataset; BH-corrected speaker-level p-values as a matrix."""

    dataset: str
    comparisons: list[Comparison]
    refused: list[str]
    matrix: pd.DataFrame  # settings x settings: BH-corrected speaker-level p (NaN on the diagonal)
    diff: pd.DataFrame  # settings x settings: row minus column, in points
    table: pd.DataFrame  # one ``record`` per pair, with the *_bh columns
    metric: str = "war"


def compare_all(
    exp: ExperimentRuns, metric: str = "war", n_resamples: int = stats.RESAMPLES, seed: int = stats.SEED
) -> list[AllPairs]:
    """All pairs of settings per dataset; each family of p-values is corrected for the number of pairs
    (Benjamini-Hochberg): speaker-level bootstrap, paired t over folds x seeds, McNemar per clip."""
    out = []
    finished = exp.finished
    for dataset in finished["dataset"].unique():
        present = set(finished.loc[finished["dataset"] == dataset, "setting"])
        settings = [s for s in exp.settings if s in present] + sorted(present - set(exp.settings))
        comps, refused = [], []
        for a, b in itertools.combinations(settings, 2):
            try:
                comps.append(compare(exp, dataset, a, b, metric, n_resamples, seed))
            except NotComparable as err:
                refused.append(str(err))
        table = pd.DataFrame([record(c) for c in comps])
        matrix = pd.DataFrame(np.nan, index=settings, columns=settings)
        diff = matrix.copy()
        if comps:
            for col in ("speaker_p", "t_p", "mcnemar_p"):
                table.insert(table.columns.get_loc(col) + 1, f"{col}_bh", stats.bh_adjust(table[col]))
            for c, p_adj in zip(comps, table["speaker_p_bh"], strict=True):
                matrix.loc[c.a, c.b] = matrix.loc[c.b, c.a] = p_adj
                diff.loc[c.a, c.b], diff.loc[c.b, c.a] = c.speaker.estimate, -c.speaker.estimate
        out.append(AllPairs(dataset, comps, refused, matrix, diff, table, metric))
    return out


def format_p(p: float | None) -> str:
    if p is None or p != p:  # NaN: untestable, the notes say why
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.4f}"


def p_floor(resamples: int) -> float:
    """The smallest two-sided p a paired bootstrap of ``resamples`` can give, +1-corrected (what
    :func:`mmder.eval.stats.paired_speaker_bootstrap` returns when no resample reaches 0)."""
    return 2.0 / (resamples + 1.0)


def format_speaker_p(p: float | None, floor: bool) -> str:
    """A speaker-level p as every format shows it: '< 0.001' where no resample crossed 0 (the p is then
    only bounded by the resamples, and a BH-corrected one from it too), else '0.0123'."""
    text = format_p(p)
    return f"< {text}" if floor and text != "n/a" else text
