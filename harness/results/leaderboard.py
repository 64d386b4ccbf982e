"""Finished MLflow runs -> pandas -> a table a reviewer accepts.

Per (dataset, setting): how many folds, seeds, runs and test speakers it rests on and how many cells
are still missing; UAR/WAR pooled over all test predictions with a 95 % bootstrap interval that
resamples test speakers (the headline: the speakers are what was sampled), and where some fold has >= 2
seeds a two-level interval that resamples the seeds too (then the headline, labelled seed+spk); the
mean of per-fold UAR/WAR with a 95 % t interval over folds x seeds (none below 3 values); optionally
per-class recall; and what the cells cost (wall time, clips/s, device-hours, MFU). Every format carries
the protocol note. An unfinished row is shown, marked, with its missing count: it is never quietly
averaged over fewer folds.

Only ``collect_runs`` knows the experiment file and MLflow layout (harness.experiment.config/grid/tracking);
everything else works on an ``ExperimentRuns`` (a DataFrame of cells + an artifact loader), so it is
unit-testable with hand-made frames and re-pointable when those modules move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

# the protocol and the rendering live beside this module; their names are this module's API too
from harness.results.board_protocol import (
    FOLD_FALLBACK,
    DatasetInfo,
    encoder_start,
    protocol_note,
    reference_rows,
)
from harness.results.board_text import FORMATS, folds_text, intervals_note, render, with_interval
from harness.results.seed_bootstrap import (
    LABEL,
    SPEAKER_LABEL,
    several_seeds,
    two_level_bootstrap,
    with_clusters,
)
from harness.tracking.tags import TAG_DEVICE_COUNT, TAG_PREFIX
from mmder.eval import stats

__all__ = [
    "COLUMNS",
    "FOLD_FALLBACK",
    "FORMATS",
    "RUN_COLUMNS",
    "ArtifactLoader",
    "DatasetInfo",
    "ExperimentRuns",
    "collect_runs",
    "experiment_leaderboard",
    "folds_text",
    "intervals_note",
    "leaderboard",
    "missing_cells",
    "pooled_predictions",
    "protocol_note",
    "reference_rows",
    "render",
    "speaker_clusters",
    "with_interval",
]

# Columns of one leaderboard row, in order; per-class recall columns (recall_<class>) follow with --per-class.
COLUMNS = [
    "dataset",
    "setting",
    "folds",
    "seeds",
    "runs",
    "missing",
    "n",
    "speakers",
    "interval_unit",
    "uar_mean",
    "uar_lo",
    "uar_hi",
    "uar_std",
    "war_mean",
    "war_lo",
    "war_hi",
    "war_std",
    "uar_pooled",
    "uar_spk_lo",
    "uar_spk_hi",
    "war_pooled",
    "war_spk_lo",
    "war_spk_hi",
    "interval",
    "uar_seed_lo",
    "uar_seed_hi",
    "war_seed_lo",
    "war_seed_hi",
    "wall_s_per_cell",
    "train_clips_per_s",
    "device_hours",
    "mfu",
]
RUN_COLUMNS = [
    "key",
    "dataset",
    "setting",
    "fold",
    "fold_name",  # the protocol's name of the fold (fold1, session1, ...): what every label shows
    "seed",
    "finished",
    "run_id",
    "uar",
    "war",
    "wall_seconds",
    "train_clips_per_s",
    "device_count",
    "mfu",
    "tags",
]


class ArtifactLoader(Protocol):
    """Reads what a finished cell logged; MLflow in use, a dict in unit tests."""

    def predictions(self, run_id: str) -> pd.DataFrame | None: ...

    def confusion(self, run_id: str) -> dict[str, Any] | None: ...

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]: ...


@dataclass
class ExperimentRuns:
    """Every expected cell (finished or not) with its metrics, plus where to read its artifacts."""

    name: str
    runs: pd.DataFrame  # RUN_COLUMNS, one row per expected cell
    loader: ArtifactLoader
    settings: list[str]
    datasets: dict[str, DatasetInfo] = field(default_factory=dict)
    tracking_uri: str | None = None
    experiment_id: str | None = None
    output: Path | None = None

    @property
    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["finished"]]


def _training_kind(recipe: str) -> str:
    return "frozen" if recipe == "linear_probe" else "fine-tuned"


def collect_runs(experiment: str | Path | Any, output: str | Path | None = None) -> ExperimentRuns:
    """The one place that reads the experiment (a file, or a loaded spec) and asks MLflow what finished.

    Re-point this when harness.experiment / harness.plan / harness.tracking move; nothing else imports
    them.
    """
    from harness.experiment.loading import load_experiment
    from harness.plan.cells import expand_cells
    from harness.plan.places import Places
    from harness.results.run_artifacts import RunArtifacts
    from harness.tracking.runs import experiment_id, finished_by_cell, read_runs
    from mmder.data.corpora import corpus_classes
    from mmder.data.folds import fold_names

    spec = load_experiment(experiment) if isinstance(experiment, str | Path) else experiment
    places = Places.of(spec, output)
    out, uri = places.output, places.tracking_uri
    runs = read_runs(uri, spec.mlflow_experiment, missing_as_none=True)
    finished = finished_by_cell(runs or [])
    rows = []
    for cell in expand_cells(spec):
        run = finished.get(cell.key)
        row: dict[str, Any] = {
            "key": cell.key,
            "dataset": cell.dataset,
            "setting": cell.setting,
            "fold": cell.fold,
            "fold_name": cell.fold_name,
            "seed": cell.seed,
            "finished": run is not None,
        }
        if run is not None:
            m, tags, info = run.data.metrics, run.data.tags, run.info
            wall = m.get("wall_seconds")
            if wall is None and info.end_time and info.start_time:
                wall = (info.end_time - info.start_time) / 1000.0
            row.update(
                run_id=info.run_id,
                uar=m.get("final_uar"),
                war=m.get("final_war"),
                wall_seconds=wall,
                train_clips_per_s=m.get("train_clips_per_s"),
                device_count=float(tags.get(TAG_DEVICE_COUNT, 1)),
                mfu=m.get("mfu"),
                tags={k: v for k, v in tags.items() if k.startswith(TAG_PREFIX)},
            )
        rows.append(row)
    datasets = {}
    for ds in spec.datasets:
        n_folds = len(ds.folds) if ds.folds is not None else len(fold_names(ds.protocol))
        classes = corpus_classes(ds.corpus, ds.options)
        datasets[ds.label] = DatasetInfo(
            ds.corpus,
            classes,
            n_folds,
            _training_kind(spec.training.recipe),
            spec.preprocess.speaker_norm,
            ds.protocol.get("test") if ds.protocol.get("kind") == "cross_corpus" else None,
            encoder_start(spec.model.pretrained),
            len(spec.grid.seeds),
        )
    return ExperimentRuns(
        name=spec.name,
        runs=pd.DataFrame(rows, columns=RUN_COLUMNS).astype({"finished": bool}),
        loader=RunArtifacts(uri, out, {r.info.run_id: r.info.artifact_uri for r in runs})
        if runs is not None
        else _NoArtifacts(),
        settings=list(spec.grid.settings),
        datasets=datasets,
        tracking_uri=uri if runs is not None else None,
        experiment_id=experiment_id(uri, spec.mlflow_experiment) if runs is not None else None,
        output=out,
    )


class _NoArtifacts:
    def predictions(self, run_id: str) -> None:
        return None

    def confusion(self, run_id: str) -> None:
        return None

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return []


def pooled_predictions(runs: pd.DataFrame, loader: ArtifactLoader) -> pd.DataFrame:
    """All test predictions of the given finished runs, each row tagged with its cell's key, dataset,
    setting, fold and seed; in the runs' order. A loader that reads many runs at once (``predictions_of``,
    one table for a whole sweep) is asked once; a plain one run by run."""
    cell = ["key", "dataset", "setting", "fold", "seed"]
    if runs.empty:  # no cell finished (each failed): nothing to pool, and no table to join
        return _no_predictions()
    many = getattr(loader, "predictions_of", None)
    if many is not None:
        rows = many([str(r) for r in runs["run_id"]])
        pooled = runs[["run_id", *cell]].merge(rows, on="run_id", how="inner").drop(columns="run_id")
        pooled = pooled[[c for c in pooled.columns if c not in cell] + cell]
        # another dataset's class columns (NaN here) are not this pool's
        return pooled.dropna(axis=1, how="all") if not pooled.empty else _no_predictions()
    parts = []
    for r in runs.itertuples(index=False):
        pred = loader.predictions(r.run_id)
        if pred is None:
            continue
        parts.append(pred.assign(key=r.key, dataset=r.dataset, setting=r.setting, fold=r.fold, seed=r.seed))
    return pd.concat(parts, ignore_index=True) if parts else _no_predictions()


def _no_predictions() -> pd.DataFrame:
    return pd.DataFrame(
        columns=["clip_id", "speaker", "true", "predicted", "key", "dataset", "setting", "fold", "seed"]
    )


def speaker_clusters(pred: pd.DataFrame) -> tuple[Any, str, str]:
    """The test speaker of each prediction row, the unit's name and a note. Predictions that name no
    speaker (older runs) are clustered by fold, and the note says so."""
    if len(pred) and "speaker" in pred.columns and pred["speaker"].notna().all():
        return pred["speaker"].astype(str).to_numpy(), "speaker", ""
    return ("fold " + pred["fold"].astype(str)).to_numpy(), "fold", FOLD_FALLBACK


def _speaker_intervals(pooled: pd.DataFrame) -> dict[str, Any]:
    """Pooled UAR/WAR intervals that resample test speakers (NaN below stats.MIN_CLUSTERS); where some
    fold has >= 2 seeds, also the two-level one (seeds and speakers), which is then the headline."""
    clusters, unit, _ = speaker_clusters(pooled)
    two_level = several_seeds(pooled)
    out: dict[str, Any] = {"interval_unit": unit, "interval": LABEL if two_level else SPEAKER_LABEL}
    for metric in ("uar", "war"):
        ci = stats.speaker_bootstrap(pooled["true"], pooled["predicted"], clusters, metric, unit)
        out[f"{metric}_spk_lo"], out[f"{metric}_spk_hi"] = ci.lo, ci.hi
        seeded = two_level_bootstrap([with_clusters(pooled, clusters)], metric, unit) if two_level else None
        out[f"{metric}_seed_lo"] = seeded.lo if seeded else float("nan")
        out[f"{metric}_seed_hi"] = seeded.hi if seeded else float("nan")
    out["speakers"] = ci.clusters if unit == "speaker" else float("nan")
    return out


def _row(group: pd.DataFrame, pooled: pd.DataFrame, per_class: bool) -> dict[str, Any]:
    """One row's figures; ``pooled``: the predictions of the group's finished runs."""
    done = group[group["finished"]]
    uar_i = stats.t_interval(done["uar"].astype(float), bounds=(0.0, 100.0))
    war_i = stats.t_interval(done["war"].astype(float), bounds=(0.0, 100.0))
    row: dict[str, Any] = {
        "folds": int(done["fold"].nunique()),
        "seeds": int(done["seed"].nunique()),
        "runs": len(done),
        "missing": int((~group["finished"]).sum()),
        "n": war_i.n,
        "uar_mean": uar_i.estimate,
        "uar_lo": uar_i.lo,
        "uar_hi": uar_i.hi,
        "uar_std": float(done["uar"].astype(float).std()) if len(done) > 1 else float("nan"),
        "war_mean": war_i.estimate,
        "war_lo": war_i.lo,
        "war_hi": war_i.hi,
        "war_std": float(done["war"].astype(float).std()) if len(done) > 1 else float("nan"),
    }
    # pooled figures only when every finished run's predictions are there: a partial pool would mislead
    complete = not pooled.empty and pooled["key"].nunique() == len(done)
    row["uar_pooled"] = stats.uar(pooled["true"], pooled["predicted"]) if complete else float("nan")
    row["war_pooled"] = stats.war(pooled["true"], pooled["predicted"]) if complete else float("nan")
    nan = float("nan")
    no_pool = {
        "speakers": nan,
        "interval_unit": "",
        "interval": "",
        **{f"{m}_{i}_{e}": nan for m in ("uar", "war") for i in ("spk", "seed") for e in ("lo", "hi")},
    }
    row.update(_speaker_intervals(pooled) if complete else no_pool)
    wall = done["wall_seconds"].astype(float)
    row["wall_s_per_cell"] = float(wall.mean()) if wall.notna().any() else float("nan")
    clips = done["train_clips_per_s"].astype(float)
    row["train_clips_per_s"] = float(clips.mean()) if clips.notna().any() else float("nan")
    hours = wall * done["device_count"].astype(float).fillna(1.0) / 3600.0
    row["device_hours"] = float(hours.sum()) if hours.notna().any() else float("nan")
    mfu = done["mfu"].astype(float)
    row["mfu"] = float(mfu.mean()) if mfu.notna().any() else float("nan")
    if per_class and complete:
        for cls, value in stats.per_class_recall(pooled["true"], pooled["predicted"]).items():
            row[f"recall_{cls}"] = value
    return row


def leaderboard(
    runs: pd.DataFrame,
    loader: ArtifactLoader | None = None,
    settings_order: list[str] | None = None,
    per_class: bool = False,
) -> pd.DataFrame:
    """One row per (dataset, setting) over every expected cell; see the module docstring for columns."""
    loader = loader or _NoArtifacts()
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    pooled = pooled_predictions(runs[runs["finished"]], loader)  # one read for every row
    by_row = dict(iter(pooled.groupby(["dataset", "setting"], sort=False))) if not pooled.empty else {}
    rows = []
    for (dataset, setting), group in runs.groupby(["dataset", "setting"], sort=False):
        mine = by_row.get((dataset, setting), _no_predictions())
        rows.append({"dataset": dataset, "setting": setting, **_row(group, mine, per_class)})
    table = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(settings_order or [])}
    table["_order"] = table["setting"].map(lambda s: order.get(s, len(order)))
    table = table.sort_values(["dataset", "_order"], kind="stable").drop(columns="_order")
    extra = [c for c in table.columns if c not in COLUMNS]
    return table[[*COLUMNS, *extra]].reset_index(drop=True)


def experiment_leaderboard(
    experiment: ExperimentRuns | Any, output: Path | None = None, per_class: bool = False
) -> pd.DataFrame:
    """The leaderboard of an experiment: an ``ExperimentRuns``, or (spec, output) as the sweep passes."""
    if not isinstance(experiment, ExperimentRuns):
        experiment = collect_runs(experiment, output)
    return leaderboard(experiment.runs, experiment.loader, experiment.settings, per_class)


def missing_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """The cells that have no finished run yet: what a partial row is waiting for."""
    return runs.loc[~runs["finished"], ["dataset", "setting", "fold", "seed", "key"]]
