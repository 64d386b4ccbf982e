"""A cell that stops making progress is noticed, restarted and, past its budget, failed as "stalled".

A stuck collective, a hung NFS read or a wedged GPU looks, from outside, like a worker that never
reports again: Ray Train has no timeout for it and the lane's devices would be held forever. So:

- **Beats** (worker side, :class:`Beats`): at the start of a cell and after each epoch, rank 0 rewrites
  ``<storage>/<key>/beat`` (a token that changes each time, and how long the epoch took); every rank
  writes ``<storage>/<key>/workers/rank<r>.json`` (its pid and node) when the cell starts.
- **The watch** (trial side, :class:`StallWatch`, polled by :func:`harness.worker.placement.fit_watched`
  in the process that runs the Train job, which a stopped worker cannot stop): a beat is progress when
  its token changed, judged on the watch's own monotonic clock (the worker's clock is never read, so
  hosts whose clocks disagree do not matter). The bound is derived from the cell's own pace:
  ``resources.stall_factor`` x its slowest epoch so far, at least ``resources.stall_floor_s``; before a
  (re)started cell's first epoch, ``resources.stall_first_epoch_s`` (data, model and one epoch).
- **Past the bound** the cell's workers are killed (SIGKILL: a stopped process takes it too; on another
  node through a Ray task pinned there), so Train restarts the worker group within the failure budget
  and the cell resumes from its newest checkpoint in the same MLflow run. The reason is written to
  the attempt folder (``stalled``), where a lane reads it when the cell runs out of starts.
- **Said**: once a cell has been quiet for half its bound, ``<storage>/stalls/<key>.json`` says for how
  long, how often it was restarted and, later, that it moves again; the sweep's progress lines and
  ``mmder status`` read it (a trial's own prints do not reach the driver's terminal).

Local (shared) storage only: on ``s3://`` there is no folder to beat in and no cell is watched.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmder.disk import write_atomic

BEAT, STALLED, WORKERS = "beat", "stalled", "workers"
STALLS_FOLDER = "stalls"  # <storage>/stalls/<key>.json: what the watch says of a quiet cell


@dataclass(frozen=True)
class StallBounds:
    """How long a cell may go without a beat (``resources.stall_*``)."""

    factor: float
    floor_s: float
    first_epoch_s: float

    @classmethod
    def of(cls, resources: Any) -> StallBounds:
        return cls(resources.stall_factor, resources.stall_floor_s, resources.stall_first_epoch_s)

    @property
    def on(self) -> bool:
        return self.factor > 0

    def bound(self, slowest_s: float | None) -> float:
        """Seconds without progress that make a cell stalled: its first epoch's ceiling, or k x its
        slowest epoch so far, never under the floor."""
        if slowest_s is None:
            return self.first_epoch_s
        return max(self.floor_s, self.factor * slowest_s)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(value))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Beats:
    """What a cell's workers write for the watch: who they are, and that they still move."""

    def __init__(self, cell_folder: Path, rank: int) -> None:
        self.folder, self.rank = cell_folder, rank
        self.count = 0
        self.last = time.monotonic()

    def start(self) -> None:
        """The cell begins in this process: every rank says where it runs; rank 0 beats."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        _write_json(self.folder / WORKERS / f"rank{self.rank}.json", {"pid": os.getpid(), "node": node})
        self._beat("start", None)

    def epoch(self, epoch: int) -> None:
        self._beat("epoch", epoch)

    def _beat(self, phase: str, epoch: int | None) -> None:
        now = time.monotonic()
        took, self.last = now - self.last, now
        if self.rank != 0:
            return
        self.count += 1
        token = f"{os.getpid()}-{self.count}"
        _write_json(
            self.folder / BEAT,
            {"token": token, "phase": phase, "epoch": epoch, "epoch_s": took if phase == "epoch" else None},
        )


def read_stall(storage: Path, key: str) -> dict[str, Any] | None:
    """What the watch last said of a cell: ``seconds`` without progress, ``bound``, ``restarts``, and
    ``quiet`` (false once it moved again); None if it never went quiet."""
    return _read_json(storage / STALLS_FOLDER / f"{key}.json")


def stalls_said(storage: Path) -> dict[str, dict[str, Any]]:
    """Every cell the watches have said something of (a folder that is usually empty)."""
    try:
        names = [p for p in (storage / STALLS_FOLDER).iterdir() if p.suffix == ".json"]
    except OSError:
        return {}
    return {p.stem: said for p in names if (said := _read_json(p)) is not None}


def describe_stall(said: dict[str, Any]) -> str:
    """One line of what the watch said, for progress and status."""
    restarts = int(said.get("restarts", 0))
    again = f"; its workers were restarted {restarts} time(s)" if restarts else ""
    if not said.get("quiet"):
        return f"moving again{again}"
    quiet = _minutes(float(said.get("seconds", 0)))
    if restarts and float(said.get("seconds", 0)) >= float(said.get("bound", 0)):
        return f"no progress for {quiet}: its workers were restarted ({restarts} so far)"
    return (
        f"no progress for {quiet} "
        f"(its workers are restarted at {_minutes(float(said.get('bound', 0)))}){again}"
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def kill_worker(pid: int, node: str | None) -> None:
    """SIGKILL a Train worker, on this node directly, on another through a task pinned to its node."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    if node is None or node == here:
        _kill(pid)
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(_kill).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)
    )
    ray.get(task.remote(pid), timeout=60)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


