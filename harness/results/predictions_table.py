"""Every finished run's predictions in one columnar table beside the results, so reads stay flat.

Reading 10,000 cells' ``predictions.csv`` one by one costs a file (or an MLflow round trip) each, for
every leaderboard, compare and report. The table keeps them as Parquet parts under
``<output>/predictions/``, each row carrying the ``run_id`` it came from. A run's predictions never
change once it is finished (they are logged before its finished tag, and a rerun of a cell is a new
run), so the run id is the whole cache key: a reader adds the runs the table lacks as one new part,
and merges the parts into one when they pile up. Nothing here decides which runs count: the caller
asks for the finished runs it read from the store, so a superseded run's rows are simply never asked
for. A folder that cannot be written (a read-only copy) is read as it is, the rest from the artifacts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

TABLE_DIR = "predictions"
RUN_ID = "run_id"
MAX_PARTS = 16  # past this many parts, a reader merges them into one
TEXT_COLUMNS = ("clip_id", "speaker", "true", "predicted")


def read_predictions_csv(text: str) -> pd.DataFrame:
    """A run's ``predictions.csv`` with its labels and ids as text (a speaker ``01`` stays ``01``)."""
    import io

    return pd.read_csv(io.StringIO(text), dtype={c: str for c in TEXT_COLUMNS})


READERS = 8  # runs whose predictions are read at once
ADD_CHUNK = 1000  # runs per part written while the table is filled


class PredictionsTable:
    """The Parquet parts of one output folder, loaded once per process."""

    def __init__(self, output: Path | None) -> None:
        self.folder = Path(output) / TABLE_DIR if output is not None else None
        self._rows: pd.DataFrame | None = None  # every row loaded so far (run_id column included)
        self._runs: set[str] = set()
        self._absent: set[str] = set()  # runs looked for without predictions: not looked for again

    def rows(self, run_ids: Iterable[str], read_one: Callable[[str], pd.DataFrame | None]) -> pd.DataFrame:
        """The predictions of ``run_ids`` (rows of runs without predictions are absent), in table order;
        runs the table lacks are read with ``read_one`` and added to it."""
        wanted = list(dict.fromkeys(run_ids))
        if self._rows is None:
            self._load()
        missing = [r for r in wanted if r not in self._runs and r not in self._absent]
        if missing:
            self._add(missing, read_one)
        rows = self._rows if self._rows is not None else pd.DataFrame(columns=[RUN_ID])
        return rows[rows[RUN_ID].isin(set(wanted))]

    def _parts(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("part-*.parquet"))

    def _load(self) -> None:
        frames, read = [], []
        for part in self._parts():
            try:
                frame = pd.read_parquet(part)
            except Exception:  # noqa: BLE001 - a damaged part is read again from the artifacts
                continue
            frames.append(frame[~frame[RUN_ID].isin(self._runs)])  # a run two readers added: once
            self._runs.update(frame[RUN_ID].unique())
            read.append(part)
        self._rows = _concat(frames)
        if len(read) > MAX_PARTS:
            self._write(self._rows, replaces=read)

    def _add(self, run_ids: list[str], read_one: Callable[[str], pd.DataFrame | None]) -> None:
        """Read the runs the table lacks, several at a time (a tracking server's artifacts are a round trip
        each: 2,000 of them one after another took minutes), and keep them in parts of ADD_CHUNK runs, so
        a read cut short keeps what it had read."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=READERS) as pool:
            for start in range(0, len(run_ids), ADD_CHUNK):
                chunk = run_ids[start : start + ADD_CHUNK]
                frames = []
                for run_id, pred in zip(chunk, pool.map(read_one, chunk), strict=True):
                    if pred is None:
                        self._absent.add(run_id)
                    else:
                        frames.append(pred.assign(**{RUN_ID: run_id}))
                if not frames:
                    continue
                added = _concat(frames)
                self._runs.update(added[RUN_ID].unique())
                self._rows = _concat([self._rows, added]) if self._rows is not None else added
                self._write(added)

    def _write(self, frame: pd.DataFrame, replaces: list[Path] | None = None) -> None:
        """A new part, written whole under a temporary name first (readers never see half a part); it
        ``replaces`` the parts it merged (only those: another reader's newer part stays)."""
        if self.folder is None or frame.empty:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{pd.Timestamp.now('UTC').strftime('%Y%m%d%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
            tmp = self.folder / f".{name}.tmp"
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, self.folder / f"{name}.parquet")
            for part in replaces or []:
                part.unlink(missing_ok=True)
        except OSError:  # a read-only or full output: this reader keeps its rows in memory
            return


def _concat(frames: list[pd.DataFrame | None]) -> pd.DataFrame:
    kept = [f for f in frames if f is not None and not f.empty]
    if not kept:
        return pd.DataFrame(columns=[RUN_ID, *TEXT_COLUMNS])
    return pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0].reset_index(drop=True)
