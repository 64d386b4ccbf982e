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

from harness.plan.sweep_plan import SweepPlan

BOARD_FILE = "leaderboard.txt"
# The code that renders the table: every module of the results package and of mmder's statistics (the
# leaderboard's computation, its text, protocol line, seed and speaker intervals live in several since
# the leaderboard was split; a list of three files missed a change to the others).
_RENDERERS = (Path(__file__).parent, Path(__file__).parents[2] / "mmder" / "eval")


def _renderer_sources() -> list[Path]:
    return sorted(p for folder in _RENDERERS for p in folder.glob("*.py"))


def board_signature(plan: SweepPlan) -> str | None:
    """What the plan's leaderboard would be made of now; None where it cannot be read cheaply."""
    from harness.tracking.places import sqlite_path
    from harness.tracking.runs import finished_by_cell, read_sqlite_runs

    path = sqlite_path(plan.places.tracking_uri)
    if path is None or not path.exists():
        return None
    finished = finished_by_cell(read_sqlite_runs(path, plan.spec.mlflow_experiment) or [])
    cells = [c.key for c in plan.cells]
    h = hashlib.sha256()
    h.update(json.dumps([[k, finished[k].info.run_id if k in finished else None] for k in cells]).encode())
    for source in _renderer_sources():
        h.update(source.read_bytes())
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
