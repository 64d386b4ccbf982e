"""Ending a cell's run FAILED with its error, from the driver (a Train job that failed) or from a lane's
rank 0 (a cell that used up its restarts while its lane went on)."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from harness.tracking.tags import FINISHED, KIND_CELL, TAG_STATUS

if TYPE_CHECKING:
    from harness.tracking.store import Tracker


def fail_run(tracker: Tracker, key: str, parent: str, kind: str, error: BaseException | str) -> None:
    """End the cell's run FAILED with its error; a cell that failed before its worker made a run gets one."""
    text = "".join(traceback.format_exception(error)) if isinstance(error, BaseException) else str(error)
    runs = tracker.runs_of(key)
    if runs and runs[0].info.status != "FAILED" and runs[0].data.tags.get(TAG_STATUS) != FINISHED:
        run_id = runs[0].info.run_id
    else:
        run_id, _ = tracker.cell_run(
            key, parent, tags={}, params={}, kind=KIND_CELL if kind == "train" else kind
        )
    tracker.fail_cell(run_id, text)
