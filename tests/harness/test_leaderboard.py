"""The leaderboard on hand-made run frames and predictions: no MLflow needed."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from results_helpers import CLASSES, make_experiment

from harness.results.compare import NotComparable, compare, compare_all
from harness.results.compare_text import format_all, format_comparison
from harness.results.leaderboard import (
    COLUMNS,
    leaderboard,
    missing_cells,
    reference_rows,
    render,
    with_interval,
)
from mmder.eval import stats


def test_interval_over_folds_and_pooled_figures():
    exp = make_experiment({("audio", f, 0): 0.5 for f in range(3)} | {("FSLF", f, 0): 0.8 for f in range(3)})
    table = leaderboard(exp.runs, exp.loader, exp.settings)
    assert list(table.columns) == COLUMNS
    assert list(table["setting"]) == ["audio", "FSLF"]
    row = table.iloc[1]
    wars = exp.runs.loc[exp.runs["setting"] == "FSLF", "war"].to_numpy(dtype=float)
    half = 4.302652729911275 * wars.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert (row.n, row.folds, row.seeds, row.runs, row.missing) == (3, 3, 1, 3, 0)
    assert row.war_mean == pytest.approx(wars.mean())
    # a percentage's interval is cut at 0 and 100 (three folds can reach past them)
    expected = (max(0.0, wars.mean() - half), min(100.0, wars.mean() + half))
    assert (row.war_lo, row.war_hi) == pytest.approx(expected)
    assert row.war_pooled == pytest.approx(wars.mean())  # equal-size folds: pooled WAR = mean WAR
    assert row.device_hours == pytest.approx(3 * 1.0 * 2)  # 3 cells x 1 h x 2 devices
    assert row.wall_s_per_cell == 3600.0 and math.isnan(row.mfu)
    text = render(table, "table", exp.datasets)
    assert f"{row.war_mean:.1f} [{row.war_lo:.1f}, {row.war_hi:.1f}]" in text
    assert "3/3" in text and "missing" not in text


def test_a_missing_fold_is_shown_not_hidden():
    exp = make_experiment({("audio", 0, 0): 0.5, ("audio", 1, 0): 0.6, ("audio", 2, 0): None})
    table = leaderboard(exp.runs, exp.loader, exp.settings)
    row = table.iloc[0]
    assert (row.folds, row.runs, row.missing, row.n) == (2, 2, 1, 2)
    text = render(table, "table", exp.datasets)
    assert "2/3 !1 missing" in text and "not finished" in text
    assert "| 2/3 !1 missing |" in render(table, "markdown", exp.datasets)
    assert json.loads(render(table, "json"))["rows"][0]["missing"] == 1
    assert list(missing_cells(exp.runs)["fold"]) == [2]


def test_one_run_has_no_interval_and_says_so():
    exp = make_experiment({("audio", 0, 0): 0.5}, folds=1)
    table = leaderboard(exp.runs, exp.loader, exp.settings)
    assert table.iloc[0].n == 1 and math.isnan(table.iloc[0].war_lo)
    assert "(n=1, no interval)" in render(table, "table", exp.datasets)
    assert with_interval(45.12, 40.2, 50.0, 3) == "45.1 [40.2, 50.0]"


def test_formats_and_per_class():
    exp = make_experiment({("audio", f, 0): 0.5 for f in range(3)})
    table = leaderboard(exp.runs, exp.loader, exp.settings, per_class=True)
    assert {f"recall_{c}" for c in CLASSES} <= set(table.columns)
    header = next(ln for ln in render(table, "csv").splitlines() if not ln.startswith("#"))
    assert header.startswith("dataset,setting,folds,seeds,runs,missing,n,speakers,interval_unit,uar_mean")
    latex = render(table, "latex")
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    md = render(table, "markdown", exp.datasets)
    assert md.splitlines()[1].startswith("|---|")
    with pytest.raises(ValueError, match="allowed"):
        render(table, "html")
    assert render(leaderboard(exp.runs.iloc[0:0]), "table") == "(no finished cells yet)"


PROTOCOL = "ds  (ravdess, 8 classes, 3 folds, fine-tuned)"


def test_every_format_carries_the_protocol_and_csv_json_keep_full_precision():
    exp = make_experiment(
        {("audio", f, 0): 0.53 for f in range(3)} | {("FSLF", f, 0): 0.81 for f in range(3)}
    )
    table = leaderboard(exp.runs, exp.loader, exp.settings)
    note = "95 % percentile bootstrap resampling test speakers (2000 resamples, seed 0)"
    assert render(table, "table", exp.datasets).splitlines()[0] == PROTOCOL
    csv = render(table, "csv", exp.datasets)
    assert csv.splitlines()[0] == f"# {PROTOCOL}" and note in csv.splitlines()[1]
    back = pd.read_csv(io.StringIO(csv), comment="#")
    for col in ("war_mean", "war_lo", "war_spk_hi", "uar_pooled"):  # not rounded to 2 decimals
        np.testing.assert_array_equal(back[col].to_numpy(), table[col].to_numpy(dtype=float))
    payload = json.loads(render(table, "json", exp.datasets))
    assert payload["protocol"]["ds"]["note"] == PROTOCOL and payload["protocol"]["ds"]["classes"] == 8
    assert note in payload["note"] and payload["resamples"] == 2000 and payload["seed"] == 0
    assert [r["war_mean"] for r in payload["rows"]] == table["war_mean"].tolist()
    md = render(table, "markdown", exp.datasets)
    assert md.splitlines()[-1].startswith(f"Table: {PROTOCOL}") and note in md.splitlines()[-1]
    latex = render(table, "latex", exp.datasets)
    assert "\\caption{ds  (ravdess, 8 classes, 3 folds, fine-tuned); UAR/WAR in \\%" in latex
    assert "\\label{tab:mmder-leaderboard}" in latex
    # text columns left, every number column right-aligned
    assert "\\begin{tabular}{l" + "r" * (len(_display_columns(latex)) - 1) + "}" in latex


def _display_columns(latex: str) -> list[str]:
    head = latex.split("\\midrule")[0].split("\\toprule")[1]
    return [c.strip() for c in head.strip().rstrip("\\").split("&")]


def test_the_headline_interval_resamples_test_speakers_and_two_folds_print_no_t_interval():
    exp = make_experiment({("FSLF", f, 0): 0.7 for f in range(2)}, folds=2)
    table = leaderboard(exp.runs, exp.loader, exp.settings)
    row = table.iloc[0]
    pooled = pd.concat([exp.loader.preds[r] for r in exp.runs["run_id"]])
    ci = stats.speaker_bootstrap(pooled["true"], pooled["predicted"], pooled["speaker"], "war")
    assert (row.speakers, row.interval_unit) == (8, "speaker")
    assert (row.war_pooled, row.war_spk_lo, row.war_spk_hi) == pytest.approx((ci.estimate, ci.lo, ci.hi))
    assert math.isnan(row.war_lo)  # 2 folds: no t interval, rather than one cut to [0, 100]
    text = render(table, "table", exp.datasets)
    assert f"{ci.estimate:.1f} [{ci.lo:.1f}, {ci.hi:.1f}]" in text
    assert f"{row.war_mean:.1f} (n=2, no interval)" in text and "no t interval below n=3" in text
    assert "[0.0, 100.0]" not in text


def test_predictions_without_speakers_fall_back_to_folds_and_say_so():
    exp = make_experiment({("audio", f, 0): 0.5 for f in range(3)} | {("FSLF", f, 0): 0.8 for f in range(3)})
    for pred in exp.loader.preds.values():
        del pred["speaker"]
    table = leaderboard(exp.runs, exp.loader, exp.settings)
    assert set(table["interval_unit"]) == {"fold"} and table["war_spk_lo"].isna().all()
    text = render(table, "table", exp.datasets)
    assert (
        "(by fold, no interval)" in text and "the fold, with all its speakers, is the resampled unit" in text
    )
    c = compare(exp, "ds", "FSLF", "audio", n_resamples=200)
    assert c.speaker.unit == "fold" and c.speaker.clusters == 3 and not c.speaker.has_interval
    out = format_comparison(c)
    assert "fold level: paired bootstrap over 3 test folds: no interval" in out
    assert "3 fold(s): too few to resample" in out and "name no test speaker" in out


def test_references_show_deltas_and_protocol_differences():
    exp = make_experiment({("audio", f, 0): 0.5 for f in range(3)} | {("FSLF", f, 0): 0.8 for f in range(3)})
    table = leaderboard(exp.runs, exp.loader, exp.settings)
    ref = reference_rows(table, exp.datasets)
    fslf = ref[ref["reference"] == "MultiMAE-DER FSLF"].iloc[0]
    ours = table.set_index("setting").loc["FSLF"]
    assert fslf.d_war == pytest.approx(ours.war_mean - 83.61)
    assert fslf.protocol_differs == "classes 8 vs 7; folds 3 vs 1 hold-out split; fine-tuned vs frozen"
    hic = ref[ref["reference"] == "HiCMAE-B"].iloc[0]
    assert math.isnan(hic.d_war) and hic.protocol_differs == "folds 3 vs 6 folds"
    text = render(table, "table", exp.datasets, references=True)
    assert "MultiMAE-DER FSLF" in text and "HiCMAE-B" in text and "references 2025.1" in text
    payload = json.loads(render(table, "json", exp.datasets, references=True))
    assert payload["references_version"] and payload["references"]
    # with preprocess.speaker_norm the table's head and every reference row say so
    normed = {k: dataclasses.replace(v, speaker_norm="window_band") for k, v in exp.datasets.items()}
    text = render(table, "table", normed, references=True)
    assert "fine-tuned, speaker-normalised (window_band, transductive))" in text
    assert (
        reference_rows(table, normed)["protocol_differs"].str.endswith(
            "speaker-normalised (transductive) vs not"
        )
    ).all()


def test_a_cross_corpus_row_says_what_it_was_tested_on_and_gets_no_in_corpus_references():
    exp = make_experiment({("audio", 0, 0): 0.5, ("FSLF", 0, 0): 0.8}, folds=1)
    table = leaderboard(exp.runs, exp.loader, exp.settings)
    crossed = {k: dataclasses.replace(v, tested_on="cremad") for k, v in exp.datasets.items()}
    assert reference_rows(table, crossed).empty
    assert "1 fold, fine-tuned, tested on cremad)" in render(table, "table", crossed, references=True)


def test_compare_pairs_runs_and_refuses_different_test_sets():
    exp = make_experiment(
        {("audio", f, s): 0.4 for f in range(3) for s in (0, 1)}
        | {("FSLF", f, s): 0.9 for f in range(3) for s in (0, 1)}
    )
    c = compare(exp, "ds", "FSLF", "audio", "war", n_resamples=500)
    assert len(c.pairs) == 6 and c.n_clips == 240
    assert c.speaker.lo < c.speaker.estimate < c.speaker.hi and c.speaker.lo > 0
    assert c.speaker.clusters == 12 and c.speaker.unit == "speaker"
    assert c.mcnemar.pvalue < 1e-6 and c.folds.n == 6
    text = format_comparison(c)
    assert "seed+speaker level: paired two-level bootstrap over seeds and 12 test speakers" in text
    assert "clip level, assumes independent clips: McNemar exact" in text and "Wilcoxon" in text
    both = compare_all(exp, n_resamples=500)
    assert both[0].matrix.loc["FSLF", "audio"] == pytest.approx(c.speaker.pvalue)  # one pair: BH = raw
    assert math.isnan(both[0].matrix.loc["FSLF", "FSLF"])
    assert "BH-corrected speaker-level p" in format_all(both)

    # a different clip in one fold of audio: refused, naming the fold and why
    run_id = exp.runs.loc[(exp.runs["setting"] == "audio") & (exp.runs["fold"] == 1), "run_id"].iloc[0]
    exp.loader.preds[run_id] = exp.loader.preds[run_id].assign(
        clip_id=lambda d: d["clip_id"].str.replace("c0", "x0")
    )
    with pytest.raises(NotComparable, match="fold 1 .*different clips"):
        compare(exp, "ds", "FSLF", "audio")
    assert "refused" in format_all(compare_all(exp, n_resamples=200))


def test_the_command_line_offers_exactly_the_leaderboard_formats():
    from harness.cli.results import LEADERBOARD_FORMATS
    from harness.results.leaderboard import FORMATS

    assert tuple(LEADERBOARD_FORMATS) == tuple(FORMATS)


def test_per_class_columns_show_numbers_for_labels_that_are_not_identifiers():
    # `frown-ee` (the quickstart's) and `colère` were renamed by itertuples: every class cell printed "-"
    exp = make_experiment({("audio", f, 0): 0.5 for f in range(3)})
    table = leaderboard(exp.runs, exp.loader, exp.settings, per_class=True)
    table = table.rename(columns={"recall_calm": "recall_frown-ee", "recall_sad": "recall_colère"})
    expected = {c: f"{table[f'recall_{c}'].iloc[0]:.1f}" for c in ("frown-ee", "colère")}
    md = render(table, "markdown", exp.datasets).splitlines()
    cells = dict(zip(md[0].split("|"), md[2].split("|"), strict=True))
    assert {label: cells[f" {label} "].strip() for label in expected} == expected
    (row,) = [line for line in render(table, "table", exp.datasets).splitlines() if " audio " in line]
    assert all(value in row for value in expected.values()), row
    exact = {c: table[f"recall_{c}"].iloc[0] for c in ("frown-ee", "colère")}
    back = pd.read_csv(io.StringIO(render(table, "csv", exp.datasets)), comment="#")
    assert {c: back[f"recall_{c}"].iloc[0] for c in exact} == exact
    (first,) = json.loads(render(table, "json", exp.datasets))["rows"]
    assert {c: first[f"recall_{c}"] for c in exact} == pytest.approx(exact, rel=1e-14)
    latex = render(table, "latex", exp.datasets)
    assert "frown-ee" in latex and "colère" in latex and expected["colère"] in latex


def test_a_seedless_baseline_pairs_with_every_seed_of_a_deep_setting():
    # a classical baseline runs once per fold now; comparing it with a 2-seed setting still uses all 6
    # (fold, seed) pairs, the baseline's run standing beside each seed, as when it ran once per seed
    deep = {("audio", f, s): 0.4 for f in range(3) for s in (0, 1)}
    once = make_experiment(deep | {("audio-egemaps-svm", f, 0): 0.7 for f in range(3)})
    c = compare(once, "ds", "audio", "audio-egemaps-svm", "war", n_resamples=300)
    assert len(c.pairs) == 6 and c.folds.n == 6
    assert not any("left out" in note for note in c.notes), c.notes
    assert compare(once, "ds", "audio-egemaps-svm", "audio", "war", n_resamples=300).folds.n == 6


def test_a_sweep_whose_every_cell_failed_pools_no_predictions_instead_of_crashing():
    """The closing leaderboard of a sweep with no finished cell (a cluster that cannot hold it): the
    one-read predictions table of nothing has a float run_id column, which pandas refused to join."""
    from harness.results.leaderboard import pooled_predictions

    class OneRead:
        def predictions_of(self, run_ids: list[str]) -> pd.DataFrame:
            return pd.DataFrame({"run_id": pd.Series(dtype=float), "clip_id": pd.Series(dtype=float)})

    runs = pd.DataFrame(
        {c: pd.Series(dtype=object) for c in ("run_id", "key", "dataset", "setting", "fold", "seed")}
    )
    pooled = pooled_predictions(runs, OneRead())
    assert pooled.empty and {"clip_id", "true", "predicted", "setting"} <= set(pooled.columns)
