"""Results as pandas DataFrames for notebooks and scripts: the cells of an experiment, its predictions.

Like Ray Tune's ``ResultGrid.get_dataframe()``: one row per cell with its grid keys, metrics, the
configuration it ran (``config/<dotted key>``, the params its MLflow run carries) and its provenance
(the ``mmder.*`` tags); one row per test prediction; and the leaderboard as ``mmder leaderboard``
computes it. Each reads the experiment's store through the loaders the commands use, and refuses (a
ConfigError naming the folder) where no sweep has written results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.results.leaderboard import (
    ExperimentRuns,
    collect_runs,
    experiment_leaderboard,
    pooled_predictions,
)
from harness.results.where import find_results
from harness.tracking.tags import PARAM_CELL_KEY

__all__ = ["cells", "ensemble", "experiment_runs", "leaderboard", "predictions"]

KEYS = ["key", "dataset", "setting", "fold", "seed", "finished", "run_id"]
CELL_KEY = f"config/{PARAM_CELL_KEY}"


def _spec(experiment: str | Path | Any, overrides: list[str] | None) -> Any:
    from harness.experiment.loading import load_experiment

    return load_experiment(experiment, overrides) if isinstance(experiment, str | Path) else experiment


def experiment_runs(
    experiment: str | Path | Any, output: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentRuns:
    """The experiment (a YAML path or a loaded config, ``--set`` style overrides) and its stored runs."""
    spec = _spec(experiment, overrides)
    return collect_runs(spec, find_results(spec, output).output)


def cells(
    experiment: str | Path | Any, output: str | Path | None = None, overrides: list[str] | None = None
) -> pd.DataFrame:
    """One row per cell of the grid, finished or not: keys, metrics, ``config/...`` and ``mmder.*`` tags."""
    from harness.plan.cells import expand_cells
    from harness.worker.run_info import flat_params

    spec = _spec(experiment, overrides)
    exp = collect_runs(spec, find_results(spec, output).output)
    runs = exp.runs.reset_index(drop=True)
    config = pd.DataFrame(
        [{f"config/{k}": v for k, v in flat_params(cell).items()} for cell in expand_cells(spec)]
    )
    config = runs[["key"]].merge(config, left_on="key", right_on=CELL_KEY, how="left")
    config = config.drop(columns=["key", CELL_KEY, *(f"config/{k}" for k in KEYS[1:5])], errors="ignore")
    tags = pd.DataFrame([t if isinstance(t, dict) else {} for t in runs["tags"]], index=runs.index)
    metrics = runs.drop(columns=[*KEYS, "tags"])
    return pd.concat([runs[KEYS], metrics, config, tags.sort_index(axis=1)], axis=1)


def predictions(
    experiment: str | Path | Any, output: str | Path | None = None, overrides: list[str] | None = None
) -> pd.DataFrame:
    """Every test prediction of every finished cell, with the cell's key, dataset, setting, fold, seed."""
    exp = experiment_runs(experiment, output, overrides)
    pred = pooled_predictions(exp.finished, exp.loader)
    first = ["key", "dataset", "setting", "fold", "seed"]
    return pred[first + [c for c in pred.columns if c not in first]]


def leaderboard(
    experiment: str | Path | Any,
    output: str | Path | None = None,
    overrides: list[str] | None = None,
    per_class: bool = False,
) -> pd.DataFrame:
    """The table ``mmder leaderboard`` prints, as numbers at full precision."""
    return experiment_leaderboard(experiment_runs(experiment, output, overrides), per_class=per_class)


def ensemble(
    experiment: str | Path | Any, output: str | Path | None = None, overrides: list[str] | None = None
) -> pd.DataFrame:
    """The seed-ensemble rows ``mmder leaderboard --ensemble`` prints (each clip's class probabilities
    averaged over a cell's k seeds), at full precision."""
    from harness.results.ensemble import experiment_ensemble

    return experiment_ensemble(experiment_runs(experiment, output, overrides))
