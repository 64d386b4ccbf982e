"""``mmder report``: one self-contained HTML file a reviewer can open offline, plus its figures in MLflow.

Per dataset: the leaderboard exactly as ``mmder leaderboard --per-class`` prints it; a bar chart of
each setting's pooled UAR/WAR with its 95 % interval over test speakers, the chance level and
published values as markers, on a fixed 0-100 axis; row-normalised confusion matrices summed over the
finished runs; per-epoch learning curves; the all-pairs matrix (speaker-level p, BH-corrected, and the
difference); the cost table; and the provenance (run ids, keys, ``mmder.*`` tags) of every run the
figures rest on. Every figure is written as SVG (for print) and PNG beside the HTML, which embeds the
SVGs so the file travels alone.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

from harness.tracking.tags import KIND_SWEEP, TAG_KIND, TEST_WAR, tag_filter

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.results.board_text import html_tables  # noqa: E402
from harness.results.compare import compare_all, format_p, format_speaker_p  # noqa: E402
from harness.results.compare_text import all_notes, all_pairs_table  # noqa: E402
from harness.results.leaderboard import (  # noqa: E402
    ExperimentRuns,
    experiment_leaderboard,
    folds_text,
    intervals_note,
    reference_rows,
)
from mmder.eval import references as refs  # noqa: E402

CURVES = ("train_loss", "test_loss", TEST_WAR)


FIGURE_FORMATS = ("svg", "png")


@dataclass
class Report:
    html: str
    figures: dict[str, bytes] = field(default_factory=dict)  # file name (.svg and .png) -> bytes


def _save(fig: plt.Figure) -> dict[str, bytes]:
    """The figure as SVG (vector for print, text kept as text so it stays searchable and editable; no
    date, so a rerun writes the same file) and PNG."""
    out = {}
    for fmt in FIGURE_FORMATS:
        buf = io.BytesIO()
        with plt.rc_context({"svg.hashsalt": "mmder", "svg.fonttype": "none"}):
            fig.savefig(
                buf,
                format=fmt,
                dpi=150,
                bbox_inches="tight",
                metadata={"Date": None} if fmt == "svg" else None,
            )
        out[fmt] = buf.getvalue()
    plt.close(fig)
    return out


def chance_level(table: pd.DataFrame, dataset: str, exp: ExperimentRuns) -> float | None:
    """100 / number of classes (from the dataset's protocol, else from the per-class columns)."""
    info = exp.datasets.get(dataset)
    classes = info.classes if info is not None else None
    if not classes:
        part = table[table["dataset"] == dataset]
        classes = sum(1 for c in part.columns if c.startswith("recall_") and part[c].notna().any())
    return 100.0 / classes if classes else None


def _whiskers(mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Error-bar lengths below and above, kept inside 0-100; none (0) where there is no interval."""
    lo_c, hi_c = np.clip(lo, 0.0, 100.0), np.clip(hi, 0.0, 100.0)
    return np.nan_to_num(np.vstack([mean - lo_c, hi_c - mean]))


def bar_chart(table: pd.DataFrame, dataset: str, ref: pd.DataFrame, chance: float | None) -> dict[str, bytes]:
    """Pooled UAR and WAR per setting with 95 % whiskers over test speakers, on a 0-100 axis with the
    chance level; published same-setting values as markers."""
    part = table[table["dataset"] == dataset]
    x = np.arange(len(part))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(part) + 2), 3.8))
    for offset, metric, color in ((-0.2, "uar", "#4c72b0"), (0.2, "war", "#dd8452")):
        mean = part[f"{metric}_pooled"].to_numpy(dtype=float)
        lo, hi = (
            part[f"{metric}_spk_lo"].to_numpy(dtype=float),
            part[f"{metric}_spk_hi"].to_numpy(dtype=float),
        )
        ax.bar(x + offset, mean, width=0.4, color=color, label=f"{metric.upper()} (95 % over speakers)")
        ax.errorbar(
            x + offset, mean, yerr=_whiskers(mean, lo, hi), fmt="none", ecolor="black", capsize=3, lw=1
        )
        for i in np.flatnonzero(np.isnan(lo) & ~np.isnan(mean)):
            ax.annotate(
                "no interval", (i + offset, min(mean[i] + 2, 95)), ha="center", fontsize=6, rotation=90
            )
    if chance is not None:
        ax.axhline(chance, color="0.35", ls="--", lw=1, label=f"chance ({chance:.1f} %)")
    _published_markers(ax, part, ref, dataset)
    for i, r in enumerate(part.itertuples(index=False)):
        if r.missing:
            ax.annotate(f"{r.missing} missing", (i, 2), ha="center", fontsize=8, color="crimson")
    ax.set_xticks(x, part["setting"])
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title(f"{dataset}: pooled over test predictions, 95 % bootstrap over test speakers", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=4, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig)


def _published_markers(ax: Any, part: pd.DataFrame, ref: pd.DataFrame, dataset: str) -> None:
    if ref.empty:
        return
    mine = ref[(ref["dataset"] == dataset) & (ref["setting"] != "")]
    shown = False
    for i, setting in enumerate(part["setting"]):
        for r in mine[mine["setting"] == setting].itertuples(index=False):
            for offset, value in ((-0.2, r.ref_uar), (0.2, r.ref_war)):
                if not math.isnan(value):
                    label = None if shown else "published (see references)"
                    ax.plot(i + offset, value, marker="D", color="crimson", ms=6, ls="none", label=label)
                    shown = True


def summed_confusion(exp: ExperimentRuns, dataset: str, setting: str) -> tuple[list[str], np.ndarray] | None:
    """The confusion counts of all finished runs of a row, summed (classes must agree)."""
    runs = exp.finished
    runs = runs[(runs["dataset"] == dataset) & (runs["setting"] == setting)]
    classes, total = None, None
    for run_id in runs["run_id"]:
        conf = exp.loader.confusion(run_id)
        if conf is None:
            continue
        matrix = np.asarray(conf["matrix"], dtype=float)
        if classes is None:
            classes, total = list(conf["classes"]), matrix
        elif list(conf["classes"]) == classes:
            total = total + matrix
    return (classes, total) if classes is not None else None


def confusion_figure(exp: ExperimentRuns, dataset: str, settings: list[str]) -> dict[str, bytes] | None:
    mats = [(s, summed_confusion(exp, dataset, s)) for s in settings]
    mats = [(s, m) for s, m in mats if m is not None]
    if not mats:
        return None
    cols = min(4, len(mats))
    rows = math.ceil(len(mats) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(mats) :]:
        ax.axis("off")
    for ax, (setting, (classes, m)) in zip(axes.flat, mats, strict=False):
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i, j in np.ndindex(norm.shape):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if norm[i, j] > 0.5 else "black",
            )
        ax.set_xticks(range(len(classes)), classes, rotation=60, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_title(f"{setting} ({int(m.sum())} predictions)", fontsize=9)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle(f"{dataset}: row-normalised confusion, summed over finished runs", fontsize=10)
    fig.tight_layout()
    return _save(fig)


def curves_figure(
    exp: ExperimentRuns, dataset: str, settings: list[str], chance: float | None = None
) -> dict[str, bytes] | None:
    """Per-epoch mean over a setting's finished runs of train/test loss and WAR; the WAR panel on the
    bar chart's fixed 0-100 % axis with its chance line, so panels of two reports compare by eye."""
    runs = exp.finished
    runs = runs[runs["dataset"] == dataset]
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.2))
    drawn = False
    histories = {metric: _histories(exp, list(runs["run_id"]), metric) for metric in CURVES}  # one read each
    for setting in settings:
        ids = runs.loc[runs["setting"] == setting, "run_id"]
        for ax, metric in zip(axes, CURVES, strict=True):
            points = [pd.Series(dict(histories[metric].get(r, [])), dtype=float) for r in ids]
            points = [p for p in points if not p.empty]
            if not points:
                continue
            mean = pd.concat(points, axis=1).mean(axis=1).sort_index()
            ax.plot(mean.index, mean.to_numpy(), marker=".", label=setting)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, metric in zip(axes, CURVES, strict=True):
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if metric == TEST_WAR:
            ax.set_ylim(0, 100)
            ax.set_ylabel("WAR %")
            if chance is not None:  # named on the line: the legend sits in the first panel
                ax.axhline(chance, color="0.35", ls="--", lw=1)
                ax.text(
                    0.01,
                    chance + 1,
                    f"chance ({chance:.1f} %)",
                    transform=ax.get_yaxis_transform(),
                    fontsize=7,
                )
    next((ax for ax in axes if ax.lines), axes[0]).legend(fontsize=7)  # the first panel with a curve
    fig.suptitle(f"{dataset}: learning curves (mean over folds x seeds)", fontsize=10)
    fig.tight_layout()
    return _save(fig)


