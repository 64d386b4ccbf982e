"""How a benchmark measures a command it starts: its wall time and peak memory, and the peak memory of a
running sweep's driver and of Ray's own head processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

RAY_HEAD = ("gcs_server", "raylet", "dashboard")  # Ray's own head processes (not its workers)


class Peak:
    """Peak resident memory of a process and its descendants (sampled), and of Ray's own processes."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.driver = 0
        self.ray_head = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            try:
                self.driver = max(self.driver, self.root.memory_info().rss)
                head = sum(
                    child.memory_info().rss
                    for child in self.root.children(recursive=True)
                    if any(n in child.name() for n in RAY_HEAD)
                )
                self.ray_head = max(self.ray_head, head)
            except psutil.Error:
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# A small parent for each timed command: a child forked from this process would count this process's
# pages (mlflow, pandas: hundreds of MB) in its peak until it execs.
_WRAP = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(f'maxrss={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); sys.exit(rc)"
)


def timed(command: list[str]) -> dict[str, Any]:
    """Run ``command`` in a fresh process: wall seconds, its peak RSS, exit code, last error line."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAP, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    lines = proc.stderr.strip().splitlines()
    peak = next((int(ln.split("=", 1)[1]) for ln in reversed(lines) if ln.startswith("maxrss=")), 0)
    errors = [ln for ln in lines if not ln.startswith("maxrss=")]
    return {
        "seconds": round(seconds, 2),
        "peak_mb": round(peak / 1024),
        "rc": proc.returncode,
        "error": errors[-1] if errors and proc.returncode else "",
    }
