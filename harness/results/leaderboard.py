"""Finished MLflow runs -> pandas -> a table a reviewer accepts.

Per (dataset, setting): how many folds, seeds, runs and test speakers it rests on and how many cells
are still missing; UAR/WAR pooled over all test predictions with a 95 % bootstrap interval that
resamples test speakers (the headline: the speakers are what was sampled); the mean of per-fold UAR/WAR
with a 95 % t interval over folds x seeds (none below 3 values); optionally per-class recall; and what
the cells cost (wall time, clips/s, device-hours, MFU). Every format carries the protocol note. An
unfinished row is shown, marked, with its missing count: it is never quietly averaged over fewer folds.

Only ``collect_runs`` knows the experiment file and MLflow layout (harness.experiment.config/grid/tracking);
everything else works on an ``ExperimentRuns`` (a DataFrame of cells + an artifact loader), so it is
unit-testable with hand-made frames and re-pointable when those modules move.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import pandas as pd

from harness.tracking.tags import TAG_DEVICE_COUNT, TAG_PREFIX
from mmder.eval import references as refs
from mmder.eval import stats

FORMATS = ("table", "csv", "markdown", "json", "latex")
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
class DatasetInfo:
    """The protocol facts a reference comparison needs: corpus, classes, folds, frozen or fine-tuned."""

    corpus: str
    classes: int | None
    folds: int
    training: str  # "frozen" or "fine-tuned"
    speaker_norm: str = "none"  # preprocess.speaker_norm: test speakers standardised on their own clips
    # cross_corpus: the dataset tested on; published rows are in-corpus, so none is set beside these
    tested_on: str | None = None


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
    from harness.experiment.config import load_experiment
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


FOLD_FALLBACK = (
    "these predictions name no test speaker (written before predictions.csv had a speaker column): "
    "the fold, with all its speakers, is the resampled unit instead"
)


def speaker_clusters(pred: pd.DataFrame) -> tuple[Any, str, str]:
    """The test speaker of each prediction row, the unit's name and a note. Predictions that name no
    speaker (older runs) are clustered by fold, and the note says so."""
    if len(pred) and "speaker" in pred.columns and pred["speaker"].notna().all():
        return pred["speaker"].astype(str).to_numpy(), "speaker", ""
    return ("fold " + pred["fold"].astype(str)).to_numpy(), "fold", FOLD_FALLBACK


def _speaker_intervals(pooled: pd.DataFrame) -> dict[str, Any]:
    """Pooled UAR/WAR intervals that resample test speakers (NaN below stats.MIN_CLUSTERS)."""
    clusters, unit, _ = speaker_clusters(pooled)
    out: dict[str, Any] = {"interval_unit": unit}
    for metric in ("uar", "war"):
        ci = stats.speaker_bootstrap(pooled["true"], pooled["predicted"], clusters, metric, unit)
        out[f"{metric}_spk_lo"], out[f"{metric}_spk_hi"] = ci.lo, ci.hi
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
        **{f"{m}_spk_{e}": nan for m in ("uar", "war") for e in ("lo", "hi")},
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


# ---------------------------------------------------------------- references


def reference_rows(table: pd.DataFrame, datasets: dict[str, DatasetInfo]) -> pd.DataFrame:
    """Published rows for each dataset of the table, with the delta of our same-setting row to each."""
    rows = []
    for dataset in table["dataset"].unique():
        info = datasets.get(dataset)
        if info is None or info.tested_on:  # a cross-corpus row is no in-corpus row's peer
            continue
        ours = table[table["dataset"] == dataset].set_index("setting")
        for ref in refs.for_dataset(info.corpus):
            diffs = refs.protocol_differences(
                ref, info.classes, info.folds, info.training, speaker_normalised=info.speaker_norm != "none"
            )
            mine = ours.loc[ref.setting] if ref.setting in ours.index else None
            rows.append(
                {
                    "dataset": dataset,
                    "reference": ref.method,
                    "setting": ref.setting or "",
                    "ref_uar": ref.uar if ref.uar is not None else float("nan"),
                    "ref_war": ref.war if ref.war is not None else float("nan"),
                    "d_uar": _delta(mine, "uar_mean", ref.uar),
                    "d_war": _delta(mine, "war_mean", ref.war),
                    "classes": ref.classes,
                    "folds": ref.folds,
                    "training": ref.training,
                    "protocol_differs": "; ".join(diffs),
                    "source": ref.source + (f" ({ref.note})" if ref.note else ""),
                }
            )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["folds"] = frame["folds"].astype("Int64")  # None = not published, not 0 and not 6.00
    return frame


def _delta(mine: pd.Series | None, column: str, value: float | None) -> float:
    if mine is None or value is None:
        return float("nan")
    return float(mine[column]) - value


# ---------------------------------------------------------------- rendering


def intervals_note() -> str:
    """What the intervals are, in words every format carries."""
    return (
        "UAR/WAR in %; [95% spk]: pooled over test predictions, 95 % percentile bootstrap resampling test "
        f"speakers ({stats.RESAMPLES} resamples, seed {stats.SEED}); mean [95% t]: mean over folds x "
        f"seeds, 95 % Student t interval (none below {stats.MIN_T_VALUES} values)"
    )


def protocol_note(dataset: str, info: DatasetInfo | None) -> str:
    """'synthetic  (synthetic, 6 classes, 2 folds, fine-tuned, ...)': what the numbers were measured on."""
    if info is None:
        return str(dataset)
    head = f"{dataset}  ({info.corpus}, {info.classes or '?'} classes, {info.folds} folds, {info.training}"
    if info.speaker_norm != "none":  # a transductive protocol is said where the numbers are
        head += f", speaker-normalised ({info.speaker_norm}, transductive)"
    if info.tested_on:
        head += f", tested on {info.tested_on}"
    return head + ")"


def _num(x: Any, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def with_interval(mean: float, lo: float, hi: float, n: int) -> str:
    """'45.1 [40.2, 50.0]', or '45.1 (n=2, no interval)' where n cannot carry one: the paper's look."""
    if n == 0 or math.isnan(mean):
        return "-"
    if math.isnan(lo):
        return f"{mean:.1f} (n={n}, no interval)"
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"


