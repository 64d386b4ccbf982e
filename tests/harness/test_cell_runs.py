"""A cell's runs, looked up by its key as a worker opens the cell (a real MLflow SQLite store, no Ray):
only this experiment's, never a superseded one, newest first, through an index of tag values."""

from __future__ import annotations

import sqlite3
import time

import pytest

from harness.tracking.tags import FINISHED, TAG_STATUS


def test_a_cells_runs_are_its_own_experiments_newest_first_and_a_finished_one_is_never_reopened(tmp_path):
    from harness.tracking.places import TAG_VALUE_INDEX, store_lock
    from harness.tracking.store import FinishedMeanwhile, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with store_lock(uri):  # how the driver opens the embedded store
        mine = Tracker.open(uri, "mine", artifact_root=tmp_path / "art")
        other = Tracker.open(uri, "other", artifact_root=tmp_path / "art")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("select 1 from sqlite_master where name = ?", (TAG_VALUE_INDEX,)).fetchone()

    parent = mine.parent_run("mine")
    first, created = mine.cell_run("cell-a", parent, {}, {"lr": 0.1})
    assert created
    other.cell_run("cell-a", other.parent_run("other"), {}, {})  # the same key in another experiment
    mine.cell_run("cell-b", parent, {}, {})
    assert [r.info.run_id for r in mine.runs_of("cell-a")] == [first]
    assert mine.cell_run("cell-a", parent, {}, {}) == (first, False), "a cut-off cell goes on in its run"

    mine.end_run(first, "FAILED")
    time.sleep(0.01)
    retry, created = mine.cell_run("cell-a", parent, {}, {})
    assert created and retry != first, "a failed cell is retried in a fresh run"
    assert [r.info.run_id for r in mine.runs_of("cell-a")] == [retry, first]

    mine.finish_run(retry, {"war": 0.5}, {})
    assert mine.runs_of("cell-a")[0].data.tags[TAG_STATUS] == FINISHED
    with pytest.raises(FinishedMeanwhile) as meanwhile:
        mine.cell_run("cell-a", parent, {}, {})
    assert meanwhile.value.run_id == retry and meanwhile.value.metrics["war"] == 0.5

    mine.supersede(retry, "its data changed")
    mine.supersede(first, "its data changed")
    assert mine.runs_of("cell-a") == []
