"""``mmder report``: one self-contained HTML file a reviewer can open offline, plus its figures in MLflow.

Per dataset: a bar chart of each setting with its 95 % t interval and published values as markers,
row-normalised confusion matrices summed over the finished runs, per-epoch learning curves, the
all-pairs comparison matrix, the cost table, and the provenance (run ids, keys, ``mmder.*`` tags)
of every run the figures rest on. Images are embedded as base64 PNG so the file travels alone.
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

from harness.tracking.tags import KIND_SWEEP, TAG_KIND, tag_filter

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.results.compare import compare_all, format_p  # noqa: E402
from harness.results.leaderboard import ExperimentRuns, folds_text, leaderboard, reference_rows, render  # noqa: E402
from mmder.eval import references as refs  # noqa: E402

CURVES = ("train_loss", "test_loss", "war")


@dataclass
class Report:
    html: str
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def bar_chart(table: pd.DataFrame, dataset: str, ref: pd.DataFrame) -> bytes:
    """UAR and WAR per setting with t-interval whiskers; published same-setting values as markers."""
    part = table[table["dataset"] == dataset]
    x = np.arange(len(part))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(part) + 2), 3.8))
    for offset, metric, color in ((-0.2, "uar", "#4c72b0"), (0.2, "war", "#dd8452")):
        mean = part[f"{metric}_mean"].to_numpy(dtype=float)
        lo = np.nan_to_num(mean - part[f"{metric}_lo"].to_numpy(dtype=float))
        hi = np.nan_to_num(part[f"{metric}_hi"].to_numpy(dtype=float) - mean)
        ax.bar(x + offset, mean, width=0.4, color=color, label=f"{metric.upper()} (95 % t)")
        ax.errorbar(x + offset, mean, yerr=[lo, hi], fmt="none", ecolor="black", capsize=3, lw=1)
    if not ref.empty:
        mine = ref[(ref["dataset"] == dataset) & (ref["setting"] != "")]
        shown = False
        for i, setting in enumerate(part["setting"]):
            for r in mine[mine["setting"] == setting].itertuples(index=False):
                for offset, value in ((-0.2, r.ref_uar), (0.2, r.ref_war)):
                    if not math.isnan(value):
                        ax.plot(
                            i + offset,
                            value,
                            marker="D",
                            color="crimson",
                            ms=6,
                            ls="none",
                            label=None if shown else "published (see references)",
                        )
                        shown = True
    for i, r in enumerate(part.itertuples(index=False)):
        if r.missing:
            ax.annotate(f"{r.missing} missing", (i, 2), ha="center", fontsize=8, color="crimson")
    ax.set_xticks(x, part["setting"])
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title(f"{dataset}: mean over folds x seeds")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


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


def confusion_figure(exp: ExperimentRuns, dataset: str, settings: list[str]) -> bytes | None:
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
    return _png(fig)


def curves_figure(exp: ExperimentRuns, dataset: str, settings: list[str]) -> bytes | None:
    """Per-epoch mean over a setting's finished runs of train/test loss and WAR."""
    runs = exp.finished
    runs = runs[runs["dataset"] == dataset]
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.2))
    drawn = False
    for setting in settings:
        ids = runs.loc[runs["setting"] == setting, "run_id"]
        for ax, metric in zip(axes, CURVES, strict=True):
            points = [pd.Series(dict(exp.loader.history(r, metric)), dtype=float) for r in ids]
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
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: learning curves (mean over folds x seeds)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def matrix_figure(matrix: pd.DataFrame, dataset: str) -> bytes:
    fig, ax = plt.subplots(figsize=(1.0 * len(matrix) + 2.5, 0.8 * len(matrix) + 1.8))
    values = matrix.to_numpy(dtype=float)
    im = ax.imshow(np.where(np.isnan(values), 1.0, values), vmin=0, vmax=0.1, cmap="viridis_r")
    for i, j in np.ndindex(values.shape):
        if not np.isnan(values[i, j]):
            v = values[i, j]
            color = "black" if v < 0.05 else "white"
            ax.text(
                j,
                i,
                f"{v:.2g}" if v < 0.001 else f"{v:.3f}",
                ha="center",
                va="center",
                fontsize=8,
                color=color,
            )
    ax.set_xticks(range(len(matrix)), matrix.columns, rotation=45)
    ax.set_yticks(range(len(matrix)), matrix.index)
    fig.colorbar(im, ax=ax, label="p (BH), capped at 0.1")
    ax.set_title(f"{dataset}: McNemar exact p, Benjamini-Hochberg", fontsize=9)
    return _png(fig)


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.2f}", border=0, classes="t")


