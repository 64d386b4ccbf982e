"""``mmder bench overhead``: where a cell's start-up goes, measured on a real quickstart-sized sweep.

A small sweep of the synthetic corpus (a tiny model, few epochs, real Tune + Train + DeepSpeed +
MLflow) runs with ``MMDER_TIMING_FILE`` set, so the driver, every trial and every Train worker append
marks (:mod:`mmder.timing`). Each cell's time from its trial's start to its end is cut into stages;
the figures are medians over cells (seconds, wall clock). A second part times the imports a Train
worker pays, each in a fresh interpreter.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mmder.timing import ENV, read_marks

# (label, from mark, to mark); a cell's marks from its trial, its rank-0 worker and that worker's loop
STAGES = [
    ("trial start -> Train fit() called", "trial_start", "train_fit_start"),
    ("Train controller + worker actor start", "train_fit_start", "worker_process"),
    ("worker boot: Ray worker + torch/DeepSpeed imports", "worker_process", "worker_entry"),
    ("lane: the cell before it ends -> this cell's entry", "lane_start", "worker_entry"),
    ("data + model build", "worker_entry", "cell_built"),
    ("MLflow run (rank 0)", "cell_built", "tracking_ready"),
    ("DeepSpeed engine + resume", "tracking_ready", "engine_ready"),
    ("first step", "engine_ready", "first_step"),
    ("training + eval (rest of the epochs)", "first_step", "last_epoch_end"),
    ("final MLflow logging", "last_epoch_end", "worker_end"),
    ("Train shutdown -> fit() returns", "worker_end", "train_fit_end"),
    ("trial end", "train_fit_end", "trial_end"),
]
TRAINING = {"first step", "training + eval (rest of the epochs)"}
IMPORTS = ["torch", "deepspeed", "mlflow", "ray.train", "harness.worker.train_loop"]


def overhead_experiment(settings: list[str], epochs: int, concurrency: int) -> dict[str, Any]:
    """The quickstart's cell shape (synthetic corpus, tiny model, 1 worker) on fewer settings/epochs."""
    return {
        "name": "bench-overhead",
        "datasets": [
            {
                "corpus": "synthetic",
                "name": "synthetic",
                "synthetic": {"clips_per_class": 3, "speakers": 16, "seed": 0},
                "protocol": {"kind": "speaker_kfold", "folds": 2},
            }
        ],
        "grid": {"settings": settings, "seeds": [0]},
        "preprocess": {"image_size": 64, "face": "none", "spectrogram": "mfcc", "colormap": "viridis"},
        "model": {"size": "tiny"},
        "training": {"epochs": epochs, "batch_size": 16, "lr": 1.0e-3, "warmup_epochs": 1, "zero_stage": 2},
        "resources": {
            "num_workers": 1,
            "cpus_per_worker": 1,
            "use_gpu": False,
            "max_concurrent_trials": concurrency,
            "max_failures": 0,
        },
    }


def cell_points(marks: list[dict]) -> dict[str, dict[str, float]]:
    """Per cell key, when each of its marks first happened; marks of a worker's loop are joined to its
    cell by pid, ``last_epoch_end`` is its last epoch's end.

    In a lane (:mod:`harness.plan.lanes`) the trial's marks are the lane's: its start (trial, Train
    controller, worker boot) falls to its first cell, its shutdown to its last; a later cell starts
    (``lane_start``) when the cell before it ended in the same workers.
    """
    by_pid: dict[int, str] = {m["pid"]: m["key"] for m in marks if m["key"]}
    points: dict[str, dict[str, float]] = {}
    ended: dict[int, float] = {}  # per worker process, when its previous cell ended
    for m in sorted(marks, key=lambda m: m["t"]):
        key = m["key"] or by_pid.get(m["pid"], "")
        if not key:
            continue
        at = points.setdefault(key, {})
        stage = m["stage"]
        if stage == "epoch_end":
            at["last_epoch_end"] = max(at.get("last_epoch_end", 0.0), m["t"])
            continue
        if stage == "worker_entry" and "trial_start" not in at and m["pid"] in ended:
            at.setdefault("lane_start", ended[m["pid"]])
        elif stage == "worker_end":
            ended[m["pid"]] = m["t"]
        if stage not in at:  # the first of a repeated mark (a reused trial actor marks it per trial)
            at[stage] = m["t"]
    return points


def _started(at: dict[str, float]) -> float | None:
    """When a cell started: its trial's start, or in a lane the end of the cell before it."""
    return at.get("trial_start", at.get("lane_start"))


def cell_stages(marks: list[dict]) -> dict[str, dict[str, float]]:
    """Per cell key, the seconds of each stage (:func:`cell_points`). A cell's total runs from its start
    to its end (its trial's end, or in a lane its workers' end), so the stages of every cell add up to
    its total and a lane's totals to the lane's time."""
    stages: dict[str, dict[str, float]] = {}
    for key, at in cell_points(marks).items():
        row = {label: at[b] - at[a] for label, a, b in STAGES if a in at and b in at}
        start, end = _started(at), at.get("trial_end", at.get("worker_end"))
        if start is not None and end is not None:
            row["total"] = end - start
        stages[key] = row
    return stages


