"""Tracking and leaderboard on a real (SQLite) MLflow store, without Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.leaderboard import COLUMNS, collect_runs, leaderboard, render
from harness.spec import expand_cells, load_experiment
from harness.sweep import format_plan, plan_sweep
from harness.tracking import Tracker, default_uri

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"


def finish(tracker: Tracker, parent: str, key: str, war: float, uar: float) -> str:
    run_id = tracker.cell_run(key, parent, tags={}, params={"a": 1})
    tracker.log_epoch(run_id, 0, {"war": war, "uar": uar})
    tracker.finish_cell(
        run_id,
        {"final_war": war, "final_uar": uar},
        [[1, 0], [0, 1]],
        ["a", "b"],
        [{"clip_id": "c1", "true": "a", "predicted": "a"}],
    )
    return run_id


@pytest.fixture
def store(tmp_path):
    spec = load_experiment(QUICKSTART)
    tracker = Tracker.open(default_uri(tmp_path), spec.mlflow_experiment, artifact_root=tmp_path / "art")
    return spec, tracker, tracker.parent_run(spec.name)


def test_runs_are_found_again_by_key_not_duplicated(store):
    spec, tracker, parent = store
    assert tracker.parent_run(spec.name) == parent
    key = expand_cells(spec)[0].key
    first = tracker.cell_run(key, parent, tags={}, params={"a": 1})
    assert tracker.cell_run(key, parent, tags={}, params={"a": 1}) == first
    assert tracker.finished_cells() == {}, "a started cell is not finished"
    finish(tracker, parent, key, 50.0, 40.0)
    assert set(tracker.finished_cells()) == {key}


def test_leaderboard_means_and_stds_over_folds(store, tmp_path):
    spec, tracker, parent = store
    cells = expand_cells(spec)
    wars = {("video", 0): 40.0, ("video", 1): 50.0, ("FSLF", 0): 90.0, ("FSLF", 1): 80.0}
    for cell in cells:
        if (cell.setting, cell.fold) in wars:
            finish(
                tracker, parent, cell.key, wars[cell.setting, cell.fold], wars[cell.setting, cell.fold] - 10
            )
    table = leaderboard(collect_runs(spec, tmp_path), spec.grid.settings)
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert list(table["setting"]) == ["video", "FSLF"], "rows follow the experiment's settings order"
    video = table.iloc[0]
    assert (
        video.folds == 2 and video.war_mean == pytest.approx(45.0) and video.uar_mean == pytest.approx(35.0)
    )
    assert video.war_std == pytest.approx(7.0710678, rel=1e-6)  # sample std of 40 and 50
    text = render(table, "table")
    assert "45.00 ±  7.07" in text and "FSLF" in text
    assert render(table, "markdown").splitlines()[0].startswith("| dataset | setting | folds |")
    assert render(table, "csv").splitlines()[1].startswith("synthetic,video,2,35.00,7.07,45.00,7.07")

    plan = plan_sweep(spec, tmp_path)
    assert len(plan.finished) == 4 and len(plan.todo) == len(cells) - 4
    assert format_plan(plan).count("  skip  ") == 4


def test_runs_of_an_edited_experiment_stay_out_of_its_leaderboard(store, tmp_path):
    spec, tracker, parent = store
    finish(tracker, parent, "synthetic-video-f0-s0-0000000000", 99.0, 99.0)  # a key the grid no longer has
    assert collect_runs(spec, tmp_path).empty
    assert render(leaderboard(collect_runs(spec, tmp_path)), "table") == "(no finished cells yet)"
