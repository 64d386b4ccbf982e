"""How a comparison reads: the lines of ``mmder compare`` (speaker level first), and its CSV and JSON."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from harness.results.compare import (
    AllPairs,
    Comparison,
    format_p,
    format_speaker_p,
    notes,
    one_model_text,
    p_floor,
    pair_diffs_text,
    record,
)
from mmder.eval import stats

FORMATS = ("table", "csv", "json")
SHOWN_ALL = ["a", "b", "value_a", "value_b", "diff", "diff_lo", "diff_hi", "speaker_p_bh", "t_p_bh"]
SHOWN_ALL += ["wilcoxon_p", "mcnemar_p_bh", "pairs", "clusters"]


def method_note(n_resamples: int = stats.RESAMPLES, seed: int = stats.SEED) -> str:
    """What each line's numbers are, in one sentence every format carries."""
    return (
        "speaker level: 95 % percentile interval and two-sided p of a paired bootstrap resampling test "
        f"speakers with all their clips ({n_resamples} resamples, seed {seed}; where no resample crosses 0 "
        f"p is only bounded: p < {format_p(p_floor(n_resamples))}, speaker_p_floor true); fold level: "
        "paired t and Wilcoxon over (fold, seed) pairs; clip level: McNemar exact, which assumes "
        "independent clips"
    )


def _speaker_line(c: Comparison) -> str:
    sp = c.speaker
    what = f"{sp.unit} level: paired bootstrap over {sp.clusters} test {sp.unit}s"
    if c.interval == "seed+spk":
        what = (
            f"seed+{sp.unit} level: paired two-level bootstrap over seeds and {sp.clusters} test {sp.unit}s"
        )
    if not sp.has_interval:
        return f"  {what}: no interval (see note)"
    p = (
        f"p {format_speaker_p(sp.pvalue, True)} (no resample crossed 0 in {sp.resamples})"
        if sp.smallest_p
        else f"p = {format_p(sp.pvalue)}"
    )
    label = "95 %" if c.interval == "spk" else f"[95% {c.interval}]"
    return f"  {what}: {label} [{sp.lo:+.2f}, {sp.hi:+.2f}], {p}"


def format_comparison(c: Comparison) -> str:
    m, mc, ft, sp = c.metric.upper(), c.mcnemar, c.folds, c.speaker
    lines = [
        f"{c.dataset}: {c.a} (A) vs {c.b} (B), {m}; {len(c.pairs)} (fold, seed) pairs, "
        f"{sp.clusters} test {sp.unit}s, {c.n_clips} paired test predictions",
        f"  pooled {m}: A {c.value_a:.2f}  B {c.value_b:.2f}  A-B {sp.estimate:+.2f} points",
        _speaker_line(c),
        f"  fold level (n={ft.n} (fold, seed) pairs): mean A-B {ft.mean_diff:+.2f}, "
        f"paired t p = {format_p(ft.t_pvalue)}, Wilcoxon p = {format_p(ft.wilcoxon_pvalue)}",
        f"    A-B per (fold, seed): {pair_diffs_text(c.pair_diffs, c.fold_names)}",
        f"    trained models: A {_models(c.models[0], c)}, B {_models(c.models[1], c)}",
        f"  clip level, assumes independent clips: McNemar exact: {mc.b} clips only A right, "
        f"{mc.c} only B right, p = {format_p(mc.pvalue)}",
    ]
    lines += [f"  note: {n}" for n in notes(c)]
    return "\n".join(lines)


def _models(n: int, c: Comparison) -> str:
    """'2 (1 per fold)': the finished runs behind one side of the pairs."""
    folds = len({f for f, _, _ in c.pair_diffs}) or 1
    per = f"{n // folds} per fold" if n % folds == 0 else f"{n / folds:.1f} per fold"
    return f"{n} ({per})"


def all_pairs_table(r: AllPairs) -> pd.DataFrame:
    """The columns ``compare --all`` shows of every pair, p as text (a floor one as '< ...')."""
    return p_text(r.table)[SHOWN_ALL]


