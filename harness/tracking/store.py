"""MLflow bookkeeping: one parent run per sweep, one child run per cell, found again by tags.

Ray's MLflow integrations open a new run per trial restart and leave the old one RUNNING, so we do it
by hand with ``MlflowClient``: rank 0 gets-or-creates the child run tagged with the cell's key, logs to
it, and marks it finished at the very end. A rerun asks MLflow which keys are finished and skips them.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from harness.tracking.places import sqlite_path, store_exists
from harness.tracking.runs import (
    by_cell,
    finished_by_cell,
    read_sqlite_experiment,
    read_sqlite_tagged,
    search_all,
)
from harness.tracking.tags import (
    FAILED,
    FINISHED,
    KIND_CELL,
    KIND_SWEEP,
    TAG_ATTEMPT,
    TAG_CELL,
    TAG_ERROR,
    TAG_KIND,
    TAG_NOTE,
    TAG_PARENT,
    TAG_STATUS,
    TAG_SUPERSEDED,
    TAG_SWEEP,
    tag_filter,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

T = TypeVar("T")
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between tries of one MLflow write


# What an error that can pass says of itself: a locked SQLite file, a server restarting or overloaded.
_PASSING = (
    "database is locked",
    "database table is locked",
    "connection",
    "max retries exceeded",
    "timed out",
    "temporarily unavailable",
    "service unavailable",
    "bad gateway",
    "too many requests",
)


def can_pass(err: BaseException) -> bool:
    """True for errors worth retrying (a lock, a lost connection, a 5xx/429 answer); False for the
    permanent ones (a bad parameter, a missing run), which are raised at once instead of 15 s later."""
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    status = getattr(err, "get_http_status_code", None)
    if callable(status):
        try:
            code = int(status())
        except (TypeError, ValueError):
            code = 0
        if code >= 500 or code == 429:
            return True
    text = str(err).lower()
    return any(marker in text for marker in _PASSING)


def brief(err: BaseException, width: int = 160) -> str:
    """One line of an error for the terminal: its type and first line, without the SQL statement."""
    text = str(err).split("[SQL:")[0].strip().splitlines()
    first = text[0] if text else ""
    return f"{type(err).__name__}: {first[:width]}" + ("..." if len(first) > width else "")


def retried(
    write: Callable[[], T], what: str = "MLflow write", delays: tuple[float, ...] = RETRY_DELAYS
) -> T:
    """Run ``write``, trying again with backoff while its error can pass (:func:`can_pass`)."""
    for delay in delays:
        try:
            return write()
        except Exception as err:
            if not can_pass(err):
                raise
            print(f"mmder: {what} failed ({brief(err)}); retrying in {delay:g} s", flush=True)
            time.sleep(delay)
    return write()


def Metric(*args: Any) -> Any:  # noqa: N802 - MLflow's entities, imported on first use
    from mlflow.entities import Metric as _Metric

    return _Metric(*args)


def Param(*args: Any) -> Any:  # noqa: N802
    from mlflow.entities import Param as _Param

    return _Param(*args)


def RunTag(*args: Any) -> Any:  # noqa: N802
    from mlflow.entities import RunTag as _RunTag

    return _RunTag(*args)


@functools.lru_cache(maxsize=8)
def _client(uri: str) -> MlflowClient:
    """Why lazily: importing MLflow costs seconds, and `mmder status` on the embedded store needs none.
    One client per store and process: a lane makes a dozen MLflow calls a cell, and a new client and
    logger level each time were 2.4 % of its time (``setLevel`` clears every logger's cache)."""
    import logging

    from mlflow.tracking import MlflowClient

    # "Creating initial MLflow database tables..." and "Updating database tables" at INFO, in the middle
    # of the sweep's own lines on a new output; a failed migration still raises.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


class FinishedMeanwhile(Exception):
    """The cell's newest run finished after the sweep planned it (a worker of a killed driver that lived
    on, or another sweep): training it again would give the cell a second run."""

    def __init__(self, run_id: str, metrics: dict[str, float]) -> None:
        super().__init__(run_id)
        self.run_id, self.metrics = run_id, metrics


@dataclass
class Tracker:
    uri: str
    experiment_id: str

    @property
    def client(self) -> MlflowClient:
        return _client(self.uri)

    @classmethod
    def open(
        cls, uri: str, experiment: str, artifact_root: Path | None = None, create: bool = True
    ) -> Tracker:
        """Open (and, from the driver, create once) the experiment.

        The driver creates the store before any worker touches it: SQLite schema migrations from many
        processes at once crash. ``artifact_root`` is used only with the embedded SQLite store: a
        server's experiment gets no location, so its runs get ``mlflow-artifacts:`` URIs the server
        proxies, instead of a folder on whichever node logs them.
        """
        client = _client(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            if not create:
                raise LookupError(f"no MLflow experiment {experiment!r} at {uri}")
            embedded = sqlite_path(uri) is not None
            location = artifact_root.resolve().as_uri() if artifact_root and embedded else None
            exp_id = client.create_experiment(experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        return cls(uri=uri, experiment_id=exp_id)

    @classmethod
    def existing(cls, uri: str, experiment: str) -> Tracker | None:
        """The experiment's tracker if its store and experiment exist; never creates either (dry runs)."""
        if not store_exists(uri):
            return None
        try:
            return cls.open(uri, experiment, create=False)
        except LookupError:
            return None

    def _search(self, filter_string: str) -> list[Any]:
        return search_all(self.client, [self.experiment_id], filter_string)

    def parent_run(self, sweep: str, description: str = "") -> str:
        """The sweep's parent run, shared by every rerun of the same experiment."""
        found = self._search(f"{tag_filter(TAG_KIND, KIND_SWEEP)} and {tag_filter(TAG_SWEEP, sweep)}")
        if found:
            return found[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=sweep,
            tags={TAG_KIND: KIND_SWEEP, TAG_SWEEP: sweep, TAG_NOTE: description},
        )
        return run.info.run_id

    def _cell_runs(self, server_filter: str) -> list[Any]:
        """The experiment's runs: the embedded store read whole and directly (a few queries for the whole
        sweep), a server through paged searches of ``server_filter``."""
        path = sqlite_path(self.uri)
        if path is not None:
            return read_sqlite_experiment(path, self.experiment_id)
        return self._search(server_filter)

    def finished_cells(self) -> dict[str, Any]:
        """key -> the newest finished run of that cell that no newer run superseded."""
        return finished_by_cell(self._cell_runs(tag_filter(TAG_STATUS, FINISHED)))

    def cell_runs(self) -> dict[str, list[Any]]:
        """key -> every run of that cell that was not superseded, newest first."""
        return by_cell(self._cell_runs(f"tags.`{TAG_CELL}` != ''"))

    def runs_of(self, key: str) -> list[Any]:
        """The cell's runs that were not superseded, newest first: the embedded store's read through its
        tag-value index, a server's by one search."""
        path = sqlite_path(self.uri)
        if path is not None:
            found = retried(lambda: read_sqlite_tagged(path, self.experiment_id, TAG_CELL, key))
        else:
            found = self._search(tag_filter(TAG_CELL, key))
        runs = [r for r in found if TAG_SUPERSEDED not in r.data.tags]
        return sorted(runs, key=lambda r: -r.info.start_time)

    def cell_run(
        self,
        key: str,
        parent_run_id: str,
        tags: dict[str, str],
        params: dict[str, Any],
        kind: str = KIND_CELL,
    ) -> tuple[str, bool]:
        """Get or create the cell's run: (run id, created).

        A cut-off cell (RUNNING, KILLED, SCHEDULED) keeps logging into the run it started; a failed one
        is retried in a fresh run (its attempt number one more), and superseded runs are history. A cell
        whose newest run finished since it was planned raises :class:`FinishedMeanwhile`: one run per
        cell, never a duplicate (a stale finished run was superseded when the sweep planned it).
        """
        runs = self.runs_of(key)
        if runs and runs[0].data.tags.get(TAG_STATUS) == FINISHED:
            raise FinishedMeanwhile(runs[0].info.run_id, dict(runs[0].data.metrics))
        if runs and runs[0].info.status != "FAILED":
            run_id = runs[0].info.run_id
            retried(lambda: self.client.update_run(run_id, status="RUNNING"))
            retried(lambda: self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()]))
            return run_id, False
        all_tags = {
            TAG_CELL: key,
            TAG_KIND: kind,
            TAG_ATTEMPT: str(len(runs) + 1),
            TAG_PARENT: parent_run_id,
            **tags,
        }
        run = retried(lambda: self.client.create_run(self.experiment_id, run_name=key, tags=all_tags))
        self.log_params(run.info.run_id, params)
        return run.info.run_id, True

    def logged_steps(self, run_id: str, metric: str) -> set[int]:
        """Steps of ``metric`` already in the run: a resumed cell must not log them a second time."""
        return {m.step for m in retried(lambda: self.client.get_metric_history(run_id, metric))}

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Metrics at step 0 (a run's summary), in batches MLflow takes."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            retried(lambda i=i: self.client.log_batch(run_id, metrics=batch[i : i + 1000]))

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Params the run does not hold yet (MLflow refuses to change one), in batches of 100."""
        flat = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(flat), 100):
            retried(lambda i=i: self.client.log_batch(run_id, params=flat[i : i + 100]))

    def tag(self, run_id: str, key: str, value: str) -> None:
        retried(lambda: self.client.log_batch(run_id, tags=[RunTag(key, value)]))

    def tags(self, run_id: str, tags: dict[str, str]) -> None:
        retried(
            lambda: self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
        )

    def log_dataset(self, run_id: str, frame: Any, name: str, digest: str, source: str) -> None:
        """The cell's clips as an MLflow dataset input, so the UI shows which data (digest) a run saw."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)
        entity = DatasetInput(
            dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "train+test")]
        )
        retried(lambda: self.client.log_inputs(run_id, datasets=[entity]))

    def supersede(self, run_id: str, why: str) -> None:
        """Keep an outdated run for history, out of the leaderboard and of every 'finished' lookup."""
        self.tag(run_id, TAG_SUPERSEDED, why)

    def finish_cell(
        self,
        run_id: str,
        final: dict[str, float],
        confusion: list[list[int]],
        class_names: list[str],
        predictions: list[dict[str, Any]],
        extra: dict[str, str | bytes] | None = None,
    ) -> None:
        """A cell's final metrics, its confusion matrix (CSV, JSON), its predictions and ``extra``
        artifacts (the resolved job, the confusion figure); the finished tag last."""
        self.finish_run(
            run_id,
            final,
            {
                "confusion.csv": _confusion_csv(confusion, class_names),
                "confusion.json": json.dumps({"classes": class_names, "matrix": confusion}),
                "predictions.csv": _rows_csv(predictions),
                **(extra or {}),
            },
        )

    def finish_run(self, run_id: str, final: dict[str, float], artifacts: dict[str, str | bytes]) -> None:
        """Artifacts first, then final metrics and the finished tag: a cut-off run never looks finished."""
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in final.items()]
        self._artifacts(run_id, artifacts)
        # the final metrics and the finished tag in one write: a run cut off before it holds neither
        retried(lambda: self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(TAG_STATUS, FINISHED)]))
        retried(lambda: self.client.set_terminated(run_id, status="FINISHED"))

    def artifacts(self, run_id: str, artifacts: dict[str, str | bytes]) -> None:
        """Small files (name -> text, or bytes such as a PNG) as the run's artifacts."""
        self._artifacts(run_id, artifacts)

    def _artifacts(self, run_id: str, artifacts: dict[str, str | bytes]) -> None:
        if artifacts:
            with tempfile.TemporaryDirectory() as tmp:
                for name, content in artifacts.items():
                    if isinstance(content, bytes):
                        Path(tmp, name).write_bytes(content)
                    else:
                        Path(tmp, name).write_text(content, encoding="utf-8")
                retried(lambda: self.client.log_artifacts(run_id, tmp))

    def fail_cell(self, run_id: str, error: str = "") -> None:
        """FAILED, the error's last lines as a tag (the UI's table), the whole of it as an artifact."""
        if error:
            self.tags(run_id, {TAG_ERROR: error_summary(error), TAG_STATUS: FAILED})
            self._artifacts(run_id, {"traceback.txt": error})
        retried(lambda: self.client.set_terminated(run_id, status="FAILED"))

    def end_run(self, run_id: str, status: str, counts: dict[str, float] | None = None) -> None:
        """End a run (a cut-off cell: KILLED; the sweep's parent: FINISHED/FAILED/KILLED, with counts)."""
        if counts:
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, 0) for k, v in counts.items()]
            retried(lambda: self.client.log_batch(run_id, metrics=metrics))
        retried(lambda: self.client.set_terminated(run_id, status=status))


