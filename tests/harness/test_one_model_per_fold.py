"""Where a (dataset, setting) rests on one trained model per fold, every format says its speaker
interval is conditional on those models; ``compare`` shows the per-(fold, seed) differences beside its
test and the trained models behind each side (issue 33, item 1)."""

from __future__ import annotations

import html
import io
import json

import pandas as pd
import pytest
from results_helpers import make_experiment

from harness.results import report
from harness.results.compare import compare, record
from harness.results.compare_text import format_comparison, render_comparisons
from harness.results.leaderboard import leaderboard, render

CONDITIONAL = "conditional on one trained model per fold"


def _one_seed(settings=("audio", "FSLF")):
    return make_experiment({(s, f, 0): 0.5 + 0.1 * i for i, s in enumerate(settings) for f in range(3)})


def _board(exp):
    return leaderboard(exp.runs, exp.loader, exp.settings)


@pytest.mark.parametrize("fmt", ["table", "markdown", "latex"])
def test_every_text_format_says_a_one_seed_interval_is_conditional(fmt):
    exp = _one_seed()
    text = render(_board(exp), fmt, exp.datasets)
    assert CONDITIONAL in text and "one trained model per fold (every row)" in text
    assert text.count(CONDITIONAL) == 1


def test_csv_and_json_say_it_as_a_note_and_a_list_of_rows():
    exp = _one_seed()
    table = _board(exp)
    csv = render(table, "csv", exp.datasets)
    assert any(ln.startswith("# one trained model per fold") and CONDITIONAL in ln for ln in csv.splitlines())
    assert len(pd.read_csv(io.StringIO(csv), comment="#")) == 2  # still a table pandas reads
    payload = json.loads(render(table, "json", exp.datasets))
    assert payload["one_model_per_fold"] == [
        {"dataset": "ds", "setting": "audio"},
        {"dataset": "ds", "setting": "FSLF"},
    ]
    assert CONDITIONAL in payload["one_model_note"]


def test_the_report_says_it_where_it_shows_the_leaderboard():
    page = report.build_report(_one_seed()).html
    assert CONDITIONAL in html.unescape(page)


def test_several_seeds_per_fold_need_no_such_note_and_a_mixed_table_names_its_one_seed_rows():
    three = make_experiment({(s, f, k): 0.6 for s in ("audio", "FSLF") for f in range(3) for k in range(3)})
    for fmt in ("table", "markdown", "csv", "latex"):
        assert CONDITIONAL not in render(_board(three), fmt, three.datasets)
    payload = json.loads(render(_board(three), "json", three.datasets))
    assert payload["one_model_per_fold"] == [] and "one_model_note" not in payload
    mixed = make_experiment(
        {("audio", f, k): 0.6 for f in range(3) for k in range(3)} | {("FSLF", f, 0): 0.7 for f in range(3)}
    )
    text = render(_board(mixed), "table", mixed.datasets)
    assert "one trained model per fold (FSLF):" in text


def test_a_classical_baseline_is_not_called_one_trained_model():
    exp = _one_seed(("audio-egemaps-svm", "FSLF"))
    text = render(_board(exp), "table", exp.datasets)
    assert "one trained model per fold (FSLF):" in text and "audio-egemaps-svm)" not in text


def test_compare_shows_each_fold_and_seed_difference_and_the_models_behind_each_side():
    exp = _one_seed()
    c = compare(exp, "ds", "FSLF", "audio")
    runs = exp.finished.set_index(["setting", "fold"])
    expected = [(f, 0, runs.loc[("FSLF", f), "war"] - runs.loc[("audio", f), "war"]) for f in range(3)]
    assert [(f, s) for f, s, _ in c.pair_diffs] == [(f, s) for f, s, _ in expected] and c.models == (3, 3)
    assert [d for _, _, d in c.pair_diffs] == pytest.approx([d for _, _, d in expected])
    lines = format_comparison(c).splitlines()
    fold_line = next(i for i, ln in enumerate(lines) if ln.startswith("  fold level"))
    diffs = ", ".join(f"fold{f + 1} s0 {d:+.2f}" for f, _, d in expected)  # folds as the protocol names them
    assert lines[fold_line + 1] == f"    A-B per (fold, seed): {diffs}"
    assert lines[fold_line + 2] == "    trained models: A 3 (1 per fold), B 3 (1 per fold)"
    assert any(
        "one trained model per fold behind FSLF and audio" in ln and "conditional" in ln for ln in lines
    )
    rec = json.loads(render_comparisons([c], "json"))["rows"][0]
    assert (rec["models_a"], rec["models_b"], rec["pair_diffs"]) == (3, 3, diffs)
    assert "one trained model per fold" in record(c)["notes"]


def test_compare_with_seeds_groups_the_differences_by_fold_and_drops_the_note():
    exp = make_experiment(
        {("audio", f, k): 0.5 for f in range(2) for k in range(2)}
        | {("FSLF", f, k): 0.8 for f in range(2) for k in range(2)},
        folds=2,
    )
    c = compare(exp, "ds", "FSLF", "audio")
    assert c.models == (4, 4) and len(c.pair_diffs) == 4
    text = format_comparison(c)
    assert "A-B per (fold, seed): fold1: s0 " in text and "; fold2: s0 " in text
    assert "trained models: A 4 (2 per fold), B 4 (2 per fold)" in text
    assert "one trained model per fold" not in text