def all_notes(r: AllPairs) -> list[str]:
    """The notes of every pair, each said once; the pairs where clip and speaker level disagree named."""
    split = [c.label for c in r.comparisons if c.mcnemar.pvalue < 0.05 and not c.speaker.pvalue < 0.05]
    out = []
    if split:
        out.append(
            "clip-level McNemar is significant but the speaker-level bootstrap is not (clips of one speaker "
            f"are not independent; the difference is not established): {', '.join(split)}"
        )
    one_model: list[str] = []  # the settings on one trained model per fold, said once for every pair
    for c in r.comparisons:
        own = one_model_text(" and ".join(c.one_model)) if c.one_model else None
        one_model += [s for s in c.one_model if s not in one_model]
        out += [n for n in notes(c)[1 if c.label in split else 0 :] if n not in out and n != own]
    if one_model:
        out.append(one_model_text(", ".join(one_model), every_pair=True))
    return out


def format_all(results: list[AllPairs]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"{r.dataset}: all pairs, {r.metric.upper()}, Benjamini-Hochberg over {len(r.comparisons)} "
            "comparisons"
        )
        if not r.table.empty:
            shown = all_pairs_table(r)
            text = shown.to_string(index=False, float_format="%.2f")
            lines.append("\n".join("  " + ln for ln in text.splitlines()))
            lines.append(f"  BH-corrected speaker-level p, {r.metric.upper()} (row vs column; diagonal: -):")
            lines.append("\n".join("    " + ln for ln in _matrix_text(r).splitlines()))
        lines += [f"  note: {n}" for n in all_notes(r)]
        lines += [f"  refused: {msg}" for msg in r.refused]
        lines.append("")
    return "\n".join(lines).rstrip() or "(no finished cells yet)"


def _matrix_text(r: AllPairs) -> str:
    """The BH-corrected p matrix as text; a pair whose p is a floor reads '< 0.001' as in its row."""
    matrix = r.matrix.map(format_p)
    for c in r.comparisons:
        if c.speaker.smallest_p:
            matrix.loc[c.a, c.b] = matrix.loc[c.b, c.a] = format_speaker_p(r.matrix.loc[c.a, c.b], True)
    for s in matrix.index:
        matrix.loc[s, s] = "-"
    return matrix.to_string()


def p_text(table: pd.DataFrame) -> pd.DataFrame:
    """The p columns of ``record`` rows as text, the speaker-level ones marked '< ' where they are a floor."""
    shown = table.copy()
    no_floor = pd.Series(False, index=table.index)
    floor = table["speaker_p_floor"].astype(bool) if "speaker_p_floor" in table.columns else no_floor
    for col in [c for c in shown.columns if c.endswith("_p") or c.endswith("_bh")]:
        if col.startswith("speaker_p"):
            shown[col] = [format_speaker_p(p, f) for p, f in zip(table[col], floor, strict=True)]
        else:
            shown[col] = table[col].map(format_p)
    return shown


def _json_rows(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON objects at full precision, NaN as null (json.dumps would write NaN, not JSON)."""
    return json.loads(rows.to_json(orient="records", double_precision=15)) if not rows.empty else []


def render_comparisons(comps: list[Comparison], fmt: str = "table") -> str:
    """One pair per dataset in a FORMATS format; CSV and JSON at full precision with the method note."""
    if fmt == "table":
        return "\n".join(format_comparison(c) for c in comps)
    return _render_rows(pd.DataFrame([record(c) for c in comps]), fmt, {})


def render_all(results: list[AllPairs], fmt: str = "table") -> str:
    """Every pair of every dataset, BH-corrected, in a FORMATS format."""
    if fmt == "table":
        return format_all(results)
    tables = [r.table for r in results if not r.table.empty]
    refused = [msg for r in results for msg in r.refused]
    return _render_rows(
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(), fmt, {"refused": refused}
    )


def _render_rows(rows: pd.DataFrame, fmt: str, extra: dict[str, Any]) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    note = method_note()
    if fmt == "json":
        payload = {"note": note, "resamples": stats.RESAMPLES, "seed": stats.SEED, "rows": _json_rows(rows)}
        return json.dumps(payload | extra, indent=2, ensure_ascii=False)
    text = f"# {note}\n" + rows.to_csv(index=False)
    return text + "".join(f"# refused: {msg}\n" for msg in extra.get("refused", []))
