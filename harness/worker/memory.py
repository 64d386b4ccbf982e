"""Memory of Train workers: a kernel-enforced limit per worker where the node allows, and a verdict that
says "out of memory" (with the limit) when a worker was killed for it.

Why: a worker killed by the kernel's OOM killer dies by SIGKILL, and Ray reports only that the actor
died. Each worker writes down which memory cgroup it runs in and how many OOM kills that cgroup had
counted; after a failed fit, the trial reads the counters again, and a rise is a memory death, said
with the limit that was hit. With ``resources.memory_per_worker_gb`` each worker moves itself into a
cgroup of its own with that limit (cgroup v1, or a delegated v2 tree), so a runaway cell is killed
alone instead of the node's processes at random. Ray's memory monitor kills are recognised from Ray's
own message.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63
GIB = 1 << 30
_RAY_MONITOR = re.compile(r"running low on memory|killed by the memory monitor|OutOfMemoryError", re.I)
_RAY_DETAIL = re.compile(r"Memory on the node[^\n]*?threshold of [0-9.]+", re.I)
_DIED = re.compile(
    r"SIGKILL|died unexpectedly|ActorDiedError|WorkerGroupError|exit(?:ed)? (?:code|with)", re.I
)


class CannotConfine(OSError):
    """This node does not let a process put itself under a memory limit (no writable memory cgroup)."""


@dataclass(frozen=True)
class MemoryCgroup:
    """A memory cgroup, v1 (``memory.limit_in_bytes``) or v2 (``memory.max``)."""

    path: Path
    version: int

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def limit(self) -> int | None:
        """This cgroup's own limit in bytes; None when it has none."""
        raw = self._read("memory.limit_in_bytes" if self.version == 1 else "memory.max").strip()
        if raw == "max" or int(raw) >= UNLIMITED:
            return None
        return int(raw)

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer killed in this cgroup (and below it) so far."""
        text = self._read("memory.oom_control" if self.version == 1 else "memory.events")
        found = re.search(r"^oom_kill (\d+)$", text, re.M)
        return int(found.group(1)) if found else 0

    def effective_limit(self) -> tuple[int, Path] | None:
        """The tightest limit on this cgroup or an ancestor, and whose it is."""
        best: tuple[int, Path] | None = None
        root = V1_ROOT if self.version == 1 else V2_ROOT
        cg: MemoryCgroup = self
        while True:
            try:
                limit = cg.limit()
            except (OSError, ValueError):
                limit = None
            if limit is not None and (best is None or limit < best[0]):
                best = (limit, cg.path)
            if cg.path == root or root not in cg.path.parents:
                return best
            cg = MemoryCgroup(cg.path.parent, self.version)


def current_cgroup(pid: int | str = "self") -> MemoryCgroup | None:
    """The memory cgroup a process runs in, or None where the node shows none."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            found = V1_ROOT / path.lstrip("/")
            if (found / "memory.limit_in_bytes").exists():
                return MemoryCgroup(found, 1)
    for line in lines:
        if line.startswith("0::"):
            found = V2_ROOT / line[3:].lstrip("/")
            if (found / "memory.max").exists():
                return MemoryCgroup(found, 2)
    return None


