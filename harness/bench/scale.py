"""``mmder bench scale``: what a sweep of N cells costs to write and, above all, to read back.

A sweep of N micro cells (8 settings x 2 folds x N/16 seeds, one epoch, the synthetic corpus) runs
through the real path: planning, Tune lanes, Train workers, DeepSpeed, MLflow child runs and the
closing leaderboard. With ``made_up`` the cells' finished runs are written through the real logging
code instead of trained (:mod:`harness.bench.scale_runs`), tagged with the plan's identity so the
sweep counts them finished: the read path can then be measured at 10,000 cells in minutes. Each
command afterwards (a no-op rerun, the dry run, status, the leaderboard in every format, compare,
report, the Python API) runs as a user runs it, in a fresh process, timed with its peak memory.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from harness.bench.measure import Peak, timed

SETTINGS = ["video", "audio", "CFAS", "SFAS", "FFLS", "FSLF", "OFOS", "RFAS"]
CELLS_PER_SEED = 2 * len(SETTINGS)
API = (
    "import sys; from harness.results import api; "
    "frame = api.{fn}(sys.argv[1], output=sys.argv[2]); print(len(frame))"
)


def scale_experiment(cells: int, concurrency: int = 2, tracking_uri: str | None = None) -> dict[str, Any]:
    """The grid: 8 settings x 2 folds x ceil(cells / 16) seeds of the micro model, one epoch."""
    seeds = max(1, math.ceil(cells / CELLS_PER_SEED))
    tracking = {"tracking": {"uri": tracking_uri}} if tracking_uri else {}
    return {
        "name": f"bench-scale-{seeds * CELLS_PER_SEED}",
        "datasets": [
            {
                "corpus": "synthetic",
                "name": "syn",
                "synthetic": {"clips_per_class": 2, "speakers": 4, "seed": 0},
                "protocol": {"kind": "speaker_kfold", "folds": 2},
            }
        ],
        "grid": {"settings": SETTINGS, "seeds": list(range(seeds))},
        "preprocess": {"image_size": 32},
        "model": {"size": "micro"},
        "training": {"epochs": 1, "batch_size": 4, "eval_batch_size": 8, "lr": 1.0e-3, "warmup_epochs": 0},
        "resources": {
            "num_workers": 1,
            "cpus_per_worker": 1,
            "max_concurrent_trials": concurrency,
            "max_failures": 1,
        },
        **tracking,
    }


def write_made_up(experiment: Path, output: Path) -> int:
    """Every cell's finished run, written without training, as current as a trained one."""
    from harness.bench.scale_runs import MadeUpFold, write_finished_run
    from harness.experiment.loading import load_experiment
    from harness.plan.provenance import code_versions
    from harness.plan.sweep_plan import plan_run
    from harness.tracking.places import store_lock
    from harness.tracking.store import Tracker
    from harness.tracking.tags import TAG_DATA_DIGEST

    spec = load_experiment(experiment)
    plan = plan_run(spec, output, kind="train", accept_stale=False, echo=lambda _: None)
    places = plan.places
    with store_lock(places.tracking_uri):
        tracker = Tracker.open(places.tracking_uri, spec.mlflow_experiment, places.artifact_root)
        parent = tracker.parent_run(spec.name, spec.description)
    identity = code_versions("train")
    fold = MadeUpFold()
    for cell in plan.todo:
        tags = {TAG_DATA_DIGEST: plan.digest(cell) or "", **identity}
        write_finished_run(tracker, parent, cell, fold, tags)
    tracker.end_run(parent, "FINISHED")
    return len(plan.todo)


def read_commands(experiment: Path, output: Path) -> list[tuple[str, list[str]]]:
    """What a user runs after a sweep, each as the command line runs it."""
    mmder = [sys.executable, "-m", "harness.cli.main"]
    out = ["--output", str(output)]
    exp = str(experiment)
    commands = [
        ("no-op rerun", [*mmder, "sweep", exp, *out]),
        ("sweep --dry-run", [*mmder, "sweep", exp, "--dry-run", *out]),
        ("status", [*mmder, "status", exp, *out]),
    ]
    for fmt in ("table", "csv", "markdown", "json", "latex"):
        commands.append((f"leaderboard --format {fmt}", [*mmder, "leaderboard", exp, "--format", fmt, *out]))
    commands += [
        ("compare CFAS video", [*mmder, "compare", exp, "CFAS", "video", *out]),
        ("compare --all", [*mmder, "compare", exp, "--all", *out]),
        ("report", [*mmder, "report", exp, *out]),
        ("api.cells()", [sys.executable, "-c", API.format(fn="cells"), exp, str(output)]),
        ("api.predictions()", [sys.executable, "-c", API.format(fn="predictions"), exp, str(output)]),
    ]
    return commands


def folder_mb(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 1e6


def bench_scale(
    cells: int,
    output: str | None = None,
    made_up: bool = False,
    concurrency: int = 2,
    reads: bool = True,
    kill_at: int | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Write N cells (trained, or made up; with ``kill_at`` the driver is SIGKILLed once that many have
    finished and the rerun finishes them), then time every read command twice (cold: the first read
    builds the predictions table; warm: what every later read pays)."""
    out = Path(output or tempfile.mkdtemp(prefix="mmder-scale-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    experiment = out / "scale.yaml"
    spec = scale_experiment(cells, concurrency, tracking_uri)
    experiment.write_text(yaml.safe_dump(spec, sort_keys=False))
    n = len(spec["grid"]["seeds"]) * CELLS_PER_SEED
    figures: dict[str, Any] = {"cells": n, "output": str(out), "mode": "made up" if made_up else "trained"}
    t0 = time.perf_counter()
    if made_up:
        written = write_made_up(experiment, out)
        figures["write seconds"] = round(time.perf_counter() - t0, 1)
        figures["write s/cell"] = round((time.perf_counter() - t0) / max(1, written), 4)
    elif kill_at:
        from harness.bench.scale_kill import kill_at as run_killed

        figures.update(run_killed(experiment, out, n, kill_at))
    else:
        command = [sys.executable, "-m", "harness.cli.main", "sweep", str(experiment), "--output", str(out)]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = Peak(proc.pid)
        rc = proc.wait()
        peak.stop()
        seconds = time.perf_counter() - t0
        figures.update(
            {
                "sweep rc": rc,
                "sweep seconds": round(seconds, 1),
                "sweep s/cell": round(seconds / n, 3),
                "driver peak MB": round(peak.driver / 1e6),
                "Ray head peak MB (gcs, raylet, dashboard)": round(peak.ray_head / 1e6),
            }
        )
    size = folder_mb(out)
    figures["output MB"] = round(size, 1)
    figures["output MB/cell"] = round(size / n, 3)
    if reads:
        for label, command in read_commands(experiment, out):
            for when in ("cold", "warm"):
                r = timed(command)
                figures[f"{label} [{when}]"] = f"{r['seconds']} s, {r['peak_mb']} MB" + (
                    f", rc {r['rc']}: {r['error']}" if r["rc"] else ""
                )
    return figures
