"""A stop that ends in time even when the signal took Ray down with it.

Why: Slurm at a time limit (and ``timeout``, ``kill -TERM -- -PGID``) signals every process of the job.
A local Ray's GCS, raylet and workers share the driver's process group, so they die at once, and the
graceful stop (Tune stops its trials, then Ray shuts down) waits on a GCS that is gone: Ray's core
worker gave up after 60 s and aborted the driver, leaving the parent run and the running cells RUNNING.

The guard starts with the first stop signal and watches: when the local Ray's head processes are gone,
or the graceful stop has not ended within :data:`GRACE_SECONDS`, it ends the cut-off runs KILLED and
the parent run itself (through MLflow, which needs no Ray), kills what is left of the local Ray, says
how to resume, and exits with 128 + the signal, well inside a scheduler's grace (Slurm's KillWait is
30 s by default).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

GRACE_SECONDS = float(os.environ.get("MMDER_STOP_GRACE_SECONDS", "20"))
POLL_SECONDS = 0.2


def local_head_alive() -> bool | None:
    """Whether every process of the Ray head this driver started still runs: None when it started none
    (a cluster's head, or Ray not started), which a guard cannot watch.

    Any of them counts: on SIGTERM the GCS and raylet linger in their own shutdown for seconds (while
    no longer serving), but the dashboard and log monitor exit at once, so a signal that reached the
    whole process group shows within a poll."""
    if "ray" not in sys.modules:
        return None
    try:
        from ray._private import worker

        node = worker._global_node
        processes = [p for ps in node.all_processes.values() for p in ps] if node is not None else []
    except Exception:  # noqa: BLE001 - a private API: when it moves, the deadline still holds
        return None
    if not processes:
        return None
    return all(p.process.poll() is None for p in processes)


def kill_local_ray() -> None:
    """Kill the local Ray's processes outright (no graceful round trip through a GCS that may be gone)."""
    try:
        from ray._private import worker

        node = worker._global_node
        if node is not None and node.head:
            node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
    except Exception:  # noqa: BLE001 - whatever is left dies with its raylet's socket
        pass


def start_guard(
    done: threading.Event, closing_ray: threading.Event, end_without_ray: Callable[[str], None]
) -> threading.Thread:
    """Watch the graceful stop; call ``end_without_ray(why)`` (which exits) if Ray is gone or it takes
    too long. ``done`` is set by the graceful path when it has ended the runs itself; ``closing_ray``
    when it shuts Ray down itself (the head's processes then end on purpose)."""

    def watch() -> None:
        deadline = time.monotonic() + GRACE_SECONDS
        while not done.wait(POLL_SECONDS):
            if not closing_ray.is_set() and local_head_alive() is False:
                return end_without_ray("Ray's processes went down with the signal")
            if time.monotonic() > deadline:
                return end_without_ray(f"the graceful stop took over {GRACE_SECONDS:.0f} s")

    thread = threading.Thread(target=watch, name="mmder-stop-guard", daemon=True)
    thread.start()
    return thread
