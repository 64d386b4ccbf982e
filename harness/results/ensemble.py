"""A seed-ensemble row: what averaging a cell's seeds buys over one trained model.

For each (dataset, setting, fold) the class probabilities (``prob_<class>`` in predictions.csv) of a
clip are averaged over that cell's seeds and the argmax is the ensemble's prediction; UAR/WAR are then
pooled over folds with the speaker interval (the ensemble is one model per fold, so that interval is
conditional on it). Each row is labelled with k, the seeds averaged, and carries the mean single seed's
pooled UAR/WAR beside it, so the gain reads off one line.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from harness.results.leaderboard import ExperimentRuns, pooled_predictions, speaker_clusters
from harness.tracking.tags import PROB_PREFIX
from mmder.eval import stats

__all__ = [
    "ENSEMBLE_COLUMNS",
    "ensemble_predictions",
    "ensemble_table",
    "experiment_ensemble",
    "render_ensemble",
]

ENSEMBLE_COLUMNS = [
    "dataset",
    "setting",
    "label",
    "k",
    "folds",
    "clips",
    "uar",
    "uar_spk_lo",
    "uar_spk_hi",
    "war",
    "war_spk_lo",
    "war_spk_hi",
    "single_uar",
    "single_war",
    "note",
]


def ensemble_predictions(pred: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, setting, fold, clip): the mean of its ``prob_*`` over the cell's seeds and
    the argmax as ``predicted``; ``seeds`` says how many were averaged. Clips without probabilities
    (a model that gives none) are left out."""
    probs = [c for c in pred.columns if c.startswith(PROB_PREFIX)]
    if pred.empty or not probs:
        return pd.DataFrame(columns=["dataset", "setting", "fold", "clip_id", "speaker", "true", "predicted"])
    have = pred.dropna(subset=probs, how="all")
    keys = ["dataset", "setting", "fold", "clip_id"]
    mean = have.groupby(keys, sort=False)[probs].mean()
    first = have.groupby(keys, sort=False)[[c for c in ("speaker", "true") if c in have.columns]].first()
    seeds = have.groupby(keys, sort=False)["seed"].nunique().rename("seeds")
    out = pd.concat([first, seeds, mean], axis=1).reset_index()
    values = out[probs].to_numpy(dtype=float)
    out["predicted"] = [probs[i].removeprefix(PROB_PREFIX) for i in np.nanargmax(values, axis=1)]
    return out


def _single_seed(part: pd.DataFrame, metric: str) -> float:
    """The mean over seeds of one seed's pooled metric (over its folds): the single model's figure."""
    fn = stats.uar if metric == "uar" else stats.war
    return float(np.mean([fn(g["true"], g["predicted"]) for _, g in part.groupby("seed")]))


def _row(part: pd.DataFrame, ens: pd.DataFrame) -> dict[str, Any]:
    """One (dataset, setting)'s ensemble figures; ``part`` its single-seed predictions."""
    k_min, k_max = int(ens["seeds"].min()), int(ens["seeds"].max())
    row: dict[str, Any] = {
        "label": f"ensemble k={k_max}" if k_min == k_max else f"ensemble k={k_min}-{k_max}",
        "k": k_max,
        "folds": int(ens["fold"].nunique()),
        "clips": len(ens),
        "single_uar": _single_seed(part, "uar"),
        "single_war": _single_seed(part, "war"),
        "note": "" if k_min == k_max else f"folds differ in seeds ({k_min} to {k_max})",
    }
    clusters, unit, unit_note = speaker_clusters(ens)
    for metric in ("uar", "war"):
        ci = stats.speaker_bootstrap(ens["true"], ens["predicted"], clusters, metric, unit)
        row[metric], row[f"{metric}_spk_lo"], row[f"{metric}_spk_hi"] = ci.estimate, ci.lo, ci.hi
    notes = [n for n in (row["note"], unit_note, ci.note) if n]
    if k_max < 2:
        notes.append("one seed: the ensemble is the single model")
    row["note"] = "; ".join(notes)
    return row


def ensemble_table(pred: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, setting) with probabilities: the seed-ensemble's pooled UAR/WAR with the speaker
    interval, labelled with k, beside the mean single seed."""
    ens = ensemble_predictions(pred)
    rows = []
    for (dataset, setting), part in ens.groupby(["dataset", "setting"], sort=False):
        singles = pred[(pred["dataset"] == dataset) & (pred["setting"] == setting)]
        singles = singles[singles["clip_id"].isin(set(part["clip_id"]))]
        rows.append({"dataset": dataset, "setting": setting, **_row(singles, part)})
    return pd.DataFrame(rows, columns=ENSEMBLE_COLUMNS)


def experiment_ensemble(exp: ExperimentRuns) -> pd.DataFrame:
    """The seed-ensemble table of an experiment's finished cells (the predictions the leaderboard reads)."""
    return ensemble_table(pooled_predictions(exp.finished, exp.loader))


def ensemble_note() -> str:
    """What the ensemble rows are, in words every format carries."""
    return (
        "seed-ensemble: per fold, each clip's class probabilities averaged over the cell's k seeds, argmax; "
        "UAR/WAR % pooled over folds, [95% spk] percentile bootstrap over test speakers "
        f"({stats.RESAMPLES} resamples, seed {stats.SEED}), conditional on the ensembled models; "
        "single = mean over seeds of one seed's pooled figure"
    )


def render_ensemble(table: pd.DataFrame, fmt: str = "table") -> str:
    """The ensemble rows as text (table/markdown/latex), CSV or JSON, with the note."""
    if table.empty:
        return "seed-ensemble: no finished cell has class probabilities (prob_* in predictions.csv)"
    if fmt == "csv":
        return f"# {ensemble_note()}\n" + table.to_csv(index=False)
    if fmt == "json":
        rows = json.loads(table.to_json(orient="records", double_precision=15))
        return json.dumps({"note": ensemble_note(), "ensemble": rows}, indent=2, ensure_ascii=False)
    shown = pd.DataFrame(
        {
            "dataset": table["dataset"],
            "setting": table["setting"],
            "ensemble": table["label"],
            "UAR % [95% spk]": [_cell(r, "uar") for r in table.itertuples()],
            "WAR % [95% spk]": [_cell(r, "war") for r in table.itertuples()],
            "single UAR": table["single_uar"].map(lambda v: f"{v:.1f}"),
            "single WAR": table["single_war"].map(lambda v: f"{v:.1f}"),
        }
    )
    notes = [ensemble_note(), *(n for n in table["note"] if n)]
    return shown.to_string(index=False) + "\n" + "\n".join(notes)


def _cell(r: Any, metric: str) -> str:
    value, lo, hi = getattr(r, metric), getattr(r, f"{metric}_spk_lo"), getattr(r, f"{metric}_spk_hi")
    if np.isnan(lo):
        return f"{value:.1f} (no interval)"
    return f"{value:.1f} [{lo:.1f}, {hi:.1f}]"
