"""Reading an experiment's runs without MLflow's import where that is possible.

MLflow's import alone costs seconds; the embedded SQLite store is therefore read directly, read-only,
through :mod:`sqlite3` (never blocking the sweep's writers under WAL), and a server store through
``MlflowClient``. The runs come back as light stand-ins with what planning, status and the
leaderboard read: ``info.run_id/status/start_time/end_time/artifact_uri``, ``data.tags``,
``data.metrics`` (latest values) and ``data.steps`` (latest value and step per metric).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.tracking.tags import LEGACY_EPOCH_NAMES, TEST_WAR

_EPOCH_WAR = (TEST_WAR, LEGACY_EPOCH_NAMES[TEST_WAR])  # the per-epoch metric whose step says the epoch

__all__ = [
    "by_cell",
    "finished_by_cell",
    "read_client_runs",
    "read_only",
    "read_runs",
    "read_sqlite_runs",
    "search_all",
]

# Runs per MLflow query page. MLflow answers 1,000 runs when asked for no page size and at most 50,000 a
# page: every query of ours pages, so a sweep of any size is counted whole.
PAGE_SIZE = 1000


def search_all(client: Any, experiment_ids: list[str], filter_string: str = "", **options: Any) -> list[Any]:
    """Every run a ``search_runs`` query matches, page after page (``options``: order_by, ...)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=PAGE_SIZE, page_token=token, **options
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


@contextmanager
def read_only(path: Path) -> Iterator[Any]:
    """MLflow's SQLite file opened read-only: under WAL a reader never blocks the sweep's writers."""
    import sqlite3

    from harness.tracking.places import StoreUnreadable

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        yield db
    except sqlite3.DatabaseError as err:
        if "locked" in str(err) or "busy" in str(err):
            raise  # a writer holds it for a moment: not damage
        raise StoreUnreadable(path, str(err)) from err
    finally:
        db.close()


def read_sqlite_tagged(path: Path, experiment_id: str, key: str, value: str) -> list[Any]:
    """The experiment's live runs whose tag ``key`` is ``value``, as :func:`read_sqlite_runs` reads them:
    found through the store's tag-value index (when made), so one cell's runs cost the same at 10 cells
    and at 10,000. Another experiment in the same store may tag a run alike: only this one's count."""
    with read_only(path) as db:
        runs = db.execute(
            "select r.run_uuid, r.status, r.start_time, r.end_time, r.artifact_uri from tags t "
            "join runs r on r.run_uuid = t.run_uuid where t.key = ? and t.value = ? "
            "and r.experiment_id = ? and r.lifecycle_stage = 'active'",
            (key, value, experiment_id),
        ).fetchall()
        found = []
        for run_id, status, start, end, art in runs:
            tags = dict(db.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())
            metrics = {
                name: (v, step)
                for name, v, step in db.execute(
                    "select key, value, step from latest_metrics where run_uuid = ?", (run_id,)
                )
            }
            info = {"run_id": run_id, "status": status, "start_time": start or 0, "end_time": end}
            found.append(_run({**info, "artifact_uri": art}, tags, metrics))
        return found


def _run(info: dict, tags: dict[str, str], metrics: dict[str, tuple[float, int]]) -> Any:
    """A light stand-in for an MLflow ``Run`` with what status and the planner read (``metrics``: name
    -> (latest value, its step))."""
    return SimpleNamespace(
        info=SimpleNamespace(**info),
        data=SimpleNamespace(tags=tags, metrics={k: v for k, (v, _) in metrics.items()}, steps=metrics),
    )


def read_sqlite_runs(path: Path, experiment: str, metrics: Collection[str] | None = None) -> list[Any] | None:
    """Every run of the experiment with tags and latest metrics (only ``metrics``, when named), straight
    from MLflow's SQLite file.

    Read-only (``mode=ro``) and under WAL never blocks the sweep's writers; None when the store or
    experiment does not exist yet.
    """
    if not path.exists():
        return None
    with read_only(path) as db:
        exp_id = _experiment_id(db, experiment)
        return None if exp_id is None else _sqlite_runs(db, exp_id, metrics)


