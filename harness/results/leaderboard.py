"""Finished MLflow runs -> pandas -> a table a reviewer accepts.

Per (dataset, setting): how many folds, seeds and runs it rests on and how many cells are still
missing; the mean of per-fold UAR/WAR with a 95 % t interval over folds x seeds; UAR/WAR pooled over
all test predictions (some papers report that instead); optionally per-class recall; and what the
cells cost (wall time, clips/s, device-hours, MFU). An unfinished row is shown, marked, with its
missing count: it is never quietly averaged over fewer folds.

Only ``collect_runs`` knows the experiment file and MLflow layout (harness.experiment.config/grid/tracking);
everything else works on an ``ExperimentRuns`` (a DataFrame of cells + an artifact loader), so it is
unit-testable with hand-made frames and re-pointable when those modules move.
"""

from __future__ import annotations

import io
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
    "uar_mean",
    "uar_lo",
    "uar_hi",
    "uar_std",
    "war_mean",
    "war_lo",
    "war_hi",
    "war_std",
    "uar_pooled",
    "war_pooled",
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


class MlflowLoader:
    """Artifacts and metric histories of runs in one MLflow store, cached per run."""

    def __init__(self, uri: str) -> None:
        import os

        from mlflow.tracking import MlflowClient

        # one progress bar per tiny artifact would bury the table on stderr
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

        self.client = MlflowClient(tracking_uri=uri)
        self._cache: dict[tuple[str, str], Any] = {}

    def _text(self, run_id: str, name: str) -> str | None:
        import tempfile

        key = (run_id, name)
        if key not in self._cache:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    path = self.client.download_artifacts(run_id, name, tmp)
                    self._cache[key] = Path(path).read_text()
            except Exception:  # noqa: BLE001 - a run without the artifact is reported, not fatal
                self._cache[key] = None
        return self._cache[key]

    def predictions(self, run_id: str) -> pd.DataFrame | None:
        text = self._text(run_id, "predictions.csv")
        if not text:
            return None
        return pd.read_csv(
            io.StringIO(text), dtype={"clip_id": str, "speaker": str, "true": str, "predicted": str}
        )

    def confusion(self, run_id: str) -> dict[str, Any] | None:
        text = self._text(run_id, "confusion.json")
        return json.loads(text) if text else None

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, metric))


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
    from harness.tracking.store import Tracker
    from mmder.data.corpora import corpus_classes
    from mmder.data.folds import fold_names

    spec = load_experiment(experiment) if isinstance(experiment, str | Path) else experiment
    places = Places.of(spec, output)
    out, uri = places.output, places.tracking_uri
    tracker = Tracker.existing(uri, spec.mlflow_experiment)
    finished = tracker.finished_cells() if tracker is not None else {}
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
        loader=MlflowLoader(uri) if tracker is not None else _NoArtifacts(),
        settings=list(spec.grid.settings),
        datasets=datasets,
        tracking_uri=uri if tracker is not None else None,
        experiment_id=tracker.experiment_id if tracker is not None else None,
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
    """All test predictions of the given finished runs, each row tagged with its cell's fold and seed."""
    parts = []
    for r in runs.itertuples(index=False):
        pred = loader.predictions(r.run_id)
        if pred is None:
            continue
        parts.append(pred.assign(key=r.key, dataset=r.dataset, setting=r.setting, fold=r.fold, seed=r.seed))
    if not parts:
        return pd.DataFrame(
            columns=["clip_id", "speaker", "true", "predicted", "key", "dataset", "setting", "fold", "seed"]
        )
    return pd.concat(parts, ignore_index=True)


def _row(group: pd.DataFrame, loader: ArtifactLoader, per_class: bool) -> dict[str, Any]:
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
    pooled = pooled_predictions(done, loader)
    # pooled figures only when every finished run's predictions are there: a partial pool would mislead
    complete = not pooled.empty and pooled["key"].nunique() == len(done)
    row["uar_pooled"] = stats.uar(pooled["true"], pooled["predicted"]) if complete else float("nan")
    row["war_pooled"] = stats.war(pooled["true"], pooled["predicted"]) if complete else float("nan")
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
    rows = []
    for (dataset, setting), group in runs.groupby(["dataset", "setting"], sort=False):
        rows.append({"dataset": dataset, "setting": setting, **_row(group, loader, per_class)})
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


