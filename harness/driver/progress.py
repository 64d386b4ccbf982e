"""A line per finished cell: its key, WAR (or a pre-training's loss), elapsed time, cells left, ETA."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.plan.cells import GRID_PARAM
from harness.plan.lanes import CELL_DONE, CELL_FAILED, is_lane
from harness.tracking.tags import FINAL_LOSS, FINAL_WAR, TEST_WAR


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts finished cells and says each one; :attr:`callback` is the Tune callback that feeds it."""

    def __init__(
        self,
        total: int,
        concurrency: int,
        echo: Callable[[str], None],
        lanes: dict[str, list[str]] | None = None,
        storage: Path | None = None,
    ) -> None:
        from ray.tune import Callback

        progress = self

        class _Callback(Callback):
            def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.started[trial.trial_id] = time.monotonic()

            def on_trial_result(
                self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
            ) -> None:
                if CELL_DONE in result:  # a lane says each cell as it ends
                    progress.lane_cell(trial, result)

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.done(trial, failed=False)

            def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.done(trial, failed=True)

            def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
                progress.stalls()

        self.callback = _Callback()
        self.total, self.concurrency, self.echo = total, concurrency, echo
        self.lanes = lanes or {}  # lane name -> its cells' keys
        self.finished = 0
        self.start = time.monotonic()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.failed: list[str] = []
        self.said: dict[str, set[str]] = {}
        self.storage = storage  # local storage: where the trials' stall watches say quiet cells
        self.stalls_seen: dict[str, tuple] = {}
        self.stalls_looked = 0.0

    def stalls(self, every_s: float = 2.0) -> None:
        """Say what the trials' stall watches said of quiet cells (:mod:`harness.worker.stall`), each
        change once: a quiet cell, its restart, that it moves again."""
        from harness.worker.stall import describe_stall, stalls_said

        now = time.monotonic()
        if self.storage is None or now - self.stalls_looked < every_s:
            return
        self.stalls_looked = now
        for key, said in stalls_said(self.storage).items():
            state = (said.get("quiet"), said.get("restarts"), said.get("bound"))
            if self.stalls_seen.get(key) != state:
                self.stalls_seen[key] = state
                self.echo(f"    {key}: {describe_stall(said)}")

    def lane_cell(self, trial: Any, result: dict) -> None:
        """One cell of a lane ended (finished, or failed alone)."""
        key = str(result[CELL_DONE])
        self.said.setdefault(trial.trial_id, set()).add(key)
        if result.get(CELL_FAILED):
            error = str(result.get("error", "")).strip().splitlines()
            self._fail(trial, key, "FAILED (its run holds the error)")
            if error:
                self.echo(f"    {error[-1]}")
        else:
            self._say(trial, key, _what(result))

    def done(self, trial: Any, failed: bool) -> None:
        job = trial.config[GRID_PARAM]
        if is_lane(job):  # a lane: its cells were said as they ended; those it never reached failed
            for key in self.lanes.get(job["lane"], []):
                if failed and key not in self.said.get(trial.trial_id, set()):
                    self._fail(trial, key, f"FAILED (see {_error_file(trial)})")
        elif failed:
            self._fail(trial, job["cell"]["key"], f"FAILED (see {_error_file(trial)})")
        else:
            self._say(trial, job["cell"]["key"], _what(trial.last_result or {}))

    def _fail(self, trial: Any, key: str, what: str) -> None:
        self.failed.append(key)
        self._say(trial, key, what)

    def _say(self, trial: Any, key: str, what: str) -> None:
        self.finished += 1
        now = time.monotonic()
        elapsed = now - self.start
        self.durations.append(now - self.started.get(trial.trial_id, self.start))
        self.started[trial.trial_id] = now  # a lane's next cell starts now
        left = self.total - self.finished
        # Cells run `concurrency` at a time and finish in waves: the mean cell time per wave left.
        eta = sum(self.durations) / len(self.durations) * math.ceil(left / self.concurrency)
        self.echo(
            f"[{self.finished}/{self.total}] {key}  {what}  elapsed {hms(elapsed)}  "
            f"{left} left  ETA {hms(eta)}"
        )


def _what(result: dict) -> str:
    if FINAL_LOSS in result:  # a pre-training
        return f"loss {result[FINAL_LOSS]:.4f}"
    war = result.get(FINAL_WAR, result.get(TEST_WAR))
    return f"WAR {war:5.1f}" if isinstance(war, int | float) else "WAR   n/a"


def _error_file(trial: Any) -> Path | str:
    # the copy under the output folder outlives Ray's temporary session folder
    return Path(trial.path) / "error.txt" if trial.path else trial.error_file
