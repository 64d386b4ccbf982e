"""A new embedded store is copied from an empty one MLflow made before: the same schema as a store
MLflow builds itself, opened and written by MLflow, and a cache folder that cannot be written costs
only the time MLflow's own build takes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from harness.tracking.places import store_lock
from harness.tracking.store import Tracker
from harness.tracking.store_template import CACHE_ENV, seed_store


def _schema(path: Path) -> tuple[list, list]:
    """Each table and index with its definition's lines as a set: MLflow's own migrations write a
    table's constraints in an order that varies from one build of a store to the next."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    tables = [
        (kind, name, sorted(line.strip(" ,") for line in (sql or "").splitlines()))
        for kind, name, sql in rows
    ]
    return tables, revision


def test_a_seeded_store_has_mlflows_own_schema_and_takes_runs(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    own = tmp_path / "own" / "mlflow.db"
    own.parent.mkdir()
    Tracker.open(f"sqlite:///{own}", "e", artifact_root=tmp_path / "a1")  # MLflow builds this one
    seeded = tmp_path / "seeded" / "mlflow.db"
    uri = f"sqlite:///{seeded}"
    with store_lock(uri):
        assert seeded.exists(), "the store is made from the template before MLflow opens it"
        tracker = Tracker.open(uri, "e", artifact_root=tmp_path / "a2")
        parent = tracker.parent_run("e")
    assert list((tmp_path / "cache").glob("mlflow-*.db"))
    own_tables, own_revision = _schema(own)
    seeded_tables, seeded_revision = _schema(seeded)
    assert seeded_revision == own_revision
    mlflows = [t for t in seeded_tables if not t[1].startswith("mmder_")]  # our tag index comes on top
    assert mlflows == own_tables
    assert tracker.client.get_run(parent).info.experiment_id == tracker.experiment_id
    with sqlite3.connect(seeded) as db:
        (location,) = db.execute(
            "SELECT artifact_location FROM experiments WHERE experiment_id = 0"
        ).fetchone()
    assert location == str(Path.cwd() / "mlruns" / "0"), "the default experiment as MLflow would place it"


def test_a_cache_folder_that_cannot_be_written_leaves_the_store_to_mlflow(tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    target = tmp_path / "out" / "mlflow.db"
    target.parent.mkdir()
    assert seed_store(target) is False and not target.exists()
    uri = f"sqlite:///{target}"
    with store_lock(uri):
        tracker = Tracker.open(uri, "e", artifact_root=tmp_path / "a")
    assert tracker.client.get_experiment(tracker.experiment_id).name == "e"


def test_a_template_that_cannot_be_read_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert seed_store(tmp_path / "first.db")
    (template,) = (tmp_path / "cache").glob("mlflow-*.db")
    template.write_bytes(b"not a database")  # a disk that lost it
    assert seed_store(tmp_path / "second.db") is False and not (tmp_path / "second.db").exists()
    assert not template.exists(), "removed, so the next new store makes it again"
    assert seed_store(tmp_path / "third.db") and template.exists()
    assert _schema(tmp_path / "third.db")[1] == _schema(tmp_path / "first.db")[1]


def test_a_copy_that_cannot_be_written_keeps_the_template(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert seed_store(tmp_path / "first.db")
    (template,) = (tmp_path / "cache").glob("mlflow-*.db")
    made = template.stat().st_mtime_ns
    assert seed_store(tmp_path / "no-such-folder" / "mlflow.db") is False  # the target's fault
    assert template.exists() and template.stat().st_mtime_ns == made, "the template is kept as it was"
