"""Finished MLflow runs -> pandas -> a table like the paper's (mean and std over folds and seeds).

Only the runs of the experiment's current cells count (matched by key), so an edited experiment
never mixes in results of its old configuration. Besides the mean of per-fold metrics, the pooled
WAR over all test predictions is given, as some papers report that instead.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.spec import ExperimentSpec, expand_cells
from harness.tracking import Tracker, resolve_uri

COLUMNS = ["dataset", "setting", "folds", "uar_mean", "uar_std", "war_mean", "war_std"]
FORMATS = ("table", "csv", "markdown")


def collect_runs(spec: ExperimentSpec, output: Path) -> pd.DataFrame:
    """One row per finished cell of the experiment: dataset, setting, fold, seed, uar, war (percent)."""
    cells = {c.key: c for c in expand_cells(spec)}
    uri = resolve_uri(spec.tracking.uri, output)
    rows = []
    tracker = Tracker.existing(uri, spec.mlflow_experiment)
    if tracker is not None:
        for key, run in tracker.finished_cells().items():
            cell = cells.get(key)
            if cell is None:
                continue
            m = run.data.metrics
            rows.append(
                {
                    "key": key,
                    "dataset": cell.dataset,
                    "setting": cell.setting,
                    "fold": cell.fold,
                    "seed": cell.seed,
                    "uar": m.get("final_uar"),
                    "war": m.get("final_war"),
                    "run_id": run.info.run_id,
                }
            )
    return pd.DataFrame(rows, columns=["key", "dataset", "setting", "fold", "seed", "uar", "war", "run_id"])


def leaderboard(runs: pd.DataFrame, settings_order: list[str] | None = None) -> pd.DataFrame:
    """Aggregate per (dataset, setting); std is the sample std over folds and seeds (0 for one run)."""
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    grouped = runs.groupby(["dataset", "setting"], sort=False)
    table = grouped.agg(
        folds=("fold", "nunique"),
        runs=("key", "count"),
        uar_mean=("uar", "mean"),
        uar_std=("uar", "std"),
        war_mean=("war", "mean"),
        war_std=("war", "std"),
    ).reset_index()
    table[["uar_std", "war_std"]] = table[["uar_std", "war_std"]].fillna(0.0)
    order = {s: i for i, s in enumerate(settings_order or [])}
    table["_order"] = table["setting"].map(lambda s: order.get(s, len(order)))
    table = table.sort_values(["dataset", "_order"], kind="stable").drop(columns="_order")
    return table[[*COLUMNS, "runs"]].reset_index(drop=True)


def render(table: pd.DataFrame, fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    out = table[COLUMNS]
    if fmt == "csv":
        return out.to_csv(index=False, float_format="%.2f")
    if out.empty:
        return "(no finished cells yet)"
    if fmt == "markdown":
        header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
        lines = [header]
        for r in out.itertuples(index=False):
            lines.append(
                f"| {r.dataset} | {r.setting} | {r.folds} | {r.uar_mean:.2f} | {r.uar_std:.2f} | "
                f"{r.war_mean:.2f} | {r.war_std:.2f} |"
            )
        return "\n".join(lines)
    # The paper's look: one row per setting, UAR and WAR as mean +- std.
    lines = []
    for dataset, part in out.groupby("dataset", sort=False):
        lines.append(f"{dataset}")
        lines.append(f"  {'setting':<10} {'folds':>5}   {'UAR (%)':>14}   {'WAR (%)':>14}")
        for r in part.itertuples(index=False):
            lines.append(
                f"  {r.setting:<10} {r.folds:>5}   {r.uar_mean:6.2f} ± {r.uar_std:5.2f}   "
                f"{r.war_mean:6.2f} ± {r.war_std:5.2f}"
            )
    return "\n".join(lines)


def experiment_leaderboard(spec: ExperimentSpec, output: Path) -> pd.DataFrame:
    return leaderboard(collect_runs(spec, output), spec.grid.settings)
