"""MLflow as a comparison surface, the quick part (a real MLflow SQLite store, no Ray): runs logged before
the per-epoch metrics were renamed test_war/test_uar and predictions without probabilities still load;
the parent run's metric names are valid MLflow keys; its params never try to change a logged value."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from harness.tracking.tags import TEST_UAR, TEST_WAR, aggregate_metric, epoch_metric

OLD_PREDICTIONS = "clip_id,speaker,true,predicted\nc1,01,happy,happy\nc2,01,sad,happy\nc3,02,sad,sad\n"


@pytest.fixture
def store(tmp_path):
    from harness.tracking.store import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker.open(uri, "old", artifact_root=tmp_path / "artifacts")
    parent = tracker.parent_run("old")
    return tracker, parent


def test_runs_from_before_the_rename_still_load(store):
    from harness.results.run_artifacts import RunArtifacts
    from harness.tracking.places import sqlite_path
    from harness.tracking.runs import read_client_runs, read_sqlite_runs
    from harness.tracking.tags import PLANNED_METRICS

    tracker, parent = store
    old, _ = tracker.cell_run("old-cell", parent, tags={}, params={})
    for epoch, (war, uar) in enumerate([(40.0, 35.0), (50.0, 45.0)]):
        tracker.log_epoch(old, epoch, {"war": war, "uar": uar})  # as the code before the rename logged
    tracker.artifacts(old, {"predictions.csv": OLD_PREDICTIONS})
    # a cell cut off under the old code and resumed under the new: its epochs hold both names
    mixed, _ = tracker.cell_run("mixed-cell", parent, tags={}, params={})
    tracker.log_epoch(mixed, 0, {"war": 10.0})
    tracker.log_epoch(mixed, 1, {TEST_WAR: 20.0, TEST_UAR: 15.0})

    uris = {r.info.run_id: r.info.artifact_uri for r in read_sqlite_runs(sqlite_path(tracker.uri), "old")}
    loader = RunArtifacts(tracker.uri, None, uris)
    pred = loader.predictions(old)
    assert list(pred.columns) == ["clip_id", "speaker", "true", "predicted"] and pred["speaker"][0] == "01"
    assert loader.history(old, TEST_WAR) == [(0, 40.0), (1, 50.0)]
    assert loader.history(mixed, TEST_WAR) == [(0, 10.0), (1, 20.0)]

    db = sqlite_path(tracker.uri)
    planned = read_sqlite_runs(db, "old", PLANNED_METRICS)  # what planning and status read
    assert {k for r in planned for k in r.data.steps} <= set(PLANNED_METRICS)
    assert {r.info.run_id: r.data.steps for r in read_sqlite_runs(db, "old", ["war"])}[old] == {
        "war": (50.0, 1)
    }
    for runs in (read_sqlite_runs(db, "old"), read_client_runs(tracker.uri, "old"), planned):
        steps = {r.info.run_id: r.data.steps for r in runs}
        assert epoch_metric(steps[old], TEST_WAR) == (50.0, 1)  # (latest value, its step): status reads it
        assert epoch_metric(steps[old], TEST_UAR)[0] == 45.0  # (the client reader reads no step of it)
        assert epoch_metric(steps[mixed], TEST_WAR) == (20.0, 1)  # the new name wins


def test_predictions_with_probabilities_load_beside_old_ones():
    from harness.results.leaderboard import pooled_predictions
    from harness.worker.run_info import predictions_rows

    cache = SimpleNamespace(
        clips=[SimpleNamespace(clip_id=f"c{i}", speaker=f"0{i % 2}") for i in range(3)],
        classes=["happy", "sad"],
    )
    rows = predictions_rows(cache, [(0, 0, 0), (2, 1, 0)], probabilities=[[0.9, 0.1], [0.6, 0.4]])
    assert rows[1] == {
        "clip_id": "c2",
        "speaker": "00",
        "true": "sad",
        "predicted": "happy",
        "prob_happy": 0.6,
        "prob_sad": 0.4,
    }
    assert "prob_happy" not in predictions_rows(cache, [(0, 0, 0)])[0]  # a model without probabilities
    with pytest.raises(ValueError, match="probability rows"):
        predictions_rows(cache, [(0, 0, 0)], probabilities=[])

    new = pd.DataFrame(rows)
    loader = SimpleNamespace(
        predictions=lambda run_id: new if run_id == "new" else pd.read_csv(io.StringIO(OLD_PREDICTIONS))
    )
    runs = pd.DataFrame(
        [
            {"run_id": r, "key": r, "dataset": "d", "setting": "s", "fold": f, "seed": 0}
            for f, r in enumerate(["old", "new"])
        ]
    )
    pooled = pooled_predictions(runs, loader)
    assert len(pooled) == 5 and pooled["prob_sad"].isna().sum() == 3  # old rows simply lack them


@pytest.mark.parametrize(
    ("dataset", "setting"),
    [("syn", "FSLF"), ("RAVDESS (speech)", "partial:4"), ("colère/ü", "audio-egemaps-svm"), ("..", ".")],
)
def test_aggregate_metric_names_are_valid_mlflow_keys(dataset, setting):
    from mlflow.utils.validation import _validate_metric_name

    name = aggregate_metric("war", "mean", dataset, setting)
    _validate_metric_name(name)  # raises on a key MLflow refuses
    assert name.startswith("war_mean/") and name.count("/") == 2


def test_aggregate_metrics_leave_out_what_one_cell_cannot_give():
    from harness.driver.summary import aggregate_metrics

    table = pd.DataFrame(
        [
            {"dataset": "syn", "setting": "video", "war_mean": 50.0, "war_lo": 40.0, "war_hi": 60.0}
            | {"uar_mean": 45.0, "uar_lo": 30.0, "uar_hi": 60.0, "war_spk_lo": 35.0, "war_spk_hi": 65.0},
            {"dataset": "syn", "setting": "FSLF", "war_mean": 70.0, "war_lo": math.nan, "war_hi": math.nan}
            | {"uar_mean": 65.0, "uar_lo": math.nan, "uar_hi": math.nan},
        ]
    )
    metrics = aggregate_metrics(table)
    assert metrics["war_lo/syn/video"] == 40.0 and metrics["uar_hi/syn/video"] == 60.0
    assert metrics["war_spk_lo/syn/video"] == 35.0 and "uar_spk_lo/syn/video" not in metrics
    assert metrics["war_mean/syn/FSLF"] == 70.0 and "war_lo/syn/FSLF" not in metrics
    assert len(metrics) == 8 + 2


def test_parent_run_logs_the_pooled_headline_beside_the_fold_mean():
    from harness.driver.summary import aggregate_metrics

    row = {"dataset": "syn", "setting": "FSLF", "war_pooled": 71.0, "war_spk_lo": 65.0, "war_spk_hi": 77.0}
    metrics = aggregate_metrics(pd.DataFrame([row | {"war_mean": 70.0, "uar_pooled": 68.0}]))
    assert metrics["war_pooled/syn/FSLF"] == 71.0 and metrics["uar_pooled/syn/FSLF"] == 68.0
    assert (metrics["war_spk_lo/syn/FSLF"], metrics["war_spk_hi/syn/FSLF"]) == (65.0, 77.0)
    assert metrics["war_mean/syn/FSLF"] == 70.0


def test_the_docs_name_the_parent_metrics_the_store_has():
    """A parent metric the README or docs name is one the sweep logs, and each one logged is named."""
    import re
    from pathlib import Path

    from harness.driver.summary import PARENT_STATS

    root = Path(__file__).resolve().parents[2]
    text = "\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    named = set(re.findall(r"`(?:war|uar)_([a-z_]+)/", text))
    assert named and named <= set(PARENT_STATS), named - set(PARENT_STATS)
    assert set(PARENT_STATS) <= named, set(PARENT_STATS) - named


def test_parent_params_never_change_a_logged_value(store):
    from harness.driver.summary import _log_params

    tracker, parent = store
    assert _log_params(tracker, parent, {"training.epochs": "2", "model.size": "micro"}) == []
    kept = _log_params(tracker, parent, {"training.epochs": "3", "model.size": "micro", "cells": "4"})
    assert kept == ["training.epochs"]  # MLflow refuses to change a param: the first value stays, said
    params = tracker.client.get_run(parent).data.params
    assert params == {"training.epochs": "2", "model.size": "micro", "cells": "4"}


def test_a_cell_finished_since_it_was_planned_never_gets_a_second_run(store):
    """The duplicate of the four-fault drill: a worker of a SIGKILLed driver lived on and finished the cell
    in its run while the rerun planned it as cut off; the rerun's worker must not open a second run."""
    from harness.tracking.store import FinishedMeanwhile

    tracker, parent = store
    run, created = tracker.cell_run("cell", parent, tags={}, params={})
    assert created
    again, created = tracker.cell_run("cell", parent, tags={}, params={})
    assert (again, created) == (run, False), "a cut-off run is resumed, not duplicated"
    tracker.finish_run(run, {"final_war": 61.0, "final_uar": 58.0}, {})
    with pytest.raises(FinishedMeanwhile) as done:
        tracker.cell_run("cell", parent, tags={}, params={})
    assert done.value.run_id == run and done.value.metrics["final_war"] == 61.0
    assert len(tracker.runs_of("cell")) == 1
    tracker.supersede(run, "its data changed")  # a stale result is run again, in a new run
    fresh, created = tracker.cell_run("cell", parent, tags={}, params={})
    assert created and fresh != run