def _speaker_interval(mean: float, lo: float, hi: float, speakers: float, unit: str) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(lo):
        count = f"{int(speakers)} speakers" if unit == "speaker" else "by fold"
        return f"{mean:.1f} ({count}, no interval)"
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"


def _status(r: Any, expected_folds: int | None) -> str:
    folds = f"{r.folds}/{expected_folds}" if expected_folds else str(r.folds)
    return folds + (f" !{r.missing} missing" if r.missing else "")


def _display(table: pd.DataFrame, datasets: dict[str, DatasetInfo]) -> pd.DataFrame:
    """Text cells for table/markdown/LaTeX: intervals, fold status with a visible mark, costs."""
    out = []
    for record in table.to_dict("records"):
        # by name, not itertuples: a class label such as `frown-ee` or `colère` is no identifier and
        # itertuples renamed its column, so every per-class cell printed as missing
        r = SimpleNamespace(**{k: v for k, v in record.items() if not k.startswith("recall_")})
        info = datasets.get(r.dataset)
        row = {
            "dataset": r.dataset,
            "setting": r.setting,
            "folds": _status(r, info.folds if info else None),
            "seeds": r.seeds,
            "n": r.n,
            "speakers": _num(r.speakers, 0),
            "UAR % [95% spk]": _speaker_interval(
                r.uar_pooled, r.uar_spk_lo, r.uar_spk_hi, r.speakers, r.interval_unit
            ),
            "WAR % [95% spk]": _speaker_interval(
                r.war_pooled, r.war_spk_lo, r.war_spk_hi, r.speakers, r.interval_unit
            ),
            "mean UAR [95% t]": with_interval(r.uar_mean, r.uar_lo, r.uar_hi, r.n),
            "mean WAR [95% t]": with_interval(r.war_mean, r.war_lo, r.war_hi, r.n),
            "wall s/cell": _num(r.wall_s_per_cell, 0),
            "clips/s": _num(r.train_clips_per_s, 1),
            "device-h": _num(r.device_hours, 3),
            "MFU": _num(r.mfu, 3),
        }
        for col, value in record.items():
            if col.startswith("recall_"):
                row[col.removeprefix("recall_")] = _num(value)
        out.append(row)
    return pd.DataFrame(out)


def _footnotes(raw: pd.DataFrame) -> list[str]:
    """What a reader must know to read these rows: unfinished cells, missing or cut intervals."""
    lines = []
    if (raw["missing"] > 0).any():
        lines.append("! = cells not finished yet: the figures rest only on the finished ones (see n)")
    if (raw["war_lo"].isna() & (raw["n"] > 0)).any():
        lines.append(
            f"no t interval below n={stats.MIN_T_VALUES} (fold, seed) values: it would span most of 0-100"
        )
    if (
        (raw["war_lo"] == 0.0) | (raw["war_hi"] == 100.0) | (raw["uar_lo"] == 0.0) | (raw["uar_hi"] == 100.0)
    ).any():
        lines.append("a t interval reaching past 0 or 100 is cut there")
    if (raw["war_spk_lo"].isna() & raw["war_pooled"].notna()).any():
        lines.append(f"no speaker interval below {stats.MIN_CLUSTERS} test speakers")
    if (raw["interval_unit"] == "fold").any():
        lines.append(FOLD_FALLBACK)
    return lines


