"""How a sweep invocation ends: its outcome, the exit code it maps to, and the exception a signal raises
before Tune runs. Every exit code of the command line is named here once; the help text and docs/running.md's
table are checked against :data:`MEANINGS` by a test."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CELL_FAILED = 1
    USAGE = 2  # a bad experiment, command line or store, found before any work
    REFUSED = 3
    SWEEP_FAILED = 4
    SIGHUP = 128 + signal.SIGHUP
    SIGINT = 128 + signal.SIGINT
    BROKEN_PIPE = 141
    SIGTERM = 128 + signal.SIGTERM

    @classmethod
    def of_signal(cls, signum: int) -> ExitCode:
        return cls(128 + signum)


# the rows of docs/running.md's table ("| code | meaning |"): one meaning per code; the signals share one row
MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "every cell finished",
    ExitCode.CELL_FAILED: "a cell failed (the rest ran; rerun to retry it)",
    ExitCode.USAGE: (
        "a bad experiment, command line or MLflow store, found before any work (or, for the result "
        "commands, no results where they looked)"
    ),
    ExitCode.REFUSED: "cells refused: another sweep owns them (`--wait` waits)",
    ExitCode.SWEEP_FAILED: (
        "the sweep itself failed (Ray, data preparation, Tune); its parent run ended `FAILED` with the error"
    ),
}
SIGNAL_MEANING = "stopped by SIGHUP / SIGINT / SIGTERM; running cells end `KILLED`; rerun to resume"
SIGNAL_CODES = (ExitCode.SIGHUP, ExitCode.SIGINT, ExitCode.SIGTERM)


def help_text() -> str:
    """The exit codes as `mmder sweep --help` lists them."""
    codes = [f"{int(code)} {text.split(' (')[0]}" for code, text in MEANINGS.items()]
    signals = " / ".join(str(int(c)) for c in SIGNAL_CODES)
    return "exit codes: " + "; ".join(codes) + f"; {signals} {SIGNAL_MEANING}"


@dataclass
class SweepOutcome:
    """How a sweep invocation ended: the CLI's exit code and message come from here."""

    failed: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # key -> who owns it
    signal: int | None = None  # SIGINT / SIGTERM / SIGHUP that stopped it
    error: str | None = None  # the traceback of what made the sweep itself fail (Ray, data, Tune)

    def __int__(self) -> int:  # the number of failed cells, as run_sweep returned before
        return len(self.failed)

    @property
    def exit_code(self) -> ExitCode:
        if self.error is not None:
            return ExitCode.SWEEP_FAILED
        if self.signal is not None:
            return ExitCode.of_signal(self.signal)
        if self.failed:
            return ExitCode.CELL_FAILED
        if self.refused:
            return ExitCode.REFUSED
        return ExitCode.OK


def stopped_message(outcome: SweepOutcome, again: str) -> str:
    """What a sweep stopped by a signal says, whichever path ended it (the graceful one or the guard)."""
    name = signal.Signals(outcome.signal).name if outcome.signal else "a signal"
    return (
        f"mmder: stopped by {name}; {len(outcome.killed)} running cell(s) ended KILLED. "
        f"Resume with: {again}  (each cell continues from its last epoch checkpoint)"
    )


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived before Tune ran: stop where we are, cleanly."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)