def _num(x: Any, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def with_interval(mean: float, lo: float, hi: float, n: int) -> str:
    """'45.1 [40.2, 50.0]', or '45.1 (n=1, no interval)': the paper's look."""
    if n == 0 or math.isnan(mean):
        return "-"
    if math.isnan(lo):
        return f"{mean:.1f} (n=1, no interval)"
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"


def _status(r: Any, expected_folds: int | None) -> str:
    folds = f"{r.folds}/{expected_folds}" if expected_folds else str(r.folds)
    return folds + (f" !{r.missing} missing" if r.missing else "")


def _display(table: pd.DataFrame, datasets: dict[str, DatasetInfo]) -> pd.DataFrame:
    """Text cells for table/markdown: intervals, fold status with a visible mark, costs."""
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
            "UAR % [95% t]": with_interval(r.uar_mean, r.uar_lo, r.uar_hi, r.n),
            "WAR % [95% t]": with_interval(r.war_mean, r.war_lo, r.war_hi, r.n),
            "pooled UAR": _num(r.uar_pooled),
            "pooled WAR": _num(r.war_pooled),
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


def _markdown(frame: pd.DataFrame) -> str:
    """Markdown by hand: DataFrame.to_markdown needs `tabulate`, which we do not ship."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _latex(frame: pd.DataFrame, caption: str | None = None) -> str:
    styler = frame.style.hide(axis="index").format(precision=2, na_rep="--", escape="latex")
    styler = styler.format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, caption=caption).replace("Δ", "$\\Delta$")  # pdflatex-safe


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
    """The leaderboard as text in one of FORMATS; with ``references``, published rows follow."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    datasets = datasets or {}
    ref = reference_rows(table, datasets) if references and not table.empty else pd.DataFrame()
    if fmt == "json":
        payload: dict[str, Any] = {"rows": json.loads(table.to_json(orient="records"))}
        if references:
            payload["references_version"] = refs.REFERENCES_VERSION
            payload["references"] = json.loads(ref.to_json(orient="records")) if not ref.empty else []
        return json.dumps(payload, indent=2)
    if fmt == "csv":
        text = table.to_csv(index=False, float_format="%.2f")
        if references and not ref.empty:
            text += f"\n# references {refs.REFERENCES_VERSION}\n" + ref.to_csv(
                index=False, float_format="%.2f"
            )
        return text
    if table.empty:
        return "(no finished cells yet)"
    shown = _display(table, datasets)
    if fmt == "latex":
        text = _latex(shown, caption="UAR/WAR (\\%): mean over folds x seeds [95 \\% t interval]")
        if references and not ref.empty:
            caption = f"Published results (references {refs.REFERENCES_VERSION})"
            text += "\n" + _latex(_references_display(ref), caption=caption)
        return text
    if fmt == "markdown":
        text = _markdown(shown)
        if references and not ref.empty:
            text += f"\n\nPublished results (references {refs.REFERENCES_VERSION}):\n\n" + _markdown(
                _references_display(ref)
            )
        return text
    return _table_text(shown, table, ref if references else None, datasets)


def _table_text(
    shown: pd.DataFrame, table: pd.DataFrame, ref: pd.DataFrame | None, datasets: dict[str, DatasetInfo]
) -> str:
    lines = []
    for dataset, part in shown.groupby("dataset", sort=False):
        info = datasets.get(dataset)
        head = f"{dataset}"
        if info:
            head += f"  ({info.corpus}, {info.classes or '?'} classes, {info.folds} folds, {info.training}"
            if info.speaker_norm != "none":  # a transductive protocol is said where the numbers are
                head += f", speaker-normalised ({info.speaker_norm}, transductive)"
            if info.tested_on:
                head += f", tested on {info.tested_on}"
            head += ")"
        lines.append(head)
        lines.append(_indent(part.drop(columns="dataset").to_string(index=False)))
        raw = table[table["dataset"] == dataset]
        if (raw["missing"] > 0).any():
            lines.append("  ! = cells not finished yet: the figures rest only on the finished ones (see n)")
        if (raw["n"] == 1).any():
            lines.append("  n=1: one run, no interval")
        if ref is not None and not ref.empty and dataset in set(ref["dataset"]):
            part_ref = _references_display(ref[ref["dataset"] == dataset]).drop(columns="dataset")
            lines.append(
                f"  published (references {refs.REFERENCES_VERSION}; Δ = ours - theirs, same setting):"
            )
            lines.append(_indent(part_ref.to_string(index=False), 4))
        lines.append("")
    return "\n".join(lines).rstrip()


def _indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + ln for ln in text.splitlines())


def missing_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """The cells that have no finished run yet: what a partial row is waiting for."""
    return runs.loc[~runs["finished"], ["dataset", "setting", "fold", "seed", "key"]]
