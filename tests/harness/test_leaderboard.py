"""The leaderboard on hand-made run frames and predictions: no MLflow needed."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.results.compare import NotComparable, compare, compare_all, format_all, format_comparison
from harness.results.leaderboard import (
    COLUMNS,
    RUN_COLUMNS,
    DatasetInfo,
    ExperimentRuns,
    leaderboard,
    missing_cells,
    reference_rows,
    render,
    with_interval,
)

CLASSES = ["neutral", "calm", "happy", "sad"]


class DictLoader:
    """predictions/confusion/history by run id, as MLflow would hand them back."""

    def __init__(self) -> None:
        self.preds: dict[str, pd.DataFrame] = {}
        self.hist: dict[tuple[str, str], list[tuple[int, float]]] = {}

    def predictions(self, run_id: str) -> pd.DataFrame | None:
        return self.preds.get(run_id)

    def confusion(self, run_id: str) -> dict | None:
        p = self.preds.get(run_id)
        if p is None:
            return None
        m = pd.crosstab(p["true"], p["predicted"]).reindex(index=CLASSES, columns=CLASSES, fill_value=0)
        return {"classes": CLASSES, "matrix": m.to_numpy().tolist()}

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return self.hist.get((run_id, metric), [])


def fake_predictions(fold: int, accuracy: float, seed: int, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    true = [CLASSES[i % 4] for i in range(n)]
    right = rng.random(n) < accuracy
    pred = [t if ok else CLASSES[(CLASSES.index(t) + 1) % 4] for t, ok in zip(true, right, strict=True)]
    return pd.DataFrame(
        {
            "clip_id": [f"f{fold}-c{i}" for i in range(n)],
            "speaker": f"s{fold}",
            "true": true,
            "predicted": pred,
        }
    )


def make_experiment(spec: dict[tuple[str, int, int], float | None], folds: int = 3) -> ExperimentRuns:
    """(setting, fold, seed) -> accuracy (None: not finished); WAR/UAR come from the predictions."""
    loader = DictLoader()
    rows = []
    for i, ((setting, fold, seed), acc) in enumerate(spec.items()):
        row = {
            "key": f"ds-{setting}-f{fold}-s{seed}",
            "dataset": "ds",
            "setting": setting,
            "fold": fold,
            "seed": seed,
        }
        if acc is None:
            rows.append({**row, "finished": False})
            continue
        run_id = f"run{i}"
        pred = fake_predictions(fold, acc, seed=i)
        loader.preds[run_id] = pred
        correct = pred["true"] == pred["predicted"]
        uar = 100 * correct.groupby(pred["true"]).mean().mean()
        rows.append(
            {
                **row,
                "finished": True,
                "run_id": run_id,
                "uar": uar,
                "war": 100 * correct.mean(),
                "wall_seconds": 3600.0,
                "train_clips_per_s": 10.0,
                "device_count": 2.0,
                "mfu": None,
                "tags": {"mmder.cell": row["key"]},
            }
        )
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS).astype({"finished": bool})
    info = {"ds": DatasetInfo("ravdess", 8, folds, "fine-tuned")}
    return ExperimentRuns("toy", runs, loader, ["audio", "FSLF"], info)


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
    assert (
        render(table, "csv").splitlines()[0].startswith("dataset,setting,folds,seeds,runs,missing,n,uar_mean")
    )
    latex = render(table, "latex")
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    md = render(table, "markdown", exp.datasets)
    assert md.splitlines()[1].startswith("|---|")
    with pytest.raises(ValueError, match="allowed"):
        render(table, "html")
    assert render(leaderboard(exp.runs.iloc[0:0]), "table") == "(no finished cells yet)"


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
    assert "1 folds, fine-tuned, tested on cremad)" in render(table, "table", crossed, references=True)


def test_compare_pairs_runs_and_refuses_different_test_sets():
    exp = make_experiment(
        {("audio", f, s): 0.4 for f in range(3) for s in (0, 1)}
        | {("FSLF", f, s): 0.9 for f in range(3) for s in (0, 1)}
    )
    c = compare(exp, "ds", "FSLF", "audio", "war", n_resamples=500)
    assert len(c.pairs) == 6 and c.n_clips == 240
    assert c.bootstrap.lo < c.bootstrap.estimate < c.bootstrap.hi and c.bootstrap.lo > 0
    assert c.mcnemar.pvalue < 1e-6 and c.folds.n == 6
    text = format_comparison(c)
    assert "McNemar exact" in text and "Wilcoxon" in text
    both = compare_all(exp, n_resamples=200)
    assert both[0].matrix.loc["FSLF", "audio"] == pytest.approx(c.mcnemar.pvalue)  # one pair: BH = raw
    assert "BH-corrected McNemar p" in format_all(both)

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


def test_a_seedless_baseline_pairs_with_every_seed_of_a_deep_setting():
    # a classical baseline runs once per fold now; comparing it with a 2-seed setting still uses all 6
    # (fold, seed) pairs, the baseline's run standing beside each seed, as when it ran once per seed
    deep = {("audio", f, s): 0.4 for f in range(3) for s in (0, 1)}
    once = make_experiment(deep | {("audio-egemaps-svm", f, 0): 0.7 for f in range(3)})
    c = compare(once, "ds", "audio", "audio-egemaps-svm", "war", n_resamples=300)
    assert len(c.pairs) == 6 and c.folds.n == 6
    assert not any("left out" in note for note in c.notes), c.notes
    assert compare(once, "ds", "audio-egemaps-svm", "audio", "war", n_resamples=300).folds.n == 6
