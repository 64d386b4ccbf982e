"""A line per finished cell: its key, WAR (or a pre-training's loss), elapsed time, cells left, ETA."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.plan.cells import GRID_PARAM
from harness.tracking.tags import FINAL_LOSS, FINAL_WAR, TEST_WAR


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts finished cells and says each one; :attr:`callback` is the Tune callback that feeds it."""

    def __init__(self, total: int, concurrency: int, echo: Callable[[str], None]) -> None:
        from ray.tune import Callback

        progress = self

        class _Callback(Callback):
            def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.started[trial.trial_id] = time.monotonic()

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.done(trial, failed=False)

            def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.done(trial, failed=True)

        self.callback = _Callback()
        self.total, self.concurrency, self.echo = total, concurrency, echo
        self.finished = 0
        self.start = time.monotonic()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.failed: list[str] = []

    def done(self, trial: Any, failed: bool) -> None:
        self.finished += 1
        key = trial.config[GRID_PARAM]["cell"]["key"]
        now = time.monotonic()
        elapsed = now - self.start
        self.durations.append(now - self.started.get(trial.trial_id, self.start))
        left = self.total - self.finished
        # Cells run `concurrency` at a time and finish in waves: the mean cell time per wave left.
        eta = sum(self.durations) / len(self.durations) * math.ceil(left / self.concurrency)
        result = trial.last_result or {}
        if failed:
            self.failed.append(key)
            # the copy under the output folder outlives Ray's temporary session folder
            what = f"FAILED (see {Path(trial.path) / 'error.txt' if trial.path else trial.error_file})"
        elif FINAL_LOSS in result:  # a pre-training
            what = f"loss {result[FINAL_LOSS]:.4f}"
        else:
            war = result.get(FINAL_WAR, result.get(TEST_WAR))
            what = f"WAR {war:5.1f}" if isinstance(war, int | float) else "WAR   n/a"
        self.echo(
            f"[{self.finished}/{self.total}] {key}  {what}  elapsed {hms(elapsed)}  "
            f"{left} left  ETA {hms(eta)}"
        )