def read_sqlite_experiment(path: Path, experiment_id: str) -> list[Any]:
    """Every run of the experiment with this id, as :func:`read_sqlite_runs` reads them (the driver's
    view of its own experiment: a few queries for the whole sweep, where MLflow's search took 3 ms a run)."""
    with read_only(path) as db:
        return _sqlite_runs(db, experiment_id)


_OF_EXPERIMENT = "run_uuid in (select run_uuid from runs where experiment_id = ?)"  # faster than a join


def _sqlite_tags(db: Any, exp_id: Any) -> dict[str, dict[str, str]]:
    """run id -> its tags; grouped by SQLite into one JSON object a run (a third faster at 10,000 runs
    than a Python loop over every tag row), the loop where SQLite lacks its JSON functions."""
    import json
    import sqlite3

    try:
        grouped = db.execute(
            f"select run_uuid, json_group_object(key, value) from tags where {_OF_EXPERIMENT} "
            "group by run_uuid",
            (exp_id,),
        )
        return {run_id: json.loads(text) for run_id, text in grouped}
    except sqlite3.OperationalError:
        tags: dict[str, dict[str, str]] = {}
        rows = db.execute(f"select run_uuid, key, value from tags where {_OF_EXPERIMENT}", (exp_id,))
        for run_id, key, value in rows:
            tags.setdefault(run_id, {})[key] = value
        return tags


def _sqlite_metrics(
    db: Any, exp_id: Any, only: Collection[str] | None
) -> dict[str, dict[str, tuple[float, int]]]:
    """run id -> metric -> (latest value, its step); only the metrics named, when named (a cell logs
    dozens, planning judges by a few). Grouped into one JSON text by SQLite, as the tags are (half the
    time of a Python loop over the rows at 10,000 runs), the loop where SQLite lacks its JSON functions."""
    import json
    import sqlite3

    where, params = _OF_EXPERIMENT, (exp_id,)
    if only is not None:
        where += f" and key in ({','.join('?' * len(only))})"
        params += tuple(only)
    try:
        (text,) = db.execute(
            "select json_group_object(run_uuid, json(obj)) from (select run_uuid, "
            f"json_group_object(key, json_array(value, step)) obj from latest_metrics where {where} "
            "group by run_uuid)",
            params,
        ).fetchone()
        return {
            r: {k: (v, step) for k, (v, step) in ms.items()} for r, ms in json.loads(text or "{}").items()
        }
    except sqlite3.OperationalError:
        metrics: dict[str, dict[str, tuple[float, int]]] = {}
        rows = db.execute(f"select run_uuid, key, value, step from latest_metrics where {where}", params)
        for run_id, key, value, step in rows:
            metrics.setdefault(run_id, {})[key] = (value, step)
        return metrics


def _sqlite_runs(db: Any, exp_id: Any, only: Collection[str] | None = None) -> list[Any]:
    runs = db.execute(
        "select run_uuid, status, start_time, end_time, artifact_uri from runs "
        "where experiment_id = ? and lifecycle_stage = 'active'",
        (exp_id,),
    ).fetchall()
    tags = _sqlite_tags(db, exp_id)
    metrics = _sqlite_metrics(db, exp_id, only)
    return [
        _run(
            {"run_id": r, "status": st, "start_time": start or 0, "end_time": end, "artifact_uri": art},
            tags.get(r, {}),
            metrics.get(r, {}),
        )
        for r, st, start, end, art in runs
    ]


def _experiment_id(db: Any, experiment: str) -> str | None:
    """The active experiment's id in an open MLflow SQLite store; None when it is not there (yet)."""
    import sqlite3

    try:
        row = db.execute(
            "select experiment_id from experiments where name = ? and lifecycle_stage = 'active'",
            (experiment,),
        ).fetchone()
    except sqlite3.OperationalError:  # the file exists but MLflow is still creating its tables
        return None
    return row[0] if row else None


def sqlite_has_experiment(path: Path, experiment: str) -> bool:
    """Whether the SQLite store holds the experiment, without reading its runs."""
    if not path.exists():
        return False
    with read_only(path) as db:
        return _experiment_id(db, experiment) is not None


