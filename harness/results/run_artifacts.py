"""What finished cells logged (predictions, confusion matrices, learning curves), read in bulk.

Every read command of a 10,000-cell sweep reads all of it, so nothing here costs a store round trip per
run where the embedded store is in use: artifacts are files of the output folder (found through
:func:`harness.tracking.artifacts.local_artifact_dir`, so a moved or copied output reads its own),
predictions come from the output's :class:`~harness.results.predictions_table.PredictionsTable`, and
metric histories from one SQLite query. A tracking server's runs are read through MLflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from harness.results.predictions_table import RUN_ID, PredictionsTable, read_predictions_csv
from harness.tracking.artifacts import local_artifact_dir
from harness.tracking.places import sqlite_path
from harness.tracking.runs import read_only
from harness.tracking.tags import LEGACY_EPOCH_NAMES


class RunArtifacts:
    """Artifacts and metric histories of one experiment's runs (``run id -> artifact URI`` known)."""

    def __init__(self, uri: str, output: Path | None, artifact_uris: dict[str, str]) -> None:
        self.uri = uri
        self.output = output
        self.artifact_uris = artifact_uris
        self.table = PredictionsTable(output)
        self._texts: dict[tuple[str, str], str | None] = {}
        self._client: Any = None

    # ------------------------------------------------------------------ files

    def _text(self, run_id: str, name: str) -> str | None:
        key = (run_id, name)
        if key not in self._texts:
            self._texts[key] = self._read(run_id, name)
        return self._texts[key]

    def _read(self, run_id: str, name: str) -> str | None:
        folder = local_artifact_dir(self.artifact_uris.get(run_id), self.output)
        if folder is not None:
            try:
                return (folder / name).read_text(encoding="utf-8")
            except OSError:
                return None
        return self._download(run_id, name)

    def _download(self, run_id: str, name: str) -> str | None:
        """Through MLflow: a tracking server's artifacts (one round trip each)."""
        import tempfile

        # one progress bar per tiny artifact would bury the table on stderr
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                return Path(self.client.download_artifacts(run_id, name, tmp)).read_text(encoding="utf-8")
        except Exception:  # noqa: BLE001 - a run without the artifact is reported, not fatal
            return None

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    # ------------------------------------------------------------------ predictions

    def _read_predictions(self, run_id: str) -> pd.DataFrame | None:
        text = self._text(run_id, "predictions.csv")
        self._texts.pop((run_id, "predictions.csv"), None)  # the table keeps them from here on
        return read_predictions_csv(text) if text else None

    def predictions(self, run_id: str) -> pd.DataFrame | None:
        rows = self.predictions_of([run_id])
        if rows.empty:
            return None
        return rows.drop(columns=RUN_ID).dropna(axis=1, how="all").reset_index(drop=True)

    def predictions_of(self, run_ids: list[str]) -> pd.DataFrame:
        """The predictions of many runs in one frame with a ``run_id`` column; a run without
        predictions has no rows."""
        if run_ids and local_artifact_dir(self.artifact_uris.get(run_ids[0]), self.output) is None:
            _ = self.client  # made once, before the table's readers share it
        return self.table.rows(run_ids, self._read_predictions)

    # ------------------------------------------------------------------ confusion, curves

    def confusion(self, run_id: str) -> dict[str, Any] | None:
        text = self._text(run_id, "confusion.json")
        return json.loads(text) if text else None

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return self.histories([run_id], metric).get(run_id, [])

    def histories(self, run_ids: list[str], metric: str) -> dict[str, list[tuple[int, float]]]:
        """run id -> (step, value) of a per-epoch metric, also under its old name (older runs, or a run
        resumed across the rename), the new name winning a step both hold; one query on SQLite."""
        names = [n for n in (LEGACY_EPOCH_NAMES.get(metric), metric) if n is not None]
        path = sqlite_path(self.uri)
        rows = (
            _sqlite_histories(path, run_ids, names)
            if path is not None
            else self._client_histories(run_ids, names)
        )
        steps: dict[str, dict[int, float]] = {}
        for name in names:  # the old name first: the new one overwrites a step both hold
            for run_id, step, value in rows.get(name, []):
                steps.setdefault(run_id, {})[step] = value
        return {run_id: sorted(s.items()) for run_id, s in steps.items()}

    def _client_histories(
        self, run_ids: list[str], names: list[str]
    ) -> dict[str, list[tuple[str, int, float]]]:
        out: dict[str, list[tuple[str, int, float]]] = {}
        for name in names:
            for run_id in run_ids:
                for m in self.client.get_metric_history(run_id, name):
                    out.setdefault(name, []).append((run_id, m.step, m.value))
        return out


def _sqlite_histories(
    path: Path, run_ids: list[str], names: list[str]
) -> dict[str, list[tuple[str, int, float]]]:
    """(run, step, value) of each metric name, the last logged value of a step winning (a resumed
    run can log a step twice)."""
    if not path.exists() or not run_ids:
        return {}
    out: dict[str, list[tuple[str, int, float]]] = {}
    with read_only(path) as db:
        db.execute("create temp table wanted (run_uuid text primary key)")
        db.executemany("insert or ignore into wanted values (?)", [(r,) for r in run_ids])
        marks = ",".join("?" * len(names))
        for key, run_id, step, value in db.execute(
            "select m.key, m.run_uuid, m.step, m.value from metrics m "
            f"join wanted w on w.run_uuid = m.run_uuid where m.key in ({marks}) order by m.timestamp",
            names,
        ):
            out.setdefault(key, []).append((run_id, int(step), float(value)))
    return out
