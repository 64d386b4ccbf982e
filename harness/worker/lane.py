"""The function a lane's Ray Train workers run: its cells one after another in the same processes.

Every cell is trained exactly as in a Train job of its own (:func:`harness.worker.train_loop.train_one`):
its own MLflow run, checkpoints in its own attempt folder, resume from its newest complete checkpoint.
What the lane adds is the bookkeeping that lets a cell fail alone inside a shared worker group, kept in
the cell's attempt folder of this start (``<storage>/<key>/attempt-NNN``):

- ``starts``: how many times this lane began the cell. When a cell raises or a worker dies, Train
  restarts the whole group (the lane's ``FailureConfig``) and the lane begins again: finished cells are
  skipped, the cell that was running resumes from its checkpoint. A cell begun more than
  ``resources.max_failures`` times + 1 is failed alone, with the error its ranks wrote down
  (``error-rank<r>.txt``) or, for a worker killed for memory, the OOM verdict, and the lane goes on.
- ``finished`` / ``failed``: the cell's outcome, so a restarted lane neither repeats nor re-reports it.

Rank 0 decides and broadcasts, so every rank skips, fails or trains the same cell and calls
``ray.train.report`` the same number of times. At the end of each cell rank 0 reports one line of
progress (``cell_done``), which ``TuneReportCallback`` hands to the driver's progress display.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import ray.train

from harness.plan.cells import CellJob
from harness.plan.lanes import CELL_DONE, CELL_FAILED, LaneJob
from harness.tracking.failures import fail_run
from harness.tracking.store import Tracker, error_summary
from harness.tracking.tags import FINAL_UAR, FINAL_WAR
from harness.worker.memory import memory_verdict, records_dir
from harness.worker.ranks import agree
from harness.worker.resume import drop_checkpoints, prune_cell
from harness.worker.stall import STALLED
from harness.worker.train_loop import start_worker, train_one
from mmder.disk import write_atomic
from mmder.timing import mark_process_start, set_current_key

STARTS, FINISHED_MARK, FAILED_MARK = "starts", "finished", "failed"


def train_lane(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train loop of a lane; ``config`` is its :class:`LaneJob` (with each cell's attempt folder)."""
    lane = LaneJob.model_validate(config)
    mark_process_start("worker_process", lane.jobs[0].cell.key)
    rank = ray.train.get_context().get_world_rank()
    finished: list[str] = []
    failed: list[str] = []
    for job in lane.jobs:
        key = job.cell.key
        attempt = Path(job.storage_path) / key / lane.attempts[key]
        set_current_key(key)
        decision = agree(_decide(job, attempt) if rank == 0 else None)
        if decision == FINISHED_MARK:
            finished.append(key)
            continue
        if decision is not None and decision != "run":
            failed.append(key)
            if decision != FAILED_MARK:  # failed now: say so once (a restarted lane skips it quietly)
                ray.train.report({CELL_DONE: key, CELL_FAILED: 1, "error": error_summary(decision, 3)})
            continue
        rank, memory = start_worker(job, f"mmder-{lane.name}")
        try:
            value = train_one(job, rank, memory, lane.attempts[key])
        except BaseException:
            write_atomic(attempt / f"error-rank{rank}.txt", traceback.format_exc())
            raise
        if rank == 0:  # its older epochs and attempts go now; with keep_checkpoints: none its last
            write_atomic(attempt / FINISHED_MARK, "")  # one too (the mark stays: a restarted lane skips it)
            prune_cell(attempt.parent, job.cell.world_size, current=attempt.name)
            if job.resources.keep_checkpoints == "none":
                drop_checkpoints(attempt)
        finished.append(key)
        final = {FINAL_WAR: value["war"], FINAL_UAR: value["uar"]}
        ray.train.report({CELL_DONE: key, CELL_FAILED: 0, **final})
    set_current_key("")
    return {"finished": ",".join(finished), "failed": ",".join(failed)}


def _decide(job: CellJob, attempt: Path) -> str:
    """Rank 0: "finished", "failed" (already said), "run" (counted as a start), or the error that fails
    the cell now (its run ended FAILED)."""
    if (attempt / FINISHED_MARK).exists():
        return FINISHED_MARK
    if (attempt / FAILED_MARK).exists():
        return FAILED_MARK
    starts = int(_read(attempt / STARTS) or 0)
    budget = job.resources.max_failures
    if budget < 0 or starts <= budget:
        write_atomic(attempt / STARTS, str(starts + 1))
        return "run"
    error = _why(job, attempt, starts)
    print(f"[{job.cell.key}] {error.splitlines()[-1] if error else ''}", flush=True)
    tracker = Tracker(uri=job.tracking_uri, experiment_id=job.experiment_id)
    fail_run(tracker, job.cell.key, job.parent_run_id, job.cell.kind, error)
    write_atomic(attempt / FAILED_MARK, error)
    return error


def _why(job: CellJob, attempt: Path, starts: int) -> str:
    """The error a cell failed with: what its ranks wrote, or that a worker died (of memory, if so)."""
    written = [_read(p) for p in sorted(attempt.glob("error-rank*.txt"))]
    said = "\n".join(text for text in written if text)
    stalled = _read(attempt / STALLED)
    if not said and stalled:  # its workers were killed by the stall watch, not by what they ran
        return stalled
    verdict = memory_verdict(said or "a worker died unexpectedly", records_dir(job.cell.key))
    if verdict is not None:
        return f"CellOutOfMemory: {verdict}"
    if said:
        return said
    return (
        f"WorkerGroupError: a worker of the cell died {starts} time(s) while it trained (killed by a "
        "signal, or its node was lost); resources.max_failures sets how often it is restarted"
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None