CSS = """
body{font-family:sans-serif;margin:24px;max-width:1350px;color:#222}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:15px} img{max-width:100%;display:block;margin:8px 0}
table.t{border-collapse:collapse;font-size:12px;margin:8px 0}
table.t td,table.t th{border:1px solid #ddd;padding:3px 6px;text-align:right}
table.t th{background:#f3f3f3} pre{font-size:12px;background:#f7f7f7;padding:8px;overflow-x:auto}
.note{color:#a33}
"""


def build_report(exp: ExperimentRuns, n_resamples: int = 1000) -> Report:
    """The HTML text and the figures; nothing is written (see ``write_report``)."""
    table = leaderboard(exp.runs, exp.loader, exp.settings, per_class=True)
    ref = reference_rows(table, exp.datasets) if not table.empty else pd.DataFrame()
    figures: dict[str, bytes] = {}
    parts = [
        f"<h1>mmder report: {html.escape(exp.name)}</h1>",
        f"<p>{int(exp.runs['finished'].sum())} of {len(exp.runs)} cells finished. "
        f"Intervals are 95 % Student t over folds x seeds (n shown); references version "
        f"{html.escape(refs.REFERENCES_VERSION)}.</p>",
    ]
    if table.empty:
        parts.append("<p>No finished cells yet.</p>")
    else:
        parts.append(
            "<h2>Leaderboard</h2><pre>" + html.escape(render(table, "table", exp.datasets)) + "</pre>"
        )
    all_pairs = {r.dataset: r for r in compare_all(exp, n_resamples=n_resamples)} if not table.empty else {}
    for dataset in table["dataset"].unique() if not table.empty else []:
        settings = list(table.loc[table["dataset"] == dataset, "setting"])
        parts.append(f"<h2>{html.escape(str(dataset))}</h2>")
        name = f"{dataset}_bars.png"
        figures[name] = bar_chart(table, dataset, ref)
        parts.append(_img(name, figures[name]))
        if not ref.empty:
            parts.append("<h3>Published results</h3>")
            shown = ref[ref["dataset"] == dataset].drop(columns="dataset")
            parts.append(_table(shown.assign(folds=shown["folds"].map(folds_text))))
        conf = confusion_figure(exp, dataset, settings)
        if conf is not None:
            name = f"{dataset}_confusion.png"
            figures[name] = conf
            parts.append("<h3>Confusion matrices</h3>" + _img(name, conf))
        curves = curves_figure(exp, dataset, settings)
        if curves is not None:
            name = f"{dataset}_curves.png"
            figures[name] = curves
            parts.append("<h3>Learning curves</h3>" + _img(name, curves))
        pairs = all_pairs.get(dataset)
        if pairs is not None and not pairs.table.empty:
            name = f"{dataset}_compare.png"
            figures[name] = matrix_figure(pairs.matrix, dataset)
            parts.append("<h3>All pairs (McNemar exact, BH-corrected)</h3>" + _img(name, figures[name]))
            p_cols = [c for c in pairs.table.columns if c.endswith("_p") or c.endswith("_bh")]
            parts.append(_table(pairs.table.assign(**{c: pairs.table[c].map(format_p) for c in p_cols})))
        for msg in pairs.refused if pairs is not None else []:
            parts.append(f'<p class="note">refused: {html.escape(msg)}</p>')
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


def provenance(exp: ExperimentRuns) -> pd.DataFrame:
    """Every cell the report covers: its key, run id and mmder.* tags (blank while unfinished)."""
    rows = []
    for r in exp.runs.itertuples(index=False):
        tags = r.tags if isinstance(r.tags, dict) else {}
        rows.append(
            {
                "dataset": r.dataset,
                "setting": r.setting,
                "fold": r.fold,
                "seed": r.seed,
                "key": r.key,
                "run_id": r.run_id if isinstance(r.run_id, str) else "(not finished)",
                "tags": "; ".join(f"{k}={v}" for k, v in sorted(tags.items())),
            }
        )
    return pd.DataFrame(rows)


def write_report(exp: ExperimentRuns, path: Path, log_to_mlflow: bool = True) -> tuple[Path, str | None]:
    """Write the HTML; log it and its figures to the sweep's parent run. Returns (path, parent run id)."""
    report = build_report(exp)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.html)
    parent = sweep_run_id(exp) if log_to_mlflow else None
    if parent is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=exp.tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            for name, png in report.figures.items():
                Path(tmp, name).write_bytes(png)
            Path(tmp, "report.html").write_text(report.html)
            client.log_artifacts(parent, tmp, artifact_path="report")
    return path, parent


def sweep_run_id(exp: ExperimentRuns) -> str | None:
    """The parent run (``TAG_KIND`` ``KIND_SWEEP``) of the experiment, if the store has one."""
    if exp.tracking_uri is None or exp.experiment_id is None:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=exp.tracking_uri)
    found: list[Any] = client.search_runs(
        [exp.experiment_id],
        filter_string=tag_filter(TAG_KIND, KIND_SWEEP),
        order_by=["attributes.start_time ASC"],
    )
    return found[0].info.run_id if found else None
