"""The sweep's driver: skip finished cells, own the rest, prepare data once, run them as a Tune grid.

Resuming is by construction rather than by restoring Tune state: finished cells are found in MLflow
and dropped before the grid is built (a new Tuner would otherwise re-run them all), and each remaining
cell's Train run is named by its key, so a cell cut off by a crash continues from its last checkpoint.
A finished run counts only while its identity holds (:mod:`harness.plan.provenance`: data digest,
declared versions); otherwise the cell is ``stale`` and runs again in a new run, from epoch 0: its
checkpoints belong to the older identity and are removed first. The driver owns every cell it runs
(:mod:`harness.plan.owners`), ends each run honestly (FINISHED, FAILED with its error, KILLED on
SIGINT/SIGTERM) and ends the sweep's parent run with counts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.driver.outcome import Interrupted, SweepOutcome, stopped_message
from harness.driver.stop_guard import kill_local_ray, start_guard
from harness.driver.tune_grid import run_grid
from harness.experiment.config import ExperimentConfig
from harness.plan.cells import Cell
from harness.plan.owners import CellOwners
from harness.plan.provenance import judge
from harness.plan.sweep_plan import Kind, SweepPlan, elsewhere_note, plan_run
from harness.tracking.places import store_lock
from harness.tracking.relocate import adopt_output
from harness.tracking.store import Tracker, brief, error_summary
from harness.tracking.tags import (
    CELL_COUNTS,
    FINISHED,
    TAG_ACCEPTED_STALE,
    TAG_ERROR,
    TAG_STATUS,
    TAG_SUMMARISED,
)
from harness.worker.resume import discard_attempts
from mmder.timing import mark

Echo = Callable[[str], None]
# SIGHUP (the terminal closed, an ssh connection dropped) stops a sweep like SIGTERM does
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)


def run_sweep(
    spec: ExperimentConfig,
    output: Path,
    *,
    address: str | None = None,
    verbose: bool = False,
    echo: Echo = print,
    accept_stale: bool = False,
    wait: bool = False,
    kind: Kind = "train",
) -> SweepOutcome:
    """Run every cell not finished under today's identity (``kind="pretrain"``: the MAE pre-trainings,
    one resumable cell per dataset, fold and input setting); says how it ended."""
    plan = plan_run(spec, output, kind=kind, accept_stale=accept_stale, echo=echo)
    return SweepDriver(plan, echo=echo, address=address, verbose=verbose, wait=wait).run()


@dataclass
class SweepDriver:
    """The state of one sweep invocation: its plan, store, parent run, owned cells and stop flag."""

    plan: SweepPlan
    echo: Echo = print
    address: str | None = None
    verbose: bool = False
    wait: bool = False
    tracker: Tracker | None = None
    parent: str = ""
    owners: CellOwners | None = None
    outcome: SweepOutcome = field(default_factory=SweepOutcome)
    stop: dict[str, int] = field(default_factory=dict)  # "signal": signum; "tune": Tune is running
    started: list[Cell] = field(default_factory=list)  # every cell handed to Tune
    ray_started: bool = False
    resume_hint: str = ""  # the command that resumes this sweep, said whichever way it stops
    _ended: threading.Event = field(default_factory=threading.Event)  # runs and parent ended
    _end_lock: threading.Lock = field(default_factory=threading.Lock)  # the close or the guard, not both
    _closing_ray: threading.Event = field(default_factory=threading.Event)  # the close shuts Ray down

    @property
    def what(self) -> str:
        return "cells" if self.plan.kind == "train" else "pre-training cells"

    def run(self) -> SweepOutcome:
        plan = self.plan
        plan.places.output.mkdir(parents=True, exist_ok=True)
        if _already_recorded(plan):  # a no-op rerun: nothing to run, nothing to write
            self.echo(
                f"{plan.spec.name}: {len(plan.cells)} {self.what}, {len(plan.finished)} already finished, "
                "0 to run"
            )
            return self.outcome
        self._open_store()
        self._announce()
        self._end_finished_runs()
        if not plan.todo:
            self._end_parent()
            return self.outcome
        assert self.tracker is not None
        self.tracker.client.update_run(self.parent, status="RUNNING")
        self.owners = CellOwners(plan.places.storage)
        if not self.owners.enabled:
            self.echo(
                f"storage {plan.places.storage} is remote: cells have no owner lock there; "
                "run one sweep at a time"
            )
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for s in previous:
            signal.signal(s, self._on_signal)
        try:
            self.owners.start_heartbeat()
            self._rounds()
        except Interrupted as err:
            self.stop["signal"] = err.signum
        except BaseException as err:  # Ray, preparation, Tune: the parent run must not end FINISHED
            self.outcome.error = "".join(traceback.format_exception(err))
            raise
        finally:
            self._close(previous)
        return self.outcome

    def _open_store(self) -> None:
        places, spec = self.plan.places, self.plan.spec
        with store_lock(places.tracking_uri):  # two sweeps started at once must not both create it
            moved = adopt_output(places.tracking_uri, places.output)
            if moved:
                self.echo(
                    f"this output folder was moved or copied: {moved} runs now keep their artifacts here"
                )
            self.tracker = Tracker.open(
                places.tracking_uri, spec.mlflow_experiment, artifact_root=places.artifact_root
            )
            self.parent = self.tracker.parent_run(spec.name, spec.description)

    def _end_finished_runs(self) -> None:
        """End FINISHED the runs that hold their finished tag and final metrics but were never ended."""
        unterminated = self.plan.unterminated
        if not unterminated:
            return
        assert self.tracker is not None
        for run_id in unterminated:
            self.tracker.end_run(run_id, "FINISHED")
        self.echo(
            f"{len(unterminated)} finished cell run(s) were never ended (their process died after its last "
            "write): ended FINISHED"
        )

    def _announce(self) -> None:
        """The counts, and a line for each cell that is not simply run or skipped."""
        plan = self.plan
        assert self.tracker is not None
        self.echo(
            f"{plan.spec.name}: {len(plan.cells)} {self.what}, {len(plan.finished)} already finished, "
            f"{len(plan.todo)} to run"
        )
        for line in elsewhere_note(plan):
            self.echo(line)
        for cell in plan.cells:
            state = plan.state(cell.key)
            if state.action == "stale":
                self.echo(
                    f"{cell.key}: stale ({state.why}): runs again in a new run; "
                    "the old one is kept as superseded"
                )
            elif state.action == "retry":
                self.echo(
                    f"{cell.key}: failed before ({state.why or 'see its run'}): retried in a fresh attempt"
                )
            elif state.action == "skip" and state.why and state.run_id:
                self.echo(f"{cell.key}: stale ({state.why}) but kept (--accept-stale)")
                self.tracker.tag(state.run_id, TAG_ACCEPTED_STALE, state.why)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if "signal" in self.stop:
            return
        self.stop["signal"] = signum
        self.echo(f"\nmmder: {signal.Signals(signum).name}: stopping the sweep (running cells end KILLED)")
        start_guard(self._ended, self._closing_ray, self._end_without_ray)
        if not self.stop.get("tune"):
            raise Interrupted(signum)

    def _end_without_ray(self, why: str) -> None:
        """The stop guard's way out (:mod:`harness.driver.stop_guard`): what is left of the local Ray
        killed, the cut-off runs and the parent ended through MLflow alone, the resume hint, exit."""
        with self._end_lock:
            if self._ended.is_set():
                return
            self.echo(f"mmder: {why}; ending the runs without it")
            kill_local_ray()
            self.outcome.signal = self.stop["signal"]
            try:
                self.outcome.killed = self._end_cut_off()
                self._end_parent()
            finally:
                if self.owners is not None:
                    self.owners.release_all()
                self._ended.set()
            print(stopped_message(self.outcome, self.resume_hint), file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(self.outcome.exit_code)

    def _rounds(self) -> None:
        """Run what is ours; with --wait, look again at what other sweeps run until nothing is left."""
        assert self.owners is not None
        remaining, said = list(self.plan.todo), set()
        while remaining:
            owned, others = self._take(remaining, said)
            if owned:
                self.started.extend(owned)
                self.ray_started = True
                self.stop.pop("tune", None)
                run_grid(self, owned)
                if "signal" not in self.stop:
                    for cell in owned:
                        self.owners.release(cell.key)
            if "signal" in self.stop:
                return
            remaining = [c for c in remaining if c.key in others]
            if remaining and not self.wait and not self.owners.watching:
                self.outcome.refused.update(others)
                return
            if remaining and not owned:
                time.sleep(2.0)

    def _take(self, cells: list[Cell], said: set[str]) -> tuple[list[Cell], dict[str, str]]:
        """Own what is free and say what is not; stale cells lose their old checkpoints and run."""
        owned, others, done = _own(cells, self.owners, self.tracker, self.plan)
        for key in done:
            self.echo(f"{key}: finished meanwhile by another sweep; skipped")
        for key, who in others.items():
            if key not in said:
                said.add(key)
                verb = "waiting for it" if self.wait else "refused (--wait waits for it)"
                if self.owners.watches(key):
                    verb = "watching its heartbeat"
                self.echo(f"{key}: being run by another sweep ({who}); {verb}")
        for cell in owned:
            state = self.plan.state(cell.key)
            if state.action == "run" and discard_attempts(self.plan.places.storage, cell.key):
                # no run of this experiment accounts for them (another experiment's, a renamed one's,
                # or a deleted store's): resuming them would log epochs this cell's run never had
                self.echo(f"{cell.key}: checkpoints no run of this experiment accounts for were removed")
            if state.action != "stale":
                continue
            # first its checkpoints (made from the older data or code), then its old run: a driver
            # killed in between finds the cell stale again, with nothing left to discard
            if discard_attempts(self.plan.places.storage, cell.key):
                self.echo(
                    f"{cell.key}: the older cell's checkpoints removed ({state.why}); starts at epoch 0"
                )
            if state.run_id:
                assert self.tracker is not None
                self.tracker.supersede(state.run_id, state.why)
        return owned, others

    def _close(self, previous: dict[int, Any]) -> None:
        """After a signal or a failure of the sweep itself: Ray down first (its trials and workers with
        it), then cut-off runs KILLED; always: the parent run ended with counts (FAILED with the error
        when the sweep failed), owned cells released, signal handlers restored. Unless the stop guard
        got there first (Ray gone): then it ends them and the process."""
        assert self.owners is not None
        if "signal" in self.stop:
            self.outcome.signal = self.stop["signal"]
        stopping = self.outcome.signal is not None or self.outcome.error is not None
        if stopping and self.ray_started:
            self._closing_ray.set()
            _shutdown_ray()
        try:
            with self._end_lock:
                if self._ended.is_set():
                    return
                if stopping:
                    self.outcome.killed = self._end_cut_off()
                self._end_parent()
        finally:
            self._ended.set()
            self.owners.release_all()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _end_cut_off(self) -> list[str]:
        """End KILLED every run of ours that was cut off (RUNNING or SCHEDULED), so no run lies RUNNING."""
        assert self.tracker is not None
        runs = self.tracker.cell_runs()
        killed = []
        for cell in self.started:
            found = runs.get(cell.key) or []
            if cell.key in self.outcome.failed or not found:
                continue
            run = found[0]
            if run.data.tags.get(TAG_STATUS) != FINISHED and run.info.status in ("RUNNING", "SCHEDULED"):
                self.tracker.end_run(run.info.run_id, "KILLED")
                killed.append(cell.key)
        return killed

    def _end_parent(self) -> None:
        """The sweep's parent run ends FINISHED, FAILED (a cell failed) or KILLED, with counts as metrics."""
        assert self.tracker is not None
        plan, outcome = self.plan, self.outcome
        finished = self.tracker.finished_cells()
        done = sum(1 for c in plan.cells if c.key in finished)
        values = (
            len(plan.cells),
            done,
            len(plan.finished),
            len(self.started),
            len(outcome.failed),
            len(outcome.killed),
            len(outcome.refused),
        )
        status = "KILLED" if outcome.signal else "FAILED" if outcome.failed or outcome.error else "FINISHED"
        if outcome.error:  # the error's last lines as a tag, the whole traceback as an artifact
            self.tracker.tags(self.parent, {TAG_ERROR: error_summary(outcome.error)})
            self.tracker.artifacts(self.parent, {"traceback.txt": outcome.error})
        mark("summary_start")
        if plan.kind == "train" and done and not outcome.signal:
            self._summarise()
        self.tracker.end_run(self.parent, status, dict(zip(CELL_COUNTS, values, strict=True)))
        mark("summary_end")

    def _summarise(self) -> None:
        """The parent run's params, aggregate metrics and artifacts (:mod:`harness.driver.summary`); a
        failure to write them is said and leaves the run unsummarised (the next sweep writes them),
        never keeps the parent run from ending."""
        from harness.driver.summary import summarise_parent

        assert self.tracker is not None
        try:
            summarise_parent(self.tracker, self.parent, self.plan)
        except Exception as err:  # noqa: BLE001 - the sweep's outcome stands without its summary
            self.echo(
                f"mmder: the parent run's summary was not written ({brief(err)}); the next sweep writes it"
            )


