"""How a sweep invocation ends, and the exception a signal raises before Tune runs."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field


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


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived before Tune ran: stop where we are, cleanly."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)