def _histories(exp: ExperimentRuns, run_ids: list[str], metric: str) -> dict[str, list[tuple[int, float]]]:
    """run id -> (epoch, value) of a metric: in one read where the loader can (a sweep's SQLite store)."""
    many = getattr(exp.loader, "histories", None)
    if many is not None:
        return many(run_ids, metric)
    return {r: exp.loader.history(r, metric) for r in run_ids}


def matrix_figure(
    matrix: pd.DataFrame,
    diff: pd.DataFrame,
    dataset: str,
    metric: str = "war",
    floors: set[frozenset[str]] | None = None,
) -> dict[str, bytes]:
    """Each pair's difference (row minus column, points) over its BH-corrected speaker-level p. Colour
    is p (darker = smaller; white from 0.1 up); the diagonal and untestable pairs are grey, so neither
    reads as p >= 0.1."""
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(0.9 * n + 2.6, 0.65 * n + 1.6))
    values = matrix.to_numpy(dtype=float)
    cmap = plt.get_cmap("Blues_r").with_extremes(bad="0.8")
    im = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=0.1, cmap=cmap)
    for i, j in np.ndindex(values.shape):
        if i == j:
            ax.text(j, i, "—", ha="center", va="center", fontsize=9, color="0.3")
            continue
        d, p = diff.iat[i, j], values[i, j]
        floor = frozenset((matrix.index[i], matrix.columns[j])) in (floors or set())
        shown = (
            "n/a" if math.isnan(p) else (f"p {format_speaker_p(p, True)}" if floor else f"p={format_p(p)}")
        )
        text = f"{d:+.1f}\n" + shown
        dark = not math.isnan(p) and p < 0.04
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(n), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), matrix.index)
    fig.colorbar(im, ax=ax, label="p (speaker-level bootstrap, BH), capped at 0.1")
    ax.set_title(f"{dataset}: {metric.upper()} row - column (points) and BH-corrected p", fontsize=9)
    fig.tight_layout()
    return _save(fig)


