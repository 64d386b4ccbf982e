"""Start-up marks: where a cell's first seconds go, for ``mmder bench overhead``.

A mark is one JSON line appended to the file named by ``MMDER_TIMING_FILE`` (inherited by every Ray
process of a local cluster); without that variable a mark costs one dictionary lookup. Wall-clock
``time.time()`` is used because the marks come from several processes; each mark also carries the process's
CPU seconds so far, so time spent in a stage can be told from core-seconds used (several processes on
fewer cores wait for a core inside their epochs).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "MMDER_TIMING_FILE"
_current = {"key": ""}  # the cell a worker that trains several in turn (a lane) is on


def set_current_key(key: str) -> None:
    """Marks made without a key (the training loop's) belong to ``key`` from now on."""
    _current["key"] = key


def mark(stage: str, key: str = "", at: float | None = None) -> None:
    """Record that ``stage`` happened now (or at ``at``) in this process, for cell ``key``."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps(
        {
            "stage": stage,
            "key": key or _current["key"],
            "t": time.time() if at is None else at,
            "pid": os.getpid(),
            "cpu": time.process_time(),  # this process's CPU seconds so far (all its threads)
        }
    )
    # one short write to a file opened for appending: lines of concurrent processes do not interleave
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def mark_process_start(stage: str, key: str = "") -> None:
    """Record when this process was created (read from /proc only when marks are on)."""
    if os.environ.get(ENV):
        mark(stage, key, at=process_started())


def process_started() -> float:
    """When this process was created (wall clock, to 10 ms), from /proc; now where /proc is absent."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


def read_marks(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
