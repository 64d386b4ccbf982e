"""One owner per cell: the sweep driver that runs a cell holds a lock file and a lease in its folder.

Why both: ``filelock`` (``<storage>/<key>/owner.lock``) excludes other processes on this machine and,
where the shared file system honours locks, on others; the owner file next to it (host, pid, since,
heartbeat and a beat counter, renewed every :data:`LEASE_SECONDS` / 3 by a thread of the driver) is
what another machine can read when locks are not shared, and what a message names. A dead owner never
blocks: the kernel drops its lock, a pid gone on this host is free at once, and an owner on another host
is free once its record has not changed for :data:`LEASE_SECONDS` of the reader's own clock. Another
host's timestamps are never compared with ours for that verdict: a dead owner whose clock runs hours
ahead would block for hours, and a live one whose clock runs behind would look expired at once.
Remote storage (``s3://``) has no locks: there, nothing is owned (said once by the sweep).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

LEASE_SECONDS = float(os.environ.get("MMDER_LEASE_SECONDS", "60"))
OWNER_FILE = "owner.json"
LOCK_FILE = "owner.lock"


SKEW_SECONDS = 5.0  # a heartbeat further ahead of this host's clock than this is clock skew


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    since: float
    heartbeat: float
    beat: int = 0  # renewals so far: what a reader on another clock watches advance
    note: str = ""  # what the reader could not yet decide (clock skew, a lease being watched)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"host {self.host}, pid {self.pid}, since {since}" + (f"; {self.note}" if self.note else "")

    @property
    def local(self) -> bool:
        return self.host == socket.gethostname()

    def skew(self, now: float | None = None) -> float:
        """Seconds its last heartbeat lies ahead of this host's clock (0 when not ahead)."""
        now = time.time() if now is None else now
        ahead = self.heartbeat - now
        return ahead if ahead > SKEW_SECONDS else 0.0

    def alive(self, now: float | None = None) -> bool:
        """One look, for readers (status, disk): on this host, its process exists and its lease is fresh;
        on another host, its lease looks fresh or its clock runs ahead of ours (one look cannot tell a
        dead owner ahead of us from a live one: the sweep's :class:`CellOwners` watches its beat)."""
        now = time.time() if now is None else now
        if self.local:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
            return now - self.heartbeat <= LEASE_SECONDS
        return self.skew(now) > 0 or now - self.heartbeat <= LEASE_SECONDS

    def record(self) -> tuple[float, int]:
        return (self.heartbeat, self.beat)


def read_owner(cell_dir: Path) -> Owner | None:
    try:
        return Owner(**json.loads((cell_dir / OWNER_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


class CellOwners:
    """The cells this driver owns: acquire before running, renew while running, release at the end."""

    def __init__(self, storage: str) -> None:
        self.storage = storage
        self.enabled = "://" not in storage
        self.held: dict[str, Any] = {}  # key -> FileLock
        self.me = Owner(socket.gethostname(), os.getpid(), time.time(), time.time())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beats = 0
        # key -> (the other host's record as first seen unchanged, when this host's monotonic clock saw it)
        self._watched: dict[str, tuple[tuple[float, int], float]] = {}

    @property
    def watching(self) -> bool:
        """Some cell's owner is on another host and has not yet been seen to advance or to stop."""
        return bool(self._watched)

    def watches(self, key: str) -> bool:
        return key in self._watched

    def _dir(self, key: str) -> Path:
        return Path(self.storage) / key

    def acquire(self, key: str) -> Owner | None:
        """Own ``key``; returns None when owned now, else the live owner that holds it."""
        if not self.enabled or key in self.held:
            return None
        from filelock import FileLock, Timeout

        cell_dir = self._dir(key)
        cell_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(cell_dir / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            other = read_owner(cell_dir)
            return other or Owner("unknown host", -1, time.time(), time.time())
        other = read_owner(cell_dir)
        if other is not None and (other.host, other.pid) != (self.me.host, self.me.pid):
            verdict = self._judge(key, other)
            if verdict is not None:
                lock.release()  # another machine whose lock this file system does not share
                return verdict
        self._watched.pop(key, None)
        self.held[key] = lock
        self._write(key)
        return None

    def _judge(self, key: str, other: Owner) -> Owner | None:
        """The owner if it may be alive (with a note while undecided), None if it is dead.

        On this host the pid decides. On another, the record must change within LEASE_SECONDS of our
        own monotonic clock; a lease that looks fresh on our clock counts as alive at once (clocks that
        agree are the common case and need no wait)."""
        if other.local:
            return other if other.alive() else None
        now, seen = time.monotonic(), self._watched.get(key)
        if seen is not None and seen[0] != other.record():
            self._watched.pop(key)  # it advanced while we watched: alive, whatever its clock says
            return other
        ahead = other.skew()
        if seen is None and not ahead and time.time() - other.heartbeat <= LEASE_SECONDS:
            return other
        if seen is None:
            self._watched[key] = seen = (other.record(), now)
        waited = now - seen[1]
        if waited > LEASE_SECONDS:
            self._watched.pop(key)
            return None  # unchanged for a whole lease on our clock: dead, whatever its clock said
        why = (
            f"its clock runs {_hours(ahead)} ahead of this host's (clock skew)"
            if ahead
            else "its lease looks expired on this host's clock"
        )
        left = LEASE_SECONDS - waited
        return replace(other, note=f"{why}; taken over unless its heartbeat advances within {left:.0f} s")

    def _write(self, key: str) -> None:
        now = time.time()
        self._beats += 1
        record = {
            "host": self.me.host,
            "pid": self.me.pid,
            "since": self.me.since,
            "heartbeat": now,
            "beat": self._beats,
        }
        tmp = self._dir(key) / f".{OWNER_FILE}.{self.me.pid}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self._dir(key) / OWNER_FILE)

    def start_heartbeat(self) -> None:
        if self._thread is None and self.enabled:
            self._thread = threading.Thread(target=self._beat, name="mmder-owner-lease", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            for key in list(self.held):
                try:
                    self._write(key)
                except OSError:
                    pass

    def release(self, key: str) -> None:
        lock = self.held.pop(key, None)
        if lock is None:
            return
        owner = read_owner(self._dir(key))
        if owner is not None and (owner.host, owner.pid) == (self.me.host, self.me.pid):
            (self._dir(key) / OWNER_FILE).unlink(missing_ok=True)
        lock.release()

    def release_all(self) -> None:
        self._stop.set()
        for key in list(self.held):
            self.release(key)