def _img(name: str, svg: bytes) -> str:
    data = base64.b64encode(svg).decode()
    return f'<img alt="{html.escape(name)}" src="data:image/svg+xml;base64,{data}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.2f}", border=0, classes="t")


CSS = """
body{font-family:sans-serif;margin:24px;max-width:1350px;color:#222}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:15px} img{max-width:100%;display:block;margin:8px 0}
table.t{border-collapse:collapse;font-size:12px;margin:8px 0}
table.t td,table.t th{border:1px solid #ddd;padding:3px 6px;text-align:right}
table.t th{background:#f3f3f3;max-width:9em} pre{font-size:12px;background:#f7f7f7;padding:8px}
p.protocol{font-weight:bold;margin-bottom:2px} p.foot{font-size:12px;margin:2px 0}
.note{color:#a33}
"""


def leaderboard_section(exp: ExperimentRuns) -> tuple[pd.DataFrame, str]:
    """The table ``mmder leaderboard --per-class`` prints, as HTML tables with the same cells."""
    table = experiment_leaderboard(exp, per_class=True)
    return table, html_tables(table, exp.datasets)


def build_report(exp: ExperimentRuns) -> Report:
    """The HTML text and the figures; nothing is written (see ``write_report``)."""
    table, board = leaderboard_section(exp)
    ref = reference_rows(table, exp.datasets) if not table.empty else pd.DataFrame()
    figures: dict[str, bytes] = {}
    parts = [
        f"<h1>mmder report: {html.escape(exp.name)}</h1>",
        f"<p>{int(exp.runs['finished'].sum())} of {len(exp.runs)} cells finished. "
        f"{html.escape(intervals_note())}. References version {html.escape(refs.REFERENCES_VERSION)}; "
        f"the paper: {html.escape(refs.MULTIMAE_DER)}.</p>",
    ]
    if table.empty:
        parts.append("<p>No finished cells yet.</p>")
    else:
        parts.append('<h2>Leaderboard</h2><div id="leaderboard">' + board + "</div>")
    all_pairs = {r.dataset: r for r in compare_all(exp)} if not table.empty else {}
    for dataset in table["dataset"].unique() if not table.empty else []:
        parts += _dataset_section(exp, table, ref, str(dataset), all_pairs.get(dataset), figures)
    if not table.empty:
        cost = table[
            ["dataset", "setting", "runs", "wall_s_per_cell", "train_clips_per_s", "device_hours", "mfu"]
        ]
        parts.append("<h2>Cost</h2>" + _table(cost))
    parts.append("<h2>Provenance</h2>" + _table(provenance(exp)))
    body = "\n".join(parts)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>mmder report: {html.escape(exp.name)}</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>"
    )
    return Report(page, figures)


