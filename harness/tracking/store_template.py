"""A new embedded store as a copy of an empty one MLflow made before on this machine.

MLflow builds a new SQLite store by running every schema migration since its first release: about two
CPU-seconds a store, paid by the first command on each new output (and by every test that makes one).
The empty result depends only on the MLflow and SQLAlchemy versions, so it is made once per pair in the
user's cache folder and copied with SQLite's backup API (a consistent copy whatever state the source is
in). MLflow checks the copy's schema revision when it opens it, as it checks any store.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

CACHE_ENV = "MMDER_STORE_TEMPLATE_DIR"


def template_folder() -> Path:
    """``$MMDER_STORE_TEMPLATE_DIR``, else ``$XDG_CACHE_HOME/mmder`` (``~/.cache/mmder``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "mmder"


def seed_store(path: Path) -> bool:
    """Write an empty MLflow store at ``path`` (which must not exist yet) from the template; False, and
    nothing written, where the template cannot be made or read (MLflow then builds the store itself; a
    template that cannot be read is removed, to be made again next time)."""
    template = None
    try:
        template = _template()
        _copy(template, path)
        # MLflow's default experiment points at ./mlruns of the folder it was made from: say this one's
        with sqlite3.connect(path) as db:
            db.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (str(Path.cwd() / "mlruns" / "0"),),
            )
        db.close()
    except (OSError, sqlite3.Error):
        Path(path).unlink(missing_ok=True)
        if template is not None and not _readable(template):
            template.unlink(missing_ok=True)
        return False
    return True


def _readable(template: Path) -> bool:
    """Whether the template is an MLflow store: a failure on the copy's side (a full disk, a folder
    that cannot be written) must not cost a good template."""
    try:
        db = sqlite3.connect(f"file:{template}?mode=ro", uri=True)
        try:
            return bool(db.execute("SELECT version_num FROM alembic_version").fetchall())
        finally:
            db.close()
    except sqlite3.Error:
        return False


def _template() -> Path:
    """The template for the installed MLflow and SQLAlchemy, made here (under a lock) the first time."""
    import logging
    from importlib.metadata import version

    from filelock import FileLock

    folder = template_folder()
    folder.mkdir(parents=True, exist_ok=True)
    template = folder / f"mlflow-{version('mlflow')}-sqlalchemy-{version('sqlalchemy')}.db"
    with FileLock(str(template) + ".lock"):
        if not template.exists():
            from mlflow.tracking import MlflowClient

            # a name never used before: MLflow keeps one store object per URI in a process, which
            # would take a remade file for the one it has already given tables to
            made = template.with_name(f".{template.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.new")
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # its "Creating tables"
            MlflowClient(tracking_uri=f"sqlite:///{made}").search_experiments()  # MLflow makes the schema
            partial = made.with_suffix(".copy")
            _copy(made, partial)
            os.replace(partial, template)
            made.unlink(missing_ok=True)
    return template


def _copy(source: Path, target: Path) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
