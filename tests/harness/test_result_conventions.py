"""One style across the result formats (issue 33, item 4): the p-value floor, the metric in every
header, a line when no published row exists, a paper-sized LaTeX table, and ``--set`` errors that
name the override and the key meant."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from results_helpers import make_experiment

from harness.experiment.errors import ConfigError
from harness.experiment.loading import load_experiment
from harness.results.board_protocol import DatasetInfo
from harness.results.compare import compare, compare_all, format_speaker_p, p_floor
from harness.results.compare_text import format_all, format_comparison, render_all, render_comparisons
from harness.results.leaderboard import leaderboard, render
from mmder.eval import stats

ROOT = Path(__file__).resolve().parents[2]


def clear_difference():
    """A 0.9 against a 0.4 on every test speaker: no bootstrap resample reaches a difference of 0."""
    return make_experiment(
        {("audio", f, s): 0.4 for f in range(3) for s in (0, 1)}
        | {("FSLF", f, s): 0.9 for f in range(3) for s in (0, 1)}
    )


def test_a_floor_p_reads_the_same_in_a_pair_in_all_pairs_and_in_json():
    exp = clear_difference()
    c = compare(exp, "ds", "FSLF", "audio", n_resamples=999)
    assert c.speaker.smallest_p and c.speaker.pvalue == pytest.approx(p_floor(999)) == pytest.approx(0.002)
    assert "p < 0.0020 (no resample crossed 0 in 999)" in format_comparison(c)
    c = compare(exp, "ds", "FSLF", "audio")  # the default 2000: the floor 2/2001 reads 0.001
    assert "p < 0.001 (no resample crossed 0 in 2000)" in format_comparison(c)
    assert "p <= " not in format_comparison(c)
    every = format_all(compare_all(exp))
    row = next(ln for ln in every.splitlines() if ln.strip().startswith("audio") and "FSLF" in ln)
    assert "< 0.001" in row  # BH over one pair: the floor itself, marked, not an exact 0.0010
    matrix = every.split("(row vs column; diagonal: -):")[1]
    assert "< 0.001" in matrix
    payload = json.loads(render_comparisons([c], "json"))
    (rec,) = payload["rows"]
    assert rec["speaker_p"] == pytest.approx(p_floor(stats.RESAMPLES)) and rec["speaker_p_floor"] is True
    assert "p < 0.001, speaker_p_floor true" in payload["note"]
    rows = json.loads(render_all(compare_all(exp), "json"))["rows"]
    assert rows[0]["speaker_p_floor"] is True


def test_a_p_that_is_no_floor_reads_as_its_value():
    assert format_speaker_p(0.0123, False) == "0.0123" and format_speaker_p(float("nan"), True) == "n/a"
    assert format_speaker_p(0.0013, True) == "< 0.0013"


def test_all_pairs_headers_name_the_metric():
    exp = clear_difference()
    for metric in ("uar", "war"):
        text = format_all(compare_all(exp, metric))
        assert (
            text.splitlines()[0] == f"ds: all pairs, {metric.upper()}, Benjamini-Hochberg over 1 comparisons"
        )
        assert f"BH-corrected speaker-level p, {metric.upper()} (row vs column" in text


def _board(corpus: str = "synthetic") -> tuple[pd.DataFrame, dict[str, DatasetInfo]]:
    exp = make_experiment({("audio", f, 0): 0.5 for f in range(3)} | {("FSLF", f, 0): 0.8 for f in range(3)})
    return leaderboard(exp.runs, exp.loader, exp.settings), {"ds": DatasetInfo(corpus, 6, 3, "fine-tuned")}


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "latex", "json"])
def test_references_say_in_one_line_when_none_are_published(fmt):
    table, datasets = _board("synthetic")
    text = render(table, fmt, datasets, references=True)
    line = "published results (references 2025.1): none for ds (corpus synthetic)"
    if fmt == "json":
        payload = json.loads(text)
        assert payload["references"] == [] and payload["references_note"] == line
    else:
        assert sum(line in ln for ln in text.splitlines()) == 1
    assert line not in render(table, fmt, datasets)  # not asked for: not said
    published, ravdess = _board("ravdess")
    assert "none for" not in render(published, fmt, ravdess, references=True)


def test_latex_is_a_papers_table_by_default_and_costs_come_on_request():
    table, datasets = _board("ravdess")
    head = _latex_head(render(table, "latex", datasets))
    assert head == ["setting", r"UAR \% [95\% spk]", r"WAR \% [95\% spk]"]
    assert r"\begin{tabular}{lrr}" in render(table, "latex", datasets)
    costs = _latex_head(render(table, "latex", datasets, costs=True))
    assert costs == [*head, "wall s/cell", "clips/s", "device-h", "MFU"]
    two = pd.concat([table, table.assign(dataset="other")], ignore_index=True)
    assert _latex_head(render(two, "latex", datasets))[:2] == ["dataset", "setting"]
    unfinished = table.assign(missing=[1, 0])  # its '!' mark is footnoted: the fold status stays
    assert "folds" in _latex_head(render(unfinished, "latex", datasets))


def _latex_head(latex: str) -> list[str]:
    head = latex.split("\\midrule")[0].split("\\toprule")[1]
    return [c.strip() for c in head.strip().rstrip("\\").split("&")]


def test_the_command_line_offers_the_latex_cost_columns():
    from harness.cli.main import build_parser

    parser, _ = build_parser()
    args = parser.parse_args(["leaderboard", "x.yaml", "--format", "latex", "--latex-costs"])
    assert args.latex_costs is True


@pytest.mark.parametrize(
    ("override", "key", "meant"),
    [
        ("training.epoch=3", "training.epoch", "training.epochs"),
        ("trainin.epochs=3", "trainin", "training"),  # the override made the unknown section
        ("datasets[0].corpuss=x", "datasets[0].corpuss", "datasets[0].corpus"),
        ("model.sizee=tiny", "model.sizee", "model.size"),
    ],
)
def test_an_unknown_key_given_with_set_names_the_override_and_the_nearest_key(override, key, meant):
    with pytest.raises(ConfigError) as err:
        load_experiment(ROOT / "experiments" / "quickstart.yaml", [override])
    assert err.value.source == f"--set {override}" and err.value.key == key
    assert f"did you mean {meant}?" in str(err.value)
    assert "quickstart.yaml" not in str(err.value)  # the file is not to blame


def test_a_misspelt_key_in_the_file_is_blamed_on_its_line_with_a_suggestion(tmp_path):
    text = (ROOT / "experiments" / "quickstart.yaml").read_text().replace("  epochs: 15", "  epoch: 15")
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert re.match(rf"{re.escape(str(path))}:\d+$", err.value.source or "")
    assert "did you mean training.epochs?" in str(err.value)
    with pytest.raises(ConfigError) as err:  # far from every key: no guess
        load_experiment(ROOT / "experiments" / "quickstart.yaml", ["training.zzzzqqq=1"])
    assert "did you mean" not in str(err.value) and "allowed keys here" in str(err.value)