@dataclass
class StallWatch:
    """Polled by the trial's watchdog loop; restarts a cell's workers when it stops making progress.

    ``keys`` are the trial's cells (a lane trains them in turn; the one whose beat moved last is the
    one running), ``attempts`` their attempt folder names of this trial start.
    """

    storage: Path
    keys: list[str]
    attempts: dict[str, str]
    bounds: StallBounds
    label: str
    kill: Callable[[int, str | None], None] = kill_worker
    clock: Callable[[], float] = time.monotonic
    fired: str | None = None
    seen: dict[str, str | None] = field(default_factory=dict)
    slowest: dict[str, float] = field(default_factory=dict)
    current: str | None = None
    since: float | None = None  # when progress was last seen (None: no worker has beaten yet)
    first: bool = True  # the running cell has not finished an epoch since it (re)started
    restarts: dict[str, int] = field(default_factory=dict)
    stamps: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # key -> its beat file's stat

    def __post_init__(self) -> None:
        for key in self.keys:  # what earlier starts left is not progress of this one
            self.seen[key] = self._token(key) if self._changed(key) else None
            self._said(key).unlink(missing_ok=True)

    def _said(self, key: str) -> Path:
        return self.storage / STALLS_FOLDER / f"{key}.json"

    def _say(self, key: str, quiet: float, bound: float, moving: bool = False) -> None:
        said = {"seconds": round(quiet), "bound": round(bound), "restarts": self.restarts.get(key, 0)}
        _write_json(self._said(key), {**said, "quiet": not moving})

    def _token(self, key: str) -> str | None:
        beat = _read_json(self.storage / key / BEAT)
        return None if beat is None else str(beat.get("token"))

    def _changed(self, key: str) -> bool:
        """Whether the cell's beat file was replaced since the last look (a stat, not a read: a lane of
        5,000 cells is looked over every 2 s)."""
        try:
            st = (self.storage / key / BEAT).stat()
        except OSError:
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self.stamps.get(key) == stamp:
            return False
        self.stamps[key] = stamp
        return True

    def poll(self) -> None:
        now = self.clock()
        for key in self.keys:
            if not self._changed(key):
                continue
            beat = _read_json(self.storage / key / BEAT)
            token = None if beat is None else str(beat.get("token"))
            if token is None or token == self.seen.get(key):
                continue
            said = read_stall(self.storage, key)
            if said and said.get("quiet"):  # it had been said quiet: say it moves again
                self._say(key, float(said.get("seconds", 0)), 0.0, moving=True)
            self.seen[key], self.current, self.since = token, key, now
            assert beat is not None
            self.first = beat.get("phase") != "epoch"
            if not self.first and beat.get("epoch_s") is not None:
                self.slowest[key] = max(self.slowest.get(key, 0.0), float(beat["epoch_s"]))
        if self.since is None or self.current is None or not self.bounds.on:
            return
        key, quiet = self.current, now - self.since
        bound = self.bounds.bound(None if self.first else self.slowest.get(key))
        if quiet >= bound:
            self._restart(key, quiet, bound)
        elif quiet >= bound / 2:
            self._say(key, quiet, bound)

    def _restart(self, key: str, quiet: float, bound: float) -> None:
        pace = (
            f"its first epoch may take {_minutes(bound)} (resources.stall_first_epoch_s)"
            if self.first
            else f"{self.bounds.factor:g} x its slowest epoch, at least {_minutes(self.bounds.floor_s)}"
        )
        message = (
            f"CellStalled: {key} made no progress for {_minutes(quiet)} (bound {_minutes(bound)}: {pace}); "
            "its workers were restarted, resources.max_failures sets how often"
        )
        print(f"[{self.label}] {key}: no progress for {_minutes(quiet)}; restarting its workers", flush=True)
        self.fired = message
        self.restarts[key] = self.restarts.get(key, 0) + 1
        self._say(key, quiet, bound)
        attempt = self.attempts.get(key)
        if attempt:
            (self.storage / key / attempt).mkdir(parents=True, exist_ok=True)
            (self.storage / key / attempt / STALLED).write_text(message, encoding="utf-8")
        for record in sorted((self.storage / key / WORKERS).glob("rank*.json")):
            who = _read_json(record)
            if who and isinstance(who.get("pid"), int):
                try:
                    self.kill(who["pid"], who.get("node"))
                except Exception as err:  # noqa: BLE001 - the next poll tries again
                    print(f"[{self.label}] could not stop {record.stem} of {key}: {err}", flush=True)
        self.since, self.first = self.clock(), True  # the restarted cell's first epoch from here