def _markdown(frame: pd.DataFrame) -> str:
    """Markdown by hand: DataFrame.to_markdown needs `tabulate`, which we do not ship."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _latex(frame: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """booktabs LaTeX; text columns left, every number column right-aligned so digits line up."""
    text_cols = {"dataset", "setting", "reference", "protocol", "differs from ours"}
    align = "".join("l" if c in text_cols else "r" for c in frame.columns)
    styler = frame.style.hide(axis="index").format(precision=2, na_rep="--", escape="latex")
    styler = styler.format_index(escape="latex", axis=1)
    latex = styler.to_latex(
        hrules=True, caption=caption, label=label, column_format=align, position_float="centering"
    )
    return latex.replace("Δ", "$\\Delta$")  # pdflatex-safe


def _references_display(ref: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": ref["dataset"],
            "reference": ref["reference"],
            "UAR": ref["ref_uar"].map(_num),
            "WAR": ref["ref_war"].map(_num),
            "ΔUAR (ours-ref)": ref["d_uar"].map(lambda v: _signed(v)),
            "ΔWAR (ours-ref)": ref["d_war"].map(lambda v: _signed(v)),
            "protocol": [
                f"{c} cl, {folds_text(f)}, {t}"
                for c, f, t in zip(ref["classes"], ref["folds"], ref["training"], strict=True)
            ],
            "differs from ours": ref["protocol_differs"].replace("", "same"),
        }
    )


def _signed(v: float) -> str:
    return "" if v is None or math.isnan(v) else f"{v:+.1f}"


def folds_text(folds: Any) -> str:
    if pd.isna(folds):
        return "folds n/a"
    return "1 split" if int(folds) == 1 else f"{int(folds)} folds"


def render(
    table: pd.DataFrame,
    fmt: str = "table",
    datasets: dict[str, DatasetInfo] | None = None,
    references: bool = False,
) -> str:
    """The leaderboard as text in one of FORMATS; with ``references``, published rows follow. Every
    format carries the protocol of each dataset and what the intervals are; CSV and JSON keep full
    precision."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    datasets = datasets or {}
    ref = reference_rows(table, datasets) if references and not table.empty else pd.DataFrame()
    if fmt == "json":
        return _json(table, datasets, ref if references else None)
    notes = [protocol_note(d, datasets.get(d)) for d in table["dataset"].unique()] + [intervals_note()]
    if fmt == "csv":
        text = "".join(f"# {n}\n" for n in notes) + table.to_csv(index=False)
        if references and not ref.empty:
            text += f"\n# references {refs.REFERENCES_VERSION}\n" + ref.to_csv(index=False)
        return text
    if table.empty:
        return "(no finished cells yet)"
    shown = _display(table, datasets)
    notes += _footnotes(table)
    if fmt == "latex":
        return _latex_text(shown, ref, notes)
    if fmt == "markdown":
        text = _markdown(shown) + "\n\nTable: " + "; ".join(notes)
        if references and not ref.empty:
            text += f"\n\nPublished results (references {refs.REFERENCES_VERSION}):\n\n" + _markdown(
                _references_display(ref)
            )
        return text
    return _table_text(shown, table, ref if references else None, datasets)


def _json(table: pd.DataFrame, datasets: dict[str, DatasetInfo], ref: pd.DataFrame | None) -> str:
    """An object: the protocol of each dataset, what the intervals are, and the rows at full precision."""
    present = table["dataset"].unique() if not table.empty else list(datasets)
    payload: dict[str, Any] = {
        "protocol": {
            str(d): {**dataclasses.asdict(datasets[d]), "note": protocol_note(d, datasets[d])}
            for d in present
            if d in datasets
        },
        "note": intervals_note(),
        "resamples": stats.RESAMPLES,
        "seed": stats.SEED,
        "rows": _json_rows(table),
    }
    if ref is not None:
        payload["references_version"] = refs.REFERENCES_VERSION
        payload["references"] = _json_rows(ref)
    return json.dumps(payload, indent=2, ensure_ascii=False)


def _json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records at full precision, NaN as null (json.dumps would write NaN, which is not JSON)."""
    return json.loads(frame.to_json(orient="records", double_precision=15)) if not frame.empty else []


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_text(shown: pd.DataFrame, ref: pd.DataFrame, notes: list[str]) -> str:
    caption = _latex_escape("; ".join(notes))
    text = _latex(shown, caption=caption, label="tab:mmder-leaderboard")
    if not ref.empty:
        caption = f"Published results (references {refs.REFERENCES_VERSION})"
        text += "\n" + _latex(_references_display(ref), caption=caption, label="tab:mmder-references")
    return text


def _table_text(
    shown: pd.DataFrame, table: pd.DataFrame, ref: pd.DataFrame | None, datasets: dict[str, DatasetInfo]
) -> str:
    lines = []
    for dataset, part in shown.groupby("dataset", sort=False):
        lines.append(protocol_note(dataset, datasets.get(dataset)))
        lines.append(_indent(part.drop(columns="dataset").to_string(index=False)))
        lines += [f"  {n}" for n in _footnotes(table[table["dataset"] == dataset])]
        if ref is not None and not ref.empty and dataset in set(ref["dataset"]):
            part_ref = _references_display(ref[ref["dataset"] == dataset]).drop(columns="dataset")
            lines.append(
                f"  published (references {refs.REFERENCES_VERSION}; Δ = ours - theirs, same setting):"
            )
            lines.append(_indent(part_ref.to_string(index=False), 4))
        lines.append("")
    lines.append(intervals_note())
    return "\n".join(lines).rstrip()


def _indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + ln for ln in text.splitlines())


def missing_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """The cells that have no finished run yet: what a partial row is waiting for."""
    return runs.loc[~runs["finished"], ["dataset", "setting", "fold", "seed", "key"]]