def _own(
    cells: list[Cell], owners: Any, tracker: Any, plan: SweepPlan
) -> tuple[list[Cell], dict[str, str], list[str]]:
    """Take ownership of what is free: (owned cells, key -> the live owner of each other cell,
    keys another sweep finished meanwhile). Owning a cell is followed by a second look at MLflow."""
    owned, others = [], {}
    for cell in cells:
        other = owners.acquire(cell.key)
        if other is None:
            owned.append(cell)
        else:
            others[cell.key] = other.describe()
    done = []
    if owned:
        finished = tracker.finished_cells()
        keep = []
        for cell in owned:
            run = finished.get(cell.key)
            if run is not None and judge(run.data.tags, plan.digest(cell), cell.kind).current:
                done.append(cell.key)
                owners.release(cell.key)
            else:
                keep.append(cell)
        owned = keep
    return owned, others, done


def _shutdown_ray() -> None:
    try:
        import ray

        initialized = ray.is_initialized()
    except (ImportError, AttributeError):  # a signal cut `import ray` short: it started no Ray
        return
    if initialized:
        ray.shutdown()


def _already_recorded(plan: SweepPlan) -> bool:
    """True when every cell is finished and current and the parent run already says so (its counts
    and, for a training sweep, its summary: a sweep finished before parents carried one writes it).

    Judged on the parent run planning read from the SQLite store (no MLflow import, no second read),
    so a rerun of a finished sweep costs about what planning costs; a server store, or anything left
    to run, tag or end, opens the store.
    """
    parent = plan.parent
    if parent is None or plan.todo or plan.unterminated or any(plan.state(c.key).why for c in plan.cells):
        return False
    counts = parent.data.metrics
    finished = counts.get("cells_finished") == counts.get("cells_total") == len(plan.cells)
    summarised = plan.kind != "train" or TAG_SUMMARISED in parent.data.tags
    return parent.info.status == "FINISHED" and finished and summarised
