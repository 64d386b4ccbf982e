"""A store that breaks: a truncated ``mlflow.db`` is one line naming the file from every command (exit 2,
no traceback); a deleted one beside checkpoints and artifacts is said by planning and refused by the
sweep until ``--fresh``. Hand-made runs on a real MLflow SQLite store, no Ray: seconds."""

from __future__ import annotations

import sqlite3

import pytest
from sweep_helpers import tiny_experiment

from harness.cli.main import main
from harness.driver.outcome import ExitCode
from harness.plan.checks import ensure_synthetic


def _finished_output(tmp_path):
    """An output with two finished cells: their runs, their artifacts and a checkpoint folder each."""
    from harness.experiment.loading import load_experiment
    from harness.plan.places import Places
    from harness.plan.sweep_plan import plan_sweep
    from harness.tracking.places import store_lock
    from harness.tracking.store import Tracker

    exp = tiny_experiment(tmp_path, "broken")
    spec = load_experiment(exp)
    places = Places.of(spec, tmp_path / "out")
    ensure_synthetic(spec.datasets[0], places.dataset_roots[spec.datasets[0].label], print)
    plan = plan_sweep(spec, places.output)
    uri = places.tracking_uri
    with store_lock(uri):
        tracker = Tracker.open(uri, spec.mlflow_experiment)
    parent = tracker.parent_run(spec.name)
    for cell in plan.cells:
        run_id, _ = tracker.cell_run(cell.key, parent, tags={}, params={})
        tracker.finish_run(run_id, {"final_war": 50.0, "final_uar": 40.0}, {})
        (places.artifact_root / run_id).mkdir(parents=True, exist_ok=True)
        (places.artifact_root / run_id / "predictions.csv").write_text("clip,label\n")
        (tmp_path / "out" / "ray" / cell.key / "attempt-000" / "checkpoint_000001").mkdir(parents=True)
    db = tmp_path / "out" / "mlflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return exp, tmp_path / "out", db


@pytest.mark.filterwarnings("ignore")
def test_a_truncated_store_is_one_line_naming_it_from_every_command(tmp_path, capsys):
    exp, out, db = _finished_output(tmp_path)
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])  # what a full disk or a copy cut short leaves
    for sidecar in ("mlflow.db-wal", "mlflow.db-shm"):
        (out / sidecar).unlink(missing_ok=True)
    for command in (["status"], ["leaderboard"], ["sweep", "--dry-run"], ["sweep"], ["report"]):
        capsys.readouterr()
        code = main([*command, str(exp), "--output", str(out)])
        err = capsys.readouterr().err
        assert code == ExitCode.USAGE, (command, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (command, err)
        assert str(db) in err and "cannot be read" in err and ".broken" in err, (command, err)
    assert len(db.read_bytes()) == len(data) // 2, "nothing may write into a damaged store"


@pytest.mark.filterwarnings("ignore")
def test_a_deleted_store_beside_checkpoints_is_said_and_refused_until_fresh(tmp_path, capsys):
    exp, out, db = _finished_output(tmp_path)
    for name in ("mlflow.db", "mlflow.db-wal", "mlflow.db-shm"):
        (out / name).unlink(missing_ok=True)
    assert main(["sweep", str(exp), "--output", str(out), "--dry-run"]) == ExitCode.OK
    said = capsys.readouterr().out
    assert f"warning: no MLflow store at {db}" in said and "2 cell(s)' checkpoints" in said, said
    assert "--fresh" in said and "run artifacts under" in said

    assert main(["sweep", str(exp), "--output", str(out)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--fresh: no MLflow store" in err, err
    kept = sorted(p.name for p in (out / "ray").glob("*/attempt-000"))
    assert len(kept) == 2, "refusing must not remove a checkpoint"
    assert not db.exists(), "refusing must not create a fresh store"
