"""``mmder bench schedule``: a paper-sized grid scheduled by Ray Tune + Ray Train on fake devices.

The grid is the paper's shape: RAVDESS (its hold-out, 1 fold), CREMA-D and IEMOCAP (5 folds each) x
the 8 input settings = 88 cells, each a Train job of ``--per-cell`` workers holding one ``fake_gpu``
each (a custom Ray resource: Train would try CUDA with ``use_gpu``). Workers sleep for the cell's
length (its dataset's size x its setting's cost, scaled by ``--scale`` seconds per paper-hour) instead
of training. Cells are submitted longest first so the tail is short.

Figures (every time is measured, none modelled):
- busy device-time: sum over cells of per_cell x the time the workers' loop ran (the sleep);
- held device-time: sum over cells of per_cell x (the trial's ``fit()`` start to end), an upper bound
  on how long its devices were reserved (Train's controller start counts as held here);
- efficiency = busy / held; overhead per cell = held time per device minus busy time;
- makespan against the ideal (total busy device-time / devices) and busy / (devices x makespan).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

# train clips (approximate, as the paper's protocols use them) and folds per dataset
DATASETS = {"ravdess": (1440, 1), "cremad": (7442, 5), "iemocap": (5531, 5)}
# relative cost of a setting's input (two fused streams cost more than one)
SETTINGS = {
    "video": 1.0,
    "audio": 0.6,
    "CFAS": 1.05,
    "SFAS": 1.05,
    "FFLS": 1.1,
    "FSLF": 1.1,
    "OFOS": 1.2,
    "RFAS": 1.05,
}


def paper_grid(scale: float) -> list[dict[str, Any]]:
    """The 88 cells with their (scaled) lengths in seconds, longest first."""
    cells = []
    for dataset, (clips, folds) in DATASETS.items():
        for setting, cost in SETTINGS.items():
            for fold in range(folds):
                hours = clips / 2000 * cost * (1 + 0.03 * fold)  # ~1 paper-hour per 2000 clips
                cells.append({"key": f"{dataset}-{setting}-f{fold}", "seconds": round(hours * scale, 3)})
    return sorted(cells, key=lambda c: -c["seconds"])


def _fake_worker(config: dict[str, Any]) -> dict[str, float]:
    t0 = time.time()
    time.sleep(config["seconds"])
    return {"start": t0, "end": time.time()}


def _fake_cell(trial_config: dict[str, Any]) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig

    from harness.trial import CellTrainer  # the sweep's trainer: the same actors per cell

    cell = trial_config["cell"]
    t0 = time.time()
    trainer = CellTrainer(
        _fake_worker,
        train_loop_config=cell,
        scaling_config=ScalingConfig(
            num_workers=cell["per_cell"], resources_per_worker={"CPU": 0.01, "fake_gpu": 1}
        ),
        run_config=RunConfig(name=cell["key"], storage_path=cell["storage"]),
    )
    result = trainer.fit()
    value = result.return_value or {}
    return {
        "fit_start": t0,
        "fit_end": time.time(),
        "work_start": value.get("start", t0),
        "work_end": value.get("end", t0),
    }


def bench_schedule(
    devices: int = 16, per_cell: int = 4, scale: float = 20.0, limit: int | None = None
) -> dict[str, str]:
    """Run the grid on a local Ray with ``devices`` fake GPUs; figures as printable strings."""
    import tempfile

    from harness.ray_setup import local_ray_env

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    local_ray_env(devices // per_cell, per_cell)  # the environment of a sweep's local Ray
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    import ray
    from ray import tune

    cells = paper_grid(scale)[:limit]
    storage = tempfile.mkdtemp(prefix="mmder-bench-schedule-")
    for c in cells:
        c.update(per_cell=per_cell, storage=storage)
    slots = devices // per_cell
    ray.init(
        num_cpus=max(os.cpu_count() or 1, 64),
        resources={"fake_gpu": devices},
        log_to_driver=False,
        logging_level="ERROR",
        include_dashboard=True,
    )
    try:
        t0 = time.time()
        tuner = tune.Tuner(
            tune.with_resources(_fake_cell, {"CPU": 0.01}),
            param_space={"cell": tune.grid_search(cells)},
            tune_config=tune.TuneConfig(max_concurrent_trials=slots, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=storage, name="tune", verbose=0),
        )
        results = tuner.fit()
        makespan = time.time() - t0
    finally:
        ray.shutdown()
    rows = [(r.config["cell"], r.metrics) for r in results if r.error is None]
    failed = len(cells) - len(rows)
    busy = sum(per_cell * (m["work_end"] - m["work_start"]) for _, m in rows)
    held = sum(per_cell * (m["fit_end"] - m["fit_start"]) for _, m in rows)
    ideal = sum(per_cell * c["seconds"] for c in cells) / devices
    overhead = [(m["fit_end"] - m["fit_start"]) - (m["work_end"] - m["work_start"]) for _, m in rows]
    start_up = [m["work_start"] - m["fit_start"] for _, m in rows]
    mean = (lambda xs: sum(xs) / len(xs)) if rows else (lambda xs: math.nan)
    return {
        "cells": f"{len(cells)} ({failed} failed), {per_cell} of {devices} fake GPUs each, longest first",
        "cell length": f"{min(c['seconds'] for c in cells):.1f}-{max(c['seconds'] for c in cells):.1f} s "
        f"(scale {scale:g} s per paper-hour)",
        "efficiency (busy / held device-time)": f"{busy / held:.3f}" if held else "n/a",
        "overhead per cell": f"{mean(overhead):.1f} s held without work (start-up {mean(start_up):.1f} s)",
        "makespan / ideal": f"{makespan:.0f} s / {ideal:.0f} s = {makespan / ideal:.2f}",
        "busy / (devices x makespan)": f"{busy / (devices * makespan):.3f}",
    }
