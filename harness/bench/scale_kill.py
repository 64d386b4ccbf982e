"""Kill and resume at scale (``mmder bench scale --kill-at K``): the driver of an N-cell sweep is
SIGKILLed once K cells have finished; the rerun is planned (timed) and run to the end; then every cell
must have exactly one FINISHED MLflow run and no run may hold an epoch twice.

With one epoch per micro cell a cell cut mid-epoch has no checkpoint to resume from: its epoch is
trained again (the work since the last checkpoint), but logged once. The figures say how many cells
were in flight at the kill, how long the killed sweep's processes took to go, what the rerun planned
and whether the store came out whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness.bench.measure import Peak, timed


def finished_cells(storage: Path) -> int:
    """Cells whose lane wrote their finished mark (the storage is local in the bench)."""
    return sum(1 for _ in storage.glob("*/attempt-*/finished"))


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _gone_after(processes: list[Any], limit: float = 180.0) -> float | None:
    """Seconds until every process of the killed sweep is gone (None: some outlived ``limit``)."""
    import psutil

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
            return round(time.perf_counter() - t0, 1)
        time.sleep(0.5)
    return None


def kill_at(experiment: Path, output: Path, cells: int, at: int) -> dict[str, Any]:
    """Run the sweep, SIGKILL its driver at ``at`` finished cells, plan the rerun, run it to the end."""
    mmder = [sys.executable, "-m", "harness.cli.main"]
    command = [*mmder, "sweep", str(experiment), "--output", str(output)]
    figures: dict[str, Any] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = output / "ray"
    while proc.poll() is None and finished_cells(storage) < at:
        time.sleep(1.0)
    if proc.poll() is not None:
        raise RuntimeError(f"the sweep ended (rc {proc.returncode}) before {at} cells had finished")
    family = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    figures["killed after s"] = round(time.perf_counter() - t0, 1)
    figures["finished at the kill"] = finished_cells(storage)
    figures["its processes gone after s"] = _gone_after(family)
    figures["finished once they were gone"] = finished_cells(storage)
    plan = timed([*mmder, "sweep", str(experiment), "--dry-run", "--output", str(output)])
    figures["rerun --dry-run"] = f"{plan['seconds']} s, {plan['peak_mb']} MB, rc {plan['rc']}"
    t1 = time.perf_counter()
    rerun = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = Peak(rerun.pid)
    figures["rerun rc"] = rerun.wait()
    peak.stop()
    figures["rerun seconds"] = round(time.perf_counter() - t1, 1)
    figures["rerun driver peak MB"] = round(peak.driver / 1e6)
    figures.update(store_whole(experiment, output, cells))
    return figures


def store_whole(experiment: Path, output: Path, cells: int) -> dict[str, Any]:
    """One FINISHED run per cell, and no epoch logged twice in any run (read through MLflow, paged)."""
    from mlflow.tracking import MlflowClient

    from harness.experiment.loading import load_experiment
    from harness.plan.places import Places
    from harness.tracking.runs import search_all
    from harness.tracking.tags import KIND_CELL, TAG_CELL, TAG_KIND, TEST_WAR, tag_filter

    spec = load_experiment(experiment)
    client = MlflowClient(tracking_uri=Places.of(spec, output).tracking_uri)
    exp = client.get_experiment_by_name(spec.mlflow_experiment)
    runs = search_all(client, [exp.experiment_id], tag_filter(TAG_KIND, KIND_CELL))
    per_cell = Counter(r.data.tags.get(TAG_CELL) for r in runs)
    statuses = Counter(r.info.status for r in runs)
    twice = 0
    for run in runs:
        steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, TEST_WAR))
        twice += sum(1 for n in steps.values() if n > 1)
    return {
        "cell runs": len(runs),
        "cells with one run": sum(1 for n in per_cell.values() if n == 1),
        "cells with several runs": sum(1 for n in per_cell.values() if n > 1),
        "cells expected": cells,
        "run states": dict(statuses),
        "epochs logged twice": twice,
    }
