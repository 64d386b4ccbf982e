"""The leaderboard a sweep prints at its end, kept as text beside the results.

Rendering it imports pandas, scipy and MLflow and reads every run's predictions: seconds, which a
rerun of a finished sweep should not pay to print the same table again. The text is stored with a
signature of what it was made from: the grid's cells, the finished run of each (read from the SQLite
store without MLflow) and the source of the code that renders it. Any change, a server store (not
read this way) or a missing file means the table is rendered afresh.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.experiment.config import ExperimentConfig

BOARD_FILE = "leaderboard.txt"
_RENDERERS = [
    Path(__file__).with_name("leaderboard.py"),
    Path(__file__).parents[2] / "mmder" / "eval" / "stats.py",
    Path(__file__).parents[2] / "mmder" / "eval" / "references.py",
]


def board_signature(spec: ExperimentConfig, output: Path) -> str | None:
    """What the leaderboard of ``spec`` would be made of now; None where it cannot be read cheaply."""
    from harness.plan.cells import expand_cells
    from harness.tracking.places import resolve_uri, sqlite_path
    from harness.tracking.runs import finished_by_cell, read_sqlite_runs

    path = sqlite_path(resolve_uri(spec.tracking.uri, output))
    if path is None or not path.exists():
        return None
    finished = finished_by_cell(read_sqlite_runs(path, spec.mlflow_experiment) or [])
    cells = [c.key for c in expand_cells(spec)]
    h = hashlib.sha256()
    h.update(json.dumps([[k, finished[k].info.run_id if k in finished else None] for k in cells]).encode())
    for source in _RENDERERS:
        h.update(source.read_bytes() if source.exists() else b"")
    return h.hexdigest()


def cached_board(output: Path, signature: str | None) -> str | None:
    """The stored table when it was made from exactly what ``signature`` says; else None."""
    path = output / BOARD_FILE
    if signature is None or not path.exists():
        return None
    head, _, text = path.read_text(encoding="utf-8").partition("\n")
    return text if head == f"# {signature}" else None


def store_board(output: Path, signature: str | None, text: str) -> None:
    if signature is not None:
        (output / BOARD_FILE).write_text(f"# {signature}\n{text}", encoding="utf-8")