def confine(limit_bytes: int, name: str) -> MemoryCgroup:
    """Move this process into a new child cgroup limited to ``limit_bytes``; raise CannotConfine."""
    here = current_cgroup()
    if here is None:
        raise CannotConfine("no memory cgroup is visible under /sys/fs/cgroup")
    child = MemoryCgroup(here.path / name, here.version)
    try:
        child.path.mkdir(exist_ok=True)
        if child.version == 1:
            (child.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            try:  # count what this process already holds against the new limit too
                (child.path / "memory.move_charge_at_immigrate").write_text("3")
            except OSError:
                pass
        else:
            (child.path / "memory.max").write_text(str(limit_bytes))
            (child.path / "memory.swap.max").write_text("0")
        (child.path / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as err:
        release(child)
        reason = err.strerror or str(err)
        raise CannotConfine(f"cannot make a memory cgroup under {here.path} ({reason})") from None
    return child


def confinable() -> str | None:
    """Why a worker could not limit its memory here (None: it can), found without moving this process."""
    here = current_cgroup()
    if here is None:
        return "no memory cgroup is visible under /sys/fs/cgroup"
    probe = MemoryCgroup(here.path / f"mmder-probe-{os.getpid()}", here.version)
    try:
        probe.path.mkdir()
        (probe.path / ("memory.limit_in_bytes" if probe.version == 1 else "memory.max")).write_text(str(GIB))
    except OSError as err:
        return f"cannot make a memory cgroup under {here.path} ({err.strerror or err})"
    finally:
        release(probe)
    return None


def release(cgroup: MemoryCgroup) -> None:
    """Remove a cgroup :func:`confine` made, once nothing runs in it (never raises)."""
    try:
        cgroup.path.rmdir()
    except OSError:
        pass


@dataclass(frozen=True)
class WorkerMemory:
    """What a worker wrote down at its start, for the verdict after it died."""

    rank: int
    pid: int
    host: str
    cgroup: str | None
    version: int
    oom_kills: int
    limit_bytes: int | None
    limit_from: str | None  # resources.memory_per_worker_gb, or the cgroup whose limit applies
    confined: bool


def records_dir(key: str) -> Path:
    """Where the workers of a cell on this node write their records: node-local, like the cgroups."""
    return Path(tempfile.gettempdir()) / "mmder-memory" / key


def watch_worker(records: Path, rank: int, limit_gb: float | None, name: str) -> WorkerMemory:
    """Called once by each Train worker: confine it when asked, write its record, say what holds."""
    cgroup, confined, note = None, False, ""
    if limit_gb is not None:
        try:
            cgroup, confined = confine(int(limit_gb * GIB), name), True
        except CannotConfine as err:
            note = f"; not enforced here: {err}"
    cgroup = cgroup or current_cgroup()
    limit = cgroup.effective_limit() if cgroup else None
    record = WorkerMemory(
        rank=rank,
        pid=os.getpid(),
        host=socket.gethostname(),
        cgroup=str(cgroup.path) if cgroup else None,
        version=cgroup.version if cgroup else 0,
        oom_kills=cgroup.oom_kills() if cgroup else 0,
        limit_bytes=limit[0] if limit else None,
        limit_from=("resources.memory_per_worker_gb" if confined else str(limit[1])) if limit else None,
        confined=confined,
    )
    if limit_gb is not None:
        said = " (enforced)" if confined else note
        print(f"rank {rank}: memory limit {limit_gb:g} GiB{said}", flush=True)
    records.mkdir(parents=True, exist_ok=True)
    (records / f"rank-{rank}-pid-{record.pid}.json").write_text(json.dumps(asdict(record)))
    return record


def _read_records(records: Path) -> list[WorkerMemory]:
    found = []
    for path in sorted(records.glob("rank-*.json")) if records.is_dir() else []:
        try:
            found.append(WorkerMemory(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return found


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def memory_verdict(error_text: str, records: Path) -> str | None:
    """One line saying the cell died of memory, and the limit it hit; None when it did not.

    Reads Ray's memory-monitor message, then the OOM-kill counters of the cgroups the workers wrote down
    on this host. A rise in a cgroup a worker made for itself is its own death; a rise in a shared
    cgroup counts only when Ray says a worker died.
    """
    if _RAY_MONITOR.search(error_text):
        detail = _RAY_DETAIL.search(error_text)
        return "out of memory: Ray's memory monitor killed a worker of the cell" + (
            f" ({detail.group(0)}; RAY_memory_usage_threshold sets it)" if detail else ""
        )
    here = socket.gethostname()
    for rec in _read_records(records):
        if rec.cgroup is None:
            continue
        if rec.host != here or not (rec.confined or _DIED.search(error_text)):
            continue
        try:
            kills = MemoryCgroup(Path(rec.cgroup), rec.version).oom_kills()
        except OSError:
            continue
        if kills > rec.oom_kills:
            limit = (
                f"its limit of {_gib(rec.limit_bytes)} ({rec.limit_from})"
                if rec.limit_bytes is not None
                else "no cgroup limit: the node itself ran out"
            )
            return f"out of memory: the kernel's OOM killer killed rank {rec.rank} (pid {rec.pid}) at {limit}"
    return None


def release_records(records: Path) -> None:
    """Remove the cgroups the cell's workers made for themselves, and their records (never raises)."""
    here = socket.gethostname()
    for rec in _read_records(records):
        if rec.confined and rec.cgroup and rec.host == here:
            release(MemoryCgroup(Path(rec.cgroup), rec.version))
    for path in records.glob("rank-*.json") if records.is_dir() else []:
        path.unlink(missing_ok=True)
