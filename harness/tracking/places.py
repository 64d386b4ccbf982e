"""Where an experiment's MLflow store is, and how the embedded SQLite file is created and locked.

Apart from the store's client so that planning, status and the board cache can locate (and read) the
store without importing MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class StoreUnreadable(Exception):
    """MLflow's SQLite file exists but cannot be read (truncated, overwritten, not a database).

    One line naming the file and the two ways on: every command says it and exits 2, instead of a
    ``sqlite3.DatabaseError`` traceback."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(
            f"the MLflow store {path} cannot be read ({reason}): restore it from a backup, or move it "
            f"aside (mv {path} {path}.broken) to start over, which retrains every cell"
        )


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise creating the store, its experiment and the sweep's parent run across processes.

    Two sweeps started at once on a fresh output both ran MLflow's schema creation and the second
    crashed (``table latest_metrics already exists``); a file lock next to the SQLite file orders
    them. A server store needs none (it creates its schema once).
    """
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        fresh = not path.exists()
        if fresh:
            from harness.tracking.store_template import seed_store

            seed_store(path)
        yield
        if fresh and path.exists():
            enable_wal(path)
        if path.exists():
            index_tag_values(path)


# MLflow indexes a run's tags by (key, run): finding the runs of one cell by its key tag scanned every
# run's tag of that name, 20-40 ms a cell at 10,000 cells and growing with the store.
TAG_VALUE_INDEX = "mmder_tags_key_value"


def index_tag_values(path: Path) -> None:
    """An index of tags by (key, value) in the embedded store, made once (a quarter second at 10,000
    runs): a lookup of one cell's runs then stays flat however large the sweep grows."""
    import sqlite3

    with sqlite3.connect(path, timeout=30) as db:
        db.execute(f"CREATE INDEX IF NOT EXISTS {TAG_VALUE_INDEX} ON tags (key, value)")


def enable_wal(path: Path) -> None:
    """WAL journal: readers (``mmder status``) never block writers, far fewer ``database is locked``."""
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")


def default_uri(output: Path) -> str:
    """SQLite under the output folder, by absolute path: Train workers run in another directory."""
    return f"sqlite:///{(output / 'mlflow.db').resolve()}"


def resolve_uri(configured: str | None, output: Path) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(output)


def store_exists(uri: str) -> bool:
    """False for a SQLite file that was never created; a dry run must not create one."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).exists()
    return True
