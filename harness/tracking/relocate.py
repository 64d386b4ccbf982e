"""An output folder that was moved or copied takes its embedded store's artifact locations with it.

MLflow records absolute ``file://`` locations per experiment and per run. Readers already take a
location under ``mlartifacts/`` relative to the output in use (:mod:`harness.tracking.artifacts`), but a
writer (a resumed sweep's workers, the parent run's summary, the report) logs through MLflow, which
writes wherever the run's recorded URI points: the old folder, recreated if it is gone. Before a
command writes, the store's locations that lie under another folder's ``mlartifacts/`` are rewritten
to this output's, in one transaction: the store is then what it would have been had it been written
here. A store that cannot be written (a read-only copy) is left alone; reading it still works.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from harness.tracking.artifacts import ARTIFACT_ROOT
from harness.tracking.places import sqlite_path


def artifact_root_uri(output: Path) -> str:
    """The artifact location the embedded store gives an experiment created in ``output``."""
    return (Path(output) / ARTIFACT_ROOT).resolve().as_uri()


def _root_of(location: str | None) -> str | None:
    """``file:///old/out/mlartifacts/...`` -> ``file:///old/out/mlartifacts``; None elsewhere."""
    if not location or not location.startswith("file:"):
        return None
    marker = "/" + ARTIFACT_ROOT
    i = location.rfind(marker)
    if i < 0 or location[i + len(marker) : i + len(marker) + 1] not in ("", "/"):
        return None
    return location[: i + len(marker)]


def adopt_output(uri: str, output: Path) -> int:
    """Point every artifact location of the embedded store that lies in another folder's ``mlartifacts``
    at this output's; the number of runs changed (0 for a server, a fresh or a read-only store)."""
    path = sqlite_path(uri)
    if path is None or not path.exists():
        return 0
    new_root = artifact_root_uri(output)
    try:
        db = sqlite3.connect(path, timeout=30)
    except sqlite3.Error:
        return 0
    changed = 0
    try:
        with db:
            for exp_id, location in db.execute(
                "select experiment_id, artifact_location from experiments"
            ).fetchall():
                old_root = _root_of(location)
                if old_root is None or old_root == new_root:
                    continue
                db.execute(
                    "update experiments set artifact_location = ? where experiment_id = ?",
                    (new_root + location[len(old_root) :], exp_id),
                )
                changed += db.execute(
                    "update runs set artifact_uri = ? || substr(artifact_uri, ?) "
                    "where experiment_id = ? and substr(artifact_uri, 1, ?) = ?",
                    (new_root, len(old_root) + 1, exp_id, len(old_root), old_root),
                ).rowcount
    except sqlite3.OperationalError:  # read-only, or MLflow still creating its tables
        return 0
    finally:
        db.close()
    return changed