def _figure(figures: dict[str, bytes], name: str, saved: dict[str, bytes]) -> str:
    """Keep both files of a figure under its name; the page embeds the SVG."""
    for fmt, data in saved.items():
        figures[f"{name}.{fmt}"] = data
    return _img(f"{name}.svg", saved["svg"])


def _dataset_section(
    exp: ExperimentRuns,
    table: pd.DataFrame,
    ref: pd.DataFrame,
    dataset: str,
    pairs: Any,
    figures: dict[str, bytes],
) -> list[str]:
    settings = list(table.loc[table["dataset"] == dataset, "setting"])
    chance = chance_level(table, dataset, exp)
    parts = [f"<h2>{html.escape(dataset)}</h2>"]
    parts.append(_figure(figures, f"{dataset}_bars", bar_chart(table, dataset, ref, chance)))
    if not ref.empty:
        parts.append("<h3>Published results</h3>")
        shown = ref[ref["dataset"] == dataset].drop(columns="dataset")
        parts.append(_table(shown.assign(folds=shown["folds"].map(folds_text))))
    conf = confusion_figure(exp, dataset, settings)
    if conf is not None:
        parts.append("<h3>Confusion matrices</h3>" + _figure(figures, f"{dataset}_confusion", conf))
    curves = curves_figure(exp, dataset, settings, chance)
    if curves is not None:
        parts.append("<h3>Learning curves</h3>" + _figure(figures, f"{dataset}_curves", curves))
    if pairs is not None and not pairs.table.empty:
        # a pair no resample crossed reads '< 0.0013' in the figure as in the table below
        floors = {frozenset((c.a, c.b)) for c in pairs.comparisons if c.speaker.smallest_p}
        parts.append(
            "<h3>All pairs: paired bootstrap over test speakers, Benjamini-Hochberg</h3>"
            + _figure(
                figures, f"{dataset}_compare", matrix_figure(pairs.matrix, pairs.diff, dataset, floors=floors)
            )
            + "<p>The table adds the fold-level paired t and Wilcoxon and, last, McNemar per clip, which "
            "assumes independent clips.</p>"
        )
        # the columns `compare --all` prints (a floor p reads '< 0.001' there too), each note said once
        parts.append(_table(all_pairs_table(pairs)))
        parts += [f'<p class="foot">note: {html.escape(n)}</p>' for n in all_notes(pairs)]
    for msg in pairs.refused if pairs is not None else []:
        parts.append(f'<p class="note">refused: {html.escape(msg)}</p>')
    return parts


def provenance(exp: ExperimentRuns) -> pd.DataFrame:
    """Every cell the report covers: its key, run id and mmder.* tags (blank while unfinished)."""
    rows = []
    for r in exp.runs.itertuples(index=False):
        tags = r.tags if isinstance(r.tags, dict) else {}
        rows.append(
            {
                "dataset": r.dataset,
                "setting": r.setting,
                "fold": r.fold_name,
                "seed": r.seed,
                "key": r.key,
                "run_id": r.run_id if isinstance(r.run_id, str) else "(not finished)",
                "tags": "; ".join(f"{k}={v}" for k, v in sorted(tags.items())),
            }
        )
    return pd.DataFrame(rows)


def write_report(exp: ExperimentRuns, path: Path, log_to_mlflow: bool = True) -> tuple[Path, str | None]:
    """Write the HTML and its figures (SVG and PNG, in ``figures/`` beside it); log them to the sweep's
    parent run. Returns (path, parent run id)."""
    report = build_report(exp)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.html)
    folder = path.parent / "figures"
    folder.mkdir(exist_ok=True)
    for name, data in report.figures.items():
        (folder / name).write_bytes(data)
    parent = sweep_run_id(exp) if log_to_mlflow else None
    if parent is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=exp.tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in report.figures.items():
                Path(tmp, name).write_bytes(data)
            Path(tmp, "report.html").write_text(report.html)
            client.log_artifacts(parent, tmp, artifact_path="report")
    return path, parent


def sweep_run_id(exp: ExperimentRuns) -> str | None:
    """The parent run (``TAG_KIND`` ``KIND_SWEEP``) of the experiment, if the store has one."""
    if exp.tracking_uri is None or exp.experiment_id is None:
        return None
    from mlflow.tracking import MlflowClient

    from harness.tracking.runs import search_all

    client = MlflowClient(tracking_uri=exp.tracking_uri)
    found = search_all(
        client, [exp.experiment_id], tag_filter(TAG_KIND, KIND_SWEEP), order_by=["attributes.start_time ASC"]
    )
    return found[0].info.run_id if found else None
