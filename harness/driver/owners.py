"""One owner per cell: the sweep driver that runs a cell holds a lock file and a lease in its folder.

Why both: ``filelock`` (``<storage>/<key>/owner.lock``) excludes other processes on this machine and,
where the shared file system honours locks, on others; the owner file next to it (host, pid, since,
heartbeat, renewed every :data:`LEASE_SECONDS` / 3 by a thread of the driver) is what another machine
can read when locks are not shared, and what a message names. A dead owner never blocks: the kernel
drops its lock, and a lease not renewed for :data:`LEASE_SECONDS` (or a pid gone on this host) counts
as free. Remote storage (``s3://``) has no locks: there, nothing is owned (said once by the sweep).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEASE_SECONDS = float(os.environ.get("MMDER_LEASE_SECONDS", "60"))
OWNER_FILE = "owner.json"
LOCK_FILE = "owner.lock"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    since: float
    heartbeat: float

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"host {self.host}, pid {self.pid}, since {since}"

    def alive(self, now: float | None = None) -> bool:
        """Its lease is fresh and, on this host, its process exists."""
        now = time.time() if now is None else now
        if now - self.heartbeat > LEASE_SECONDS:
            return False
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return True


def read_owner(cell_dir: Path) -> Owner | None:
    try:
        return Owner(**json.loads((cell_dir / OWNER_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


class CellOwners:
    """The cells this driver owns: acquire before running, renew while running, release at the end."""

    def __init__(self, storage: str) -> None:
        self.storage = storage
        self.enabled = "://" not in storage
        self.held: dict[str, Any] = {}  # key -> FileLock
        self.me = Owner(socket.gethostname(), os.getpid(), time.time(), time.time())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
        if other is not None and (other.host, other.pid) != (self.me.host, self.me.pid) and other.alive():
            lock.release()  # another machine whose lock this file system does not share
            return other
        self.held[key] = lock
        self._write(key)
        return None

    def _write(self, key: str) -> None:
        now = time.time()
        record = {"host": self.me.host, "pid": self.me.pid, "since": self.me.since, "heartbeat": now}
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
