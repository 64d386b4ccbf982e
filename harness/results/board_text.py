"""The leaderboard as text: a terminal table, Markdown, CSV, JSON and LaTeX, each with the protocol of
every dataset and what its intervals are (the figures themselves are :mod:`harness.results.leaderboard`'s)."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace
from typing import Any

import pandas as pd

from harness.results.board_protocol import FOLD_FALLBACK, DatasetInfo, protocol_note, reference_rows
from harness.results.board_seeds import one_model_note, one_model_rows
from harness.results.seed_bootstrap import LABEL, interval_words
from mmder.eval import references as refs
from mmder.eval import stats

FORMATS = ("table", "csv", "markdown", "json", "latex")


def intervals_note(t_columns: bool = True, two_level: bool = False) -> str:
    """What the intervals are, in words every format carries (the t interval's only where it is shown,
    the two-level one's only where a row has it)."""
    spk = (
        "UAR/WAR in %; [95% spk]: pooled over test predictions, 95 % percentile bootstrap resampling test "
        f"speakers ({stats.RESAMPLES} resamples, seed {stats.SEED})"
    )
    if two_level:
        spk += "; " + interval_words()
    if not t_columns:
        return spk
    return spk + (
        f"; mean [95% t]: mean over folds x seeds, 95 % Student t interval (none below {stats.MIN_T_VALUES} "
        "values)"
    )


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


def has_two_level(table: pd.DataFrame) -> bool:
    """Whether some row's headline interval resamples seeds too."""
    return "interval" in table.columns and bool((table["interval"] == LABEL).any())


def headline_label(table: pd.DataFrame) -> str:
    """The headline columns' interval label: 'spk', 'seed+spk', or 'spk; *seed+spk' where rows differ
    (the two-level cells then carry a '*')."""
    kinds = set(table.loc[table["interval"].astype(str) != "", "interval"]) if "interval" in table else set()
    if kinds == {LABEL}:
        return LABEL
    return f"spk; *{LABEL}" if LABEL in kinds else "spk"


def _headline(r: Any, metric: str, mixed: bool) -> str:
    """A row's pooled value with its headline interval: the two-level one where the row has it."""
    pooled, spk = (
        getattr(r, f"{metric}_pooled"),
        (getattr(r, f"{metric}_spk_lo"), getattr(r, f"{metric}_spk_hi")),
    )
    if getattr(r, "interval", "") != LABEL:
        return _speaker_interval(pooled, *spk, r.speakers, r.interval_unit)
    lo, hi = getattr(r, f"{metric}_seed_lo"), getattr(r, f"{metric}_seed_hi")
    return _speaker_interval(pooled, lo, hi, r.speakers, r.interval_unit) + ("*" if mixed else "")


def _status(r: Any, expected_folds: int | None) -> str:
    folds = f"{r.folds}/{expected_folds}" if expected_folds else str(r.folds)
    return folds + (f" !{r.missing} missing" if r.missing else "")


def _display(table: pd.DataFrame, datasets: dict[str, DatasetInfo]) -> pd.DataFrame:
    """Text cells for table/markdown/LaTeX: intervals, fold status with a visible mark, costs."""
    out = []
    label = headline_label(table)
    mixed = label.startswith("spk;")
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
            f"UAR % [95% {label}]": _headline(r, "uar", mixed),
            f"WAR % [95% {label}]": _headline(r, "war", mixed),
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


def _footnotes(raw: pd.DataFrame, t_columns: bool = True) -> list[str]:
    """What a reader must know to read these rows: one model per fold, unfinished cells, missing or cut
    intervals (the t interval's only where it is shown)."""
    lines = [one_model_note(raw)] if one_model_rows(raw).shape[0] else []
    if (raw["missing"] > 0).any():
        lines.append("! = cells not finished yet: the figures rest only on the finished ones (see n)")
    if t_columns:
        lines += _t_footnotes(raw)
    if (raw["war_spk_lo"].isna() & raw["war_pooled"].notna()).any():
        lines.append(f"no speaker interval below {stats.MIN_CLUSTERS} test speakers")
    if (raw["interval_unit"] == "fold").any():
        lines.append(FOLD_FALLBACK)
    return lines


def _t_footnotes(raw: pd.DataFrame) -> list[str]:
    lines = []
    if (raw["war_lo"].isna() & (raw["n"] > 0)).any():
        lines.append(
            f"no t interval below n={stats.MIN_T_VALUES} (fold, seed) values: it would span most of 0-100"
        )
    if (
        (raw["war_lo"] == 0.0) | (raw["war_hi"] == 100.0) | (raw["uar_lo"] == 0.0) | (raw["uar_hi"] == 100.0)
    ).any():
        lines.append("a t interval reaching past 0 or 100 is cut there")
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
    costs: bool = False,
) -> str:
    """The leaderboard as text in one of FORMATS; with ``references``, published rows follow (or one
    line saying there are none). Every format carries the protocol of each dataset and what the
    intervals are; CSV and JSON keep full precision. LaTeX is a paper's table (setting, UAR and WAR with
    their intervals); ``costs`` adds the cost columns there."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    datasets = datasets or {}
    ref = reference_rows(table, datasets) if references and not table.empty else pd.DataFrame()
    unpublished = unpublished_line(table, datasets, ref) if references else ""
    if fmt == "json":
        return _json(table, datasets, ref if references else None, unpublished)
    two = has_two_level(table)
    notes = [protocol_note(d, datasets.get(d)) for d in table["dataset"].unique()] + [
        intervals_note(True, two)
    ]
    if fmt == "csv":
        conditional = one_model_note(table)
        text = "".join(f"# {n}\n" for n in [*notes, *([conditional] if conditional else [])])
        text += table.to_csv(index=False)
        if references and not ref.empty:
            text += f"\n# references {refs.REFERENCES_VERSION}\n" + ref.to_csv(index=False)
        return text + (f"# {unpublished}\n" if unpublished else "")
    if table.empty:
        return "(no finished cells yet)"
    shown = _display(table, datasets)
    if fmt == "latex":  # a paper's table: no t interval shown, none described
        caption = [*notes[:-1], intervals_note(False, two), *_footnotes(table, t_columns=False)]
        text = _latex_text(paper_columns(shown, costs), ref, caption)
        return text + (f"% {unpublished}\n" if unpublished else "")
    notes += _footnotes(table)
    if fmt == "markdown":
        text = _markdown(shown) + "\n\nTable: " + "; ".join(notes)
        if references and not ref.empty:
            text += f"\n\nPublished results (references {refs.REFERENCES_VERSION}):\n\n" + _markdown(
                _references_display(ref)
            )
        return text + (f"\n\n{unpublished}" if unpublished else "")
    text = _table_text(shown, table, ref if references else None, datasets)
    return text + (f"\n{unpublished}" if unpublished else "")


COST_COLUMNS = ["wall s/cell", "clips/s", "device-h", "MFU"]
PAPER_COLUMNS = ["setting", "UAR % [95% spk]", "WAR % [95% spk]"]  # the headline label varies by table


def paper_columns(shown: pd.DataFrame, costs: bool = False) -> pd.DataFrame:
    """What fits a paper's column: setting, UAR and WAR with their intervals (the dataset where there
    are several; the fold status where a row is unfinished, as its '!' mark is footnoted; per-class
    recall where asked for), and the cost columns only with ``costs``."""
    headline = [c for c in shown.columns if c.startswith(("UAR % [95%", "WAR % [95%"))]
    known = {"dataset", "folds", "seeds", "n", "speakers", "mean UAR [95% t]", "mean WAR [95% t]"}
    known |= {"setting", *headline, *COST_COLUMNS}
    cols = (["dataset"] if shown["dataset"].nunique() > 1 else []) + ["setting"]
    if shown["folds"].astype(str).str.contains("!").any():
        cols.append("folds")
    cols += headline + [c for c in shown.columns if c not in known]  # per-class recall
    return shown[cols + (COST_COLUMNS if costs else [])]


def unpublished_line(table: pd.DataFrame, datasets: dict[str, DatasetInfo], ref: pd.DataFrame) -> str:
    """One line naming the datasets no published row stands beside ("" when every one has some)."""
    have = set(ref["dataset"]) if not ref.empty else set()
    lacking = []
    for d in table["dataset"].unique() if not table.empty else []:
        info = datasets.get(d)
        if d in have:
            continue
        if info is not None and info.tested_on:
            lacking.append(f"{d} (cross-corpus: published rows are in-corpus)")
        else:
            lacking.append(f"{d} (corpus {info.corpus if info else '?'})")
    if not lacking:
        return ""
    return f"published results (references {refs.REFERENCES_VERSION}): none for {', '.join(lacking)}"


def _json(
    table: pd.DataFrame, datasets: dict[str, DatasetInfo], ref: pd.DataFrame | None, unpublished: str = ""
) -> str:
    """An object: the protocol of each dataset, what the intervals are, and the rows at full precision."""
    present = table["dataset"].unique() if not table.empty else list(datasets)
    payload: dict[str, Any] = {
        "protocol": {
            str(d): {**dataclasses.asdict(datasets[d]), "note": protocol_note(d, datasets[d])}
            for d in present
            if d in datasets
        },
        "note": intervals_note(True, has_two_level(table)),
        "resamples": stats.RESAMPLES,
        "seed": stats.SEED,
        "rows": _json_rows(table),
        # rows on one trained model per fold: their speaker interval is conditional on those models
        "one_model_per_fold": _json_rows(one_model_rows(table)[["dataset", "setting"]]),
    }
    if payload["one_model_per_fold"]:
        payload["one_model_note"] = one_model_note(table)
    if ref is not None:
        payload["references_version"] = refs.REFERENCES_VERSION
        payload["references"] = _json_rows(ref)
        if unpublished:
            payload["references_note"] = unpublished
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
    lines.append(intervals_note(True, has_two_level(table)))
    return "\n".join(lines).rstrip()


def html_tables(table: pd.DataFrame, datasets: dict[str, DatasetInfo]) -> str:
    """The terminal table's cells as HTML, one table per dataset under its protocol line and above its
    footnotes, per-class recalls included and cost columns left to the report's cost section: a page
    wraps each header instead of cutting a 200-character line at its right edge."""
    import html

    if table.empty:
        return "<p>(no finished cells yet)</p>"
    shown = _display(table, datasets).drop(columns=COST_COLUMNS)
    parts = []
    for dataset, part in shown.groupby("dataset", sort=False):
        parts.append(f'<p class="protocol">{html.escape(protocol_note(dataset, datasets.get(dataset)))}</p>')
        parts.append(part.drop(columns="dataset").to_html(index=False, border=0, classes="t board"))
        notes = _footnotes(table[table["dataset"] == dataset])
        parts += [f'<p class="foot">{html.escape(n)}</p>' for n in notes]
    parts.append(f'<p class="foot">{html.escape(intervals_note(True, has_two_level(table)))}</p>')
    return "\n".join(parts)


def _indent(text: str, n: int = 2) -> str:
    return "\n".join(" " * n + ln for ln in text.splitlines())