def read_client_runs(uri: str, experiment: str) -> list[Any] | None:
    """The same through ``MlflowClient`` (a tracking server)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    out = []
    for run in search_all(client, [exp.experiment_id]):
        steps = {}
        for key, value in run.data.metrics.items():
            # the epoch a running cell is at (status shows it): a round trip, so for running runs only
            running = key in _EPOCH_WAR and run.info.status == "RUNNING"
            history = client.get_metric_history(run.info.run_id, key) if running else []
            steps[key] = (value, max((m.step for m in history), default=0))
        out.append(
            _run(
                {
                    "run_id": run.info.run_id,
                    "status": run.info.status,
                    "start_time": run.info.start_time or 0,
                    "end_time": run.info.end_time,
                    "artifact_uri": run.info.artifact_uri,
                },
                dict(run.data.tags),
                steps,
            )
        )
    return out


def read_runs(uri: str, experiment: str, missing_as_none: bool = False) -> list[Any] | None:
    """Every run of the experiment, SQLite read directly and a server paged through MLflow; [] (None
    with ``missing_as_none``) when the store or the experiment does not exist."""
    from harness.tracking.places import sqlite_path, store_exists

    path = sqlite_path(uri)
    if path is not None:
        runs = read_sqlite_runs(path, experiment)
    else:
        runs = read_client_runs(uri, experiment) if store_exists(uri) else None
    return runs if runs is not None or missing_as_none else []


def experiment_id(uri: str, experiment: str) -> str | None:
    """The experiment's id in the store, None when there is none; without MLflow's import on SQLite."""
    from harness.tracking.places import sqlite_path

    path = sqlite_path(uri)
    if path is None:
        from mlflow.tracking import MlflowClient

        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
        return found.experiment_id if found is not None else None
    if not path.exists():
        return None
    with read_only(path) as db:
        exp_id = _experiment_id(db, experiment)
    return str(exp_id) if exp_id is not None else None


def by_cell(runs: list[Any]) -> dict[str, list[Any]]:
    """key -> every run of that cell that was not superseded, newest first."""
    from harness.tracking.tags import TAG_CELL, TAG_SUPERSEDED

    found: dict[str, list[Any]] = {}
    for run in sorted(runs, key=lambda r: -r.info.start_time):
        key = run.data.tags.get(TAG_CELL)
        if key and TAG_SUPERSEDED not in run.data.tags:
            found.setdefault(key, []).append(run)
    return found


def finished_by_cell(runs: list[Any]) -> dict[str, Any]:
    """key -> the newest finished run of that cell that no newer run superseded."""
    from harness.tracking.tags import FINISHED, TAG_STATUS

    found: dict[str, Any] = {}
    for key, found_runs in by_cell(runs).items():
        done = [r for r in found_runs if r.data.tags.get(TAG_STATUS) == FINISHED]
        if done:
            found[key] = done[0]
    return found


def finished_elsewhere(path: Path, experiment: str, keys: set[str]) -> dict[str, int]:
    """Other MLflow experiments of the same SQLite store -> how many of ``keys`` they hold finished.

    A renamed experiment (``name:`` or ``tracking.experiment`` changed) keeps its cells' keys, but its
    runs stay under the old experiment name: planning says so instead of "nothing ran yet".
    """
    import sqlite3

    from harness.tracking.tags import FINISHED, TAG_CELL, TAG_STATUS, TAG_SUPERSEDED

    if not path.exists() or not keys:
        return {}
    try:
        with read_only(path) as db:
            rows = db.execute(
                "select e.name, c.value from runs r join experiments e on e.experiment_id = r.experiment_id "
                "join tags c on c.run_uuid = r.run_uuid and c.key = ? "
                "join tags s on s.run_uuid = r.run_uuid and s.key = ? and s.value = ? "
                "where e.name != ? and e.lifecycle_stage = 'active' and r.lifecycle_stage = 'active' "
                "and not exists (select 1 from tags x where x.run_uuid = r.run_uuid and x.key = ?)",
                (TAG_CELL, TAG_STATUS, FINISHED, experiment, TAG_SUPERSEDED),
            ).fetchall()
    except sqlite3.OperationalError:  # MLflow still creating its tables
        return {}
    found: dict[str, set[str]] = {}
    for name, key in rows:
        if key in keys:
            found.setdefault(name, set()).add(key)
    return {name: len(k) for name, k in sorted(found.items())}