def epoch_seconds(marks: list[dict], clock: str = "t") -> dict[int, float]:
    """Per worker process, the seconds it spent inside the epoch loop (epoch_start -> epoch_end):
    wall seconds (``clock="t"``) or the CPU seconds it used there (``clock="cpu"``)."""
    spent: dict[int, float] = {}
    open_at: dict[int, float] = {}
    for m in sorted(marks, key=lambda m: m["t"]):
        if m["stage"] == "epoch_start" and clock in m:
            open_at[m["pid"]] = m[clock]
        elif m["stage"] == "epoch_end" and m["pid"] in open_at and clock in m:
            spent[m["pid"]] = spent.get(m["pid"], 0.0) + m[clock] - open_at.pop(m["pid"])
    return spent


def training_share(marks: list[dict], cpus_per_worker: float, cores: float, wall: float) -> float:
    """Core-seconds spent inside the epoch loop / (cores x sweep wall): how much of the machine trained.

    Core-seconds are the CPU seconds the workers used inside their epochs, where the marks carry them;
    from older marks, the wall seconds there times the cores each worker holds (an overcount when more
    workers than cores share the machine).
    """
    used = epoch_seconds(marks, "cpu")
    busy = sum(used.values()) if used else sum(epoch_seconds(marks).values()) * cpus_per_worker
    return busy / (cores * wall) if cores > 0 and wall > 0 else 0.0


def startup_seconds(marks: list[dict]) -> dict[str, float]:
    """Per cell, from its start to its first epoch's start (in any of its workers).

    A cell starts with its trial, or, in a lane, when the cell before it in the same workers ended:
    what a lane's later cells wait for is their own set-up only.
    """
    return {
        key: at["epoch_start"] - _started(at)
        for key, at in cell_points(marks).items()
        if "epoch_start" in at and _started(at) is not None
    }


def time_imports(modules: list[str] = IMPORTS) -> dict[str, float]:
    """Seconds each import adds in a fresh interpreter, importing ``modules`` in order (cumulative)."""
    code = (
        "import importlib, json, sys, time\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    t = time.perf_counter(); importlib.import_module(name); out[name] = time.perf_counter() - t\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    done = subprocess.run(
        [sys.executable, "-c", code, *modules], capture_output=True, text=True, env=env, check=True
    )
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_overhead(
    settings: int = 2, epochs: int = 2, concurrency: int = 2, output: str | None = None
) -> dict[str, str]:
    """Run the small sweep, then summarise its marks; returns the figures to print."""
    from harness.driver.sweep import run_sweep
    from harness.experiment.loading import parse_experiment
    from mmder.fusion import SETTINGS

    names = list(SETTINGS)[:settings]
    spec = parse_experiment(overhead_experiment(names, epochs, concurrency), source="bench overhead")
    out = Path(output) if output else Path(tempfile.mkdtemp(prefix="mmder-bench-overhead-"))
    timing = out / "timing.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    timing.unlink(missing_ok=True)
    os.environ[ENV] = str(timing)
    t0 = time.time()
    outcome = run_sweep(spec, out, echo=lambda line: print(line, flush=True))
    wall = time.time() - t0
    marks = read_marks(timing)
    stages = cell_stages(marks)
    figures: dict[str, str] = {
        "cells": f"{len(stages)} ({settings} settings x 2 folds, {epochs} epochs, {concurrency} at a time)",
        "failed cells": str(len(outcome.failed)),
        "sweep wall (s)": f"{wall:.1f}",
    }
    driver = {
        m["stage"]: m["t"]
        for m in marks
        if not m["key"] and m["stage"] in {"ray_init_start", "ray_init_end", "tune_fit_start", "tune_fit_end"}
    }
    if {"ray_init_start", "ray_init_end"} <= driver.keys():
        figures["driver: ray.init (s)"] = f"{driver['ray_init_end'] - driver['ray_init_start']:.1f}"
    starts = [at for at in (_first(marks, "trial_start", k) for k in stages) if at is not None]
    if "tune_fit_start" in driver and starts:
        figures["driver: Tuner.fit() -> first trial starts (s)"] = (
            f"{min(starts) - driver['tune_fit_start']:.1f}"
        )
    labels = [label for label, _, _ in STAGES] + ["total"]
    for label in labels:
        values = [row[label] for row in stages.values() if label in row]
        if values:
            figures[f"cell: {label} (s, median of {len(values)})"] = f"{statistics.median(values):.2f}"
    totals = [row["total"] for row in stages.values() if "total" in row]
    trained = [sum(v for k, v in row.items() if k in TRAINING) for row in stages.values() if "total" in row]
    if totals:
        share = 1 - sum(trained) / sum(totals)
        figures["cell: share of a cell's time not training"] = f"{100 * share:.0f} %"
    cores = float(os.cpu_count() or 1)
    share = training_share(marks, spec.resources.cpus_per_worker, cores, wall)
    figures["sweep: training share (core-s in the epoch loop / cores x wall)"] = (
        f"{100 * share:.0f} % ({cores:g} cores, {wall:.0f} s)"
    )
    startup = list(startup_seconds(marks).values())
    if startup:
        figures[f"cell: start-up, its start -> first epoch (s, median of {len(startup)})"] = (
            f"{statistics.median(startup):.1f} (mean {statistics.fmean(startup):.1f}, max {max(startup):.1f})"
        )
    for name, seconds in time_imports().items():
        figures[f"import {name} (s, fresh interpreter, in order)"] = f"{seconds:.2f}"
    figures["marks"] = str(timing)
    return figures


def _first(marks: list[dict], stage: str, key: str) -> float | None:
    return min((m["t"] for m in marks if m["stage"] == stage and m["key"] == key), default=None)
