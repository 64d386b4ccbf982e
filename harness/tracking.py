"""MLflow bookkeeping: one parent run per sweep, one child run per cell, found again by tags.

Ray's MLflow integrations open a new run per trial restart and leave the old one RUNNING, so we do it
by hand with ``MlflowClient``: rank 0 gets-or-creates the child run tagged with the cell's key, logs to
it, and marks it finished at the very end. A rerun asks MLflow which keys are finished and skips them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

TAG_CELL = "mmder.cell"
TAG_STATUS = "mmder.status"
TAG_KIND = "mmder.kind"
TAG_SWEEP = "mmder.sweep"
TAG_RESUMED = "mmder.resumed_from_epoch"
FINISHED = "finished"


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


@dataclass
class Tracker:
    uri: str
    experiment_id: str

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    @classmethod
    def open(
        cls, uri: str, experiment: str, artifact_root: Path | None = None, create: bool = True
    ) -> Tracker:
        """Open (and, from the driver, create once) the experiment.

        The driver creates the store before any worker touches it: SQLite schema migrations from many
        processes at once crash.
        """
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            if not create:
                raise LookupError(f"no MLflow experiment {experiment!r} at {uri}")
            location = artifact_root.resolve().as_uri() if artifact_root else None
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
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=filter_string, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def parent_run(self, sweep: str, description: str = "") -> str:
        """The sweep's parent run, shared by every rerun of the same experiment."""
        found = self._search(f"tags.`{TAG_KIND}` = 'sweep' and tags.`{TAG_SWEEP}` = '{sweep}'")
        if found:
            return found[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=sweep,
            tags={TAG_KIND: "sweep", TAG_SWEEP: sweep, "mlflow.note.content": description},
        )
        return run.info.run_id

    def finished_cells(self) -> dict[str, Any]:
        """key -> the newest finished run of that cell."""
        runs = self._search(f"tags.`{TAG_STATUS}` = '{FINISHED}'")
        found: dict[str, Any] = {}
        for run in sorted(runs, key=lambda r: r.info.start_time):
            found[run.data.tags[TAG_CELL]] = run
        return found

    def cell_run(
        self, key: str, parent_run_id: str, tags: dict[str, str], params: dict[str, Any], kind: str = "cell"
    ) -> str:
        """Get or create the cell's run; a resumed cell keeps logging into the run it started."""
        existing = self._search(f"tags.`{TAG_CELL}` = '{key}'")
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        all_tags = {TAG_CELL: key, TAG_KIND: kind, "mlflow.parentRunId": parent_run_id, **tags}
        run = self.client.create_run(self.experiment_id, run_name=key, tags=all_tags)
        flat = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(flat), 100):
            self.client.log_batch(run.info.run_id, params=flat[i : i + 100])
        return run.info.run_id

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items()])

    def tag(self, run_id: str, key: str, value: str) -> None:
        self.client.log_batch(run_id, tags=[RunTag(key, value)])

    def finish_cell(
        self,
        run_id: str,
        final: dict[str, float],
        confusion: list[list[int]],
        class_names: list[str],
        predictions: list[dict[str, Any]],
    ) -> None:
        self.finish_run(
            run_id,
            final,
            {
                "confusion.csv": _confusion_csv(confusion, class_names),
                "confusion.json": json.dumps({"classes": class_names, "matrix": confusion}),
                "predictions.csv": _rows_csv(predictions),
            },
        )

    def finish_run(self, run_id: str, final: dict[str, float], artifacts: dict[str, str]) -> None:
        """Final metrics and artifacts first, the finished tag last: a cut-off run never looks finished."""
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in final.items()])
        if artifacts:
            with tempfile.TemporaryDirectory() as tmp:
                for name, text in artifacts.items():
                    Path(tmp, name).write_text(text)
                self.client.log_artifacts(run_id, tmp)
        self.client.log_batch(run_id, tags=[RunTag(TAG_STATUS, FINISHED)])
        self.client.set_terminated(run_id, status="FINISHED")

    def fail_cell(self, run_id: str) -> None:
        self.client.set_terminated(run_id, status="FAILED")


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
