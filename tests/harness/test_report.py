"""``mmder report`` on a hand-made experiment: SVG and PNG figures a paper can print, and the same
leaderboard as ``mmder leaderboard``."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
from results_helpers import make_experiment

from harness.cli.main import main
from harness.results import report


def _experiment():
    cells = {("audio", f, s): 0.45 for f in range(3) for s in (0, 1)}
    exp = make_experiment(cells | {("FSLF", f, s): 0.8 for f in range(3) for s in (0, 1)})
    for run_id in exp.runs["run_id"]:
        exp.loader.hist[(run_id, "test_war")] = [(0, 30.0), (1, 50.0)]
    return exp


def test_report_figures_are_svg_and_png_and_the_page_embeds_the_svgs(tmp_path):
    exp = _experiment()
    built = report.build_report(exp)
    names = {"ds_bars", "ds_confusion", "ds_curves", "ds_compare"}
    assert set(built.figures) == {f"{n}.{fmt}" for n in names for fmt in ("svg", "png")}
    for name in names:
        root = ET.fromstring(built.figures[f"{name}.svg"])
        assert root.tag.endswith("svg")
        assert built.figures[f"{name}.png"].startswith(b"\x89PNG")
    assert built.html.count("data:image/svg+xml;base64,") == 4
    path, parent = report.write_report(exp, tmp_path / "report.html", log_to_mlflow=False)
    assert parent is None and path.is_file()
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(built.figures)


def test_bars_sit_on_a_fixed_0_to_100_axis_with_the_chance_level_and_whiskers_inside_the_frame():
    exp = _experiment()
    table = report.leaderboard_section(exp)[0]
    assert report.chance_level(table, "ds", exp) == 100 / 8  # the dataset's 8 classes, not the 4 seen
    svg = report.bar_chart(table, "ds", pd.DataFrame(), 12.5)["svg"].decode()
    assert "chance (12.5 %)" in svg and "95 % bootstrap over test speakers" in svg
    # an interval past the frame (or none at all) never draws a whisker outside 0-100
    mean = np.array([97.0, 3.0, 50.0])
    below_above = report._whiskers(mean, np.array([90.0, -4.0, np.nan]), np.array([104.0, 9.0, np.nan]))
    np.testing.assert_allclose(below_above, [[7.0, 3.0, 0.0], [3.0, 6.0, 0.0]])


def test_the_learning_curves_war_panel_sits_on_0_to_100_percent_with_the_chance_line():
    exp = _experiment()
    svg = report.curves_figure(exp, "ds", ["audio", "FSLF"], 12.5)["svg"].decode()
    assert "WAR %" in svg and "chance (12.5 %)" in svg
    texts = re.findall(r">([^<>]+)</text>", svg)
    war = texts[texts.index("epoch", texts.index("test_loss")) + 1 : texts.index("WAR %")]  # its y ticks
    assert war == ["0", "20", "40", "60", "80", "100"], (
        texts
    )  # the WAR axis spans 0-100 whatever the runs scored


def test_the_compare_matrix_marks_its_diagonal_and_untestable_pairs_instead_of_colouring_them_as_p():
    settings = ["a", "b", "c"]
    p = pd.DataFrame(np.nan, index=settings, columns=settings)
    diff = p.copy()
    p.loc["a", "b"] = p.loc["b", "a"] = 0.003
    diff.loc["a", "b"], diff.loc["b", "a"] = 12.5, -12.5
    diff.loc["a", "c"], diff.loc["c", "a"] = 1.0, -1.0  # p stays NaN: too few speakers to test
    svg = report.matrix_figure(p, diff, "ds")["svg"].decode()
    assert svg.count("—") == 3  # the diagonal, one mark per setting
    assert "+12.5" in svg and "p=0.0030" in svg and svg.count("n/a") == 4  # a-c, c-a, b-c, c-b
    # a pair no resample crossed reads as the bound it is, as in the table under it
    floored = report.matrix_figure(p, diff, "ds", floors={frozenset(("a", "b"))})["svg"].decode()
    assert "p=0.0030" not in floored and floored.count("p &lt; 0.0030") + floored.count("p < 0.0030") == 2


def _cells(row: str, tag: str) -> list[str]:
    return [html.unescape(c).strip() for c in re.findall(rf"<{tag}[^>]*>(.*?)</{tag}>", row, flags=re.S)]


def test_the_reports_leaderboard_is_what_mmder_leaderboard_prints(monkeypatch, capsys):
    """An HTML table that fits the page (headers wrap), with the very cells the terminal table prints:
    per-class recalls included, costs left to the report's cost section."""
    exp = _experiment()
    monkeypatch.setattr("harness.cli.results._collect", lambda args: exp)
    assert main(["leaderboard", "any.yaml", "--per-class"]) == 0
    printed = capsys.readouterr().out
    page = report.build_report(exp).html
    assert "<pre" not in page
    (section,) = re.findall(r'<div id="leaderboard">(.*?)</div>', page, flags=re.S)
    (table,) = re.findall(r"<table.*?</table>", section, flags=re.S)
    header, *rows = re.findall(r"<tr.*?</tr>", table, flags=re.S)
    names = _cells(header, "th")
    assert "neutral" in names and "wall s/cell" not in names and "wall s/cell" in printed
    lines = printed.splitlines()
    (head,) = [ln for ln in lines if "UAR % [95%" in ln]
    assert all(name in head for name in names), (names, head)
    assert len(rows) == 2
    for row in rows:
        cells = _cells(row, "td")
        assert len(cells) == len(names)
        (line,) = [ln for ln in lines if ln.split()[:1] == [cells[0]]]  # the setting's printed row
        at = 0
        for cell in cells:  # every cell, in the printed order
            at = line.index(cell, at) + len(cell)
    protocol = "ds  (ravdess, 8 classes, 3 folds, fine-tuned)"
    assert protocol in printed and protocol in html.unescape(section)
    feet = _cells(section, "p")[1:]  # after the protocol line: the footnotes and the intervals note
    assert feet and all(foot in {ln.strip() for ln in lines} for foot in feet), feet


def test_the_reports_compare_table_has_the_columns_compare_all_prints_and_each_note_once():
    from harness.results.compare_text import SHOWN_ALL

    page = report.build_report(_experiment()).html
    section = page.split("<h3>All pairs", 1)[1]
    (table,) = re.findall(r"<table.*?</table>", section, flags=re.S)[:1]
    header = re.findall(r"<tr.*?</tr>", table, flags=re.S)[0]
    assert _cells(header, "th") == SHOWN_ALL  # 13 columns, not every field of the record
    notes = re.findall(r'<p class="foot">note: (.*?)</p>', section, flags=re.S)
    assert notes and len(notes) == len(set(notes))
    # one seed per fold: one note for every pair on one trained model per fold, not one per pair
    one_seed = make_experiment(
        {(s, f, 0): v for s, v in (("audio", 0.45), ("FSLF", 0.8), ("video", 0.6)) for f in range(3)}
    )
    page = report.build_report(one_seed).html
    notes = re.findall(r'<p class="foot">note: (.*?)</p>', page.split("<h3>All pairs", 1)[1], flags=re.S)
    (one_model,) = [n for n in notes if n.startswith("one trained model per fold")]
    assert one_model.startswith("one trained model per fold behind audio, FSLF, video:"), one_model
    assert "intervals and p of their pairs" in one_model


def test_the_report_cites_the_paper_and_no_file_the_repository_lacks():
    page = report.build_report(_experiment()).html
    assert "arXiv:2404.18327" in page and "docs/paper.md" not in page
