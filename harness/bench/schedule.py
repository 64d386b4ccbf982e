"""``mmder bench schedule``: a paper-sized grid scheduled by Ray Tune + Ray Train on fake devices.

The grid is the paper's shape: RAVDESS (its hold-out, 1 fold), CREMA-D and IEMOCAP (5 folds each) x
the 8 input settings = 88 cells, each a Train job of ``--per-cell`` workers holding one ``fake_gpu``
each (a custom Ray resource: Train would try CUDA with ``use_gpu``). Workers sleep for the cell's
length (its dataset's size x its setting's cost, scaled by ``--scale`` seconds per paper-hour) instead
of training. Cells are submitted longest first so the tail is short.

Two kinds of fake cell (``--trainer``):
- ``plain`` (default): a Train ``DataParallelTrainer`` with no framework backend, so its workers import
  neither torch nor DeepSpeed. It measures what the scheduler and Train's actors cost per cell; on a
  small host (2 cores for 16 fake GPUs) the torch kind measures CPU contention instead.
- ``torch``: the sweep's own ``CellTrainer`` (a ``TorchTrainer``: workers import torch and form a gloo
  group), the per-cell overhead of a real cell, meaningful where each fake GPU has a core of its own.

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


def _trainer_class(kind: str) -> type:
    """The Train trainer of a fake cell (see the module docstring), without Ray Data's actor."""
    if kind == "torch":
        from harness.worker.trial import CellTrainer  # the sweep's trainer: the same actors per cell

        return CellTrainer
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from harness.worker.train_actors import NoDatasetActor

    class PlainTrainer(NoDatasetActor, DataParallelTrainer):
        pass

    return PlainTrainer


def _fake_cell(trial_config: dict[str, Any]) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig

    cell = trial_config["cell"]
    t0 = time.time()
    trainer = _trainer_class(cell["trainer"])(
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
    devices: int = 16,
    per_cell: int = 4,
    scale: float = 20.0,
    limit: int | None = None,
    trainer: str = "plain",
) -> dict[str, str]:
    """Run the grid on a local Ray with ``devices`` fake GPUs; figures as printable strings."""
    import tempfile

    from harness.driver.ray_setup import local_ray_env

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    local_ray_env(devices // per_cell, per_cell)  # the environment of a sweep's local Ray
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # ``num_cpus`` below is 64 so that CPUs never limit the fake grid, and Ray would prestart an idle
    # worker per "CPU" for the first driver: 32 useless processes here (Train's actors carry their own
    # runtime env and never take one), which slowed the first wave's start-up from 34 s to 53 s.
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    import ray
    from ray import tune

    cells = paper_grid(scale)[:limit]
    storage = tempfile.mkdtemp(prefix="mmder-bench-schedule-")
    for c in cells:
        c.update(per_cell=per_cell, storage=storage, trainer=trainer)
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
    return schedule_figures(cells, rows, devices, per_cell, scale, makespan, trainer)


def schedule_figures(
    cells: list[dict[str, Any]],
    rows: list[tuple[dict[str, Any], dict[str, float]]],
    devices: int,
    per_cell: int,
    scale: float,
    makespan: float,
    trainer: str,
) -> dict[str, str]:
    """The printed figures from each finished cell's measured times (see the module docstring)."""
    failed = len(cells) - len(rows)
    busy = sum(per_cell * (m["work_end"] - m["work_start"]) for _, m in rows)
    held = sum(per_cell * (m["fit_end"] - m["fit_start"]) for _, m in rows)
    ideal = sum(per_cell * c["seconds"] for c in cells) / devices
    overhead = [(m["fit_end"] - m["fit_start"]) - (m["work_end"] - m["work_start"]) for _, m in rows]
    start_up = [m["work_start"] - m["fit_start"] for _, m in rows]
    mean = (lambda xs: sum(xs) / len(xs)) if rows else (lambda xs: math.nan)
    # 1.0: cells started exactly longest first; ties within a wave make it a little less
    if len(rows) > 1:
        from scipy.stats import kendalltau

        tau = kendalltau([m["fit_start"] for _, m in rows], [-c["seconds"] for c, _ in rows]).statistic
    else:
        tau = math.nan
    return {
        "cells": f"{len(cells)} ({failed} failed), {per_cell} of {devices} fake GPUs each, {trainer} trainer",
        "cell length": f"{min(c['seconds'] for c in cells):.1f}-{max(c['seconds'] for c in cells):.1f} s "
        f"(scale {scale:g} s per paper-hour)",
        "start order vs longest first (Kendall tau)": f"{tau:.2f}",
        "efficiency (busy / held device-time)": f"{busy / held:.3f}" if held else "n/a",
        "overhead per cell": f"{mean(overhead):.1f} s held without work (start-up {mean(start_up):.1f} s)",
        "makespan / ideal": f"{makespan:.0f} s / {ideal:.0f} s = {makespan / ideal:.2f}",
        "busy / (devices x makespan)": f"{busy / (devices * makespan):.3f}",
    }