def error_summary(error: str, lines: int = 5) -> str:
    """The last non-empty lines of an error: where a traceback says what went wrong."""
    kept = [ln for ln in error.strip().splitlines() if ln.strip(" ^~\t")][-lines:]  # no caret marks
    return "\n".join(kept)[-4000:]


@dataclass
class EpochLog:
    """Per-epoch metrics of one run that never stop training: a write that still fails after its retries
    is kept and sent with the next epoch (or at the end); epochs the run already holds are not re-sent."""

    tracker: Tracker
    run_id: str
    done: set[int] = field(default_factory=set)
    pending: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    delays: tuple[float, ...] = RETRY_DELAYS

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch in self.done:
            return
        self.pending.append((epoch, metrics))
        self.flush()

    def flush(self) -> bool:
        """Send what is pending; False (and kept) when the store still refuses."""
        while self.pending:
            epoch, metrics = self.pending[0]
            try:
                retried(
                    lambda e=epoch, m=metrics: self.tracker.log_epoch(self.run_id, e, m),
                    "epoch metrics",
                    self.delays,
                )
            except Exception as err:  # noqa: BLE001 - tracking must never kill training
                print(f"mmder: epoch {epoch} metrics kept for later ({brief(err)})", flush=True)
                return False
            self.done.add(epoch)
            self.pending.pop(0)
        return True


def _confusion_csv(confusion: list[list[int]], class_names: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, confusion, strict=True):
        writer.writerow([name, *row])
    return buf.getvalue()


def _rows_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
