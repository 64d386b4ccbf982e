"""An output folder whose MLflow store is gone but whose checkpoints and artifacts are not.

Why: a deleted (or moved) ``mlflow.db`` made the next sweep see every cell as new, delete the finished
cells' checkpoints and retrain them all, without a word before. Planning now says what it found, and a
sweep refuses until told ``--fresh``."""

from __future__ import annotations

from pathlib import Path

from harness.plan.places import Places
from harness.tracking.places import sqlite_path

ATTEMPT_GLOB = "attempt-*"  # a cell's checkpoint folders (harness.worker.resume.ATTEMPT_PREFIX)


def stray_outputs(places: Places) -> str | None:
    """What lies in the output without a store to account for it; None when the store exists (or is a
    server) or nothing lies there."""
    path = sqlite_path(places.tracking_uri)
    if path is None or path.exists():
        return None
    found = []
    storage = Path(places.storage)
    if not places.remote_storage and storage.is_dir():
        cells = sum(1 for d in storage.iterdir() if d.is_dir() and next(d.glob(ATTEMPT_GLOB), None))
        if cells:
            found.append(f"{cells} cell(s)' checkpoints under {storage}")
    artifacts = places.artifact_root
    if artifacts.is_dir() and next(artifacts.iterdir(), None) is not None:
        found.append(f"run artifacts under {artifacts}")
    if not found:
        return None
    return (
        f"no MLflow store at {path}, yet {' and '.join(found)}: was the store deleted or moved? Put it "
        "back to keep the finished cells, or pass --fresh to start over (those checkpoints are removed "
        "and every cell trains again)"
    )
