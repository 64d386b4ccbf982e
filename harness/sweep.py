"""The sweep's driver: skip finished cells, prepare data once, run the rest as a Ray Tune grid.

Resuming is by construction rather than by restoring Tune state: finished cells are found in MLflow
and dropped before the grid is built (a new Tuner would otherwise re-run them all), and each remaining
cell's Train run is named by its key, so a cell cut off by a crash continues from its last checkpoint.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.checks import check_data_roots, check_listings, dataset_root
from harness.config import ExperimentConfig
from harness.errors import ConfigError
from harness.grid import Cell, CellJob, expand_cells, expand_pretrain_cells
from harness.tracking import Tracker, resolve_uri

Echo = Callable[[str], None]


def output_dir(spec: ExperimentConfig, output: str | Path | None) -> Path:
    return Path(output or Path("runs") / spec.name).expanduser().resolve()


@dataclass
class Plan:
    """What a sweep would do: cells to run and cells already finished (key -> MLflow run id)."""

    cells: list[Cell]
    finished: dict[str, str] = field(default_factory=dict)

    @property
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if c.key not in self.finished]


def plan_sweep(spec: ExperimentConfig, output: Path) -> Plan:
    """Expand the grid and look up finished cells; needs no data, no Ray, and creates nothing."""
    return _plan(expand_cells(spec), spec, output)


def _plan(cells: list[Cell], spec: ExperimentConfig, output: Path) -> Plan:
    uri = resolve_uri(spec.tracking.uri, output)
    finished: dict[str, str] = {}
    tracker = Tracker.existing(uri, spec.mlflow_experiment)
    if tracker is not None:
        keys = {c.key for c in cells}
        finished = {k: r.info.run_id for k, r in tracker.finished_cells().items() if k in keys}
    return Plan(cells=cells, finished=finished)


def format_plan(plan: Plan) -> str:
    lines = [f"{len(plan.cells)} cells: {len(plan.todo)} to run, {len(plan.finished)} finished (skipped)"]
    width = max((len(c.key) for c in plan.cells), default=10)
    lines.append(f"  {'status':<6}  {'cell':<{width}}  dataset / setting / fold / seed")
    for c in plan.cells:
        status = "skip" if c.key in plan.finished else "run"
        lines.append(f"  {status:<6}  {c.key:<{width}}  {c.dataset} / {c.setting} / {c.fold_name} / {c.seed}")
    return "\n".join(lines)


def cache_root(output: Path) -> Path:
    """Preprocessed clips: under the output folder, or a shared folder named by $MMDER_CACHE_DIR."""
    return Path(os.environ.get("MMDER_CACHE_DIR") or output / "cache").expanduser().resolve()


def prepare_datasets(spec: ExperimentConfig, output: Path, labels: set[str], echo: Echo) -> dict[str, str]:
    """Preprocess every dataset the remaining cells need (synthetic ones generated first); label -> cache."""
    from mmder.data.cache import prepare_corpus

    paths: dict[str, str] = {}
    for ds in spec.datasets:
        if ds.label not in labels:
            continue
        root = dataset_root(spec, ds, output)
        t0 = time.perf_counter()
        prepared = prepare_corpus(
            ds.corpus,
            root,
            cache_root(output),
            spec.preprocess,
            corpus_options=ds.options,
            workers=spec.preprocess.workers,
            progress=sys.stderr.isatty(),
        )
        echo(
            f"{ds.label}: prepared {prepared.n_prepared}, skipped {prepared.n_skipped} "
            f"({time.perf_counter() - t0:.1f} s; cache {prepared.path}; skip report {prepared.skip_report})"
        )
        paths[ds.label] = str(prepared.path)
    return paths


def _init_ray(spec: ExperimentConfig, address: str | None, verbose: bool) -> None:
    # `uv run` would otherwise make Ray ship the whole project folder, .venv included, to every worker.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0, Tune prints nothing of its own
    import ray

    address = address or spec.ray.address
    if address:
        ray.init(address=address, log_to_driver=verbose)
        return
    # No spot node can be pre-empted on one machine: skip the watcher actor each Train run would start.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    res = spec.resources
    per_cell = res.num_workers * res.cpus_per_worker + TRIAL_CPUS
    # Logical CPUs are scheduling tokens: enough for the concurrency asked for (each trial's tiny
    # driver share included), or trials wait on each other, and never fewer than one cell needs.
    cpus = max(os.cpu_count() or 1, math.ceil(per_cell * res.max_concurrent_trials))
    # The dashboard stays on: Train V2's placement-group cleaner asks its state API about the
    # controller; without it leaked worker groups keep their CPUs and later trials wait forever.
    ray.init(num_cpus=cpus, log_to_driver=verbose, logging_level="WARNING", configure_logging=True)


TRIAL_CPUS = 0.01  # the Tune trial only drives its Train job; the workers get the real CPUs


class _Progress:
    """A line per finished cell with WAR, elapsed time, cells left and an ETA."""

    def __init__(self, total: int, concurrency: int, echo: Echo, grid_param: str) -> None:
        from ray.tune import Callback

        progress = self

        class _Callback(Callback):
            def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.started[trial.trial_id] = time.monotonic()

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.done(trial, failed=False)

            def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                progress.done(trial, failed=True)

        self.callback = _Callback()
        self.total, self.concurrency, self.echo, self.grid_param = total, concurrency, echo, grid_param
        self.finished = 0
        self.start = time.monotonic()
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.failed: list[str] = []

    def done(self, trial: Any, failed: bool) -> None:
        self.finished += 1
        key = trial.config[self.grid_param]["cell"]["key"]
        now = time.monotonic()
        elapsed = now - self.start
        self.durations.append(now - self.started.get(trial.trial_id, self.start))
        left = self.total - self.finished
        # Cells run `concurrency` at a time and finish in waves: the mean cell time per wave left.
        eta = sum(self.durations) / len(self.durations) * math.ceil(left / self.concurrency)
        result = trial.last_result or {}
        if failed:
            self.failed.append(key)
            # the copy under the output folder outlives Ray's temporary session folder
            what = f"FAILED (see {Path(trial.path) / 'error.txt' if trial.path else trial.error_file})"
        elif "final_loss" in result:  # a pre-training
            what = f"loss {result['final_loss']:.4f}"
        else:
            war = result.get("final_war", result.get("war"))
            what = f"WAR {war:5.1f}" if isinstance(war, int | float) else "WAR   n/a"
        self.echo(
            f"[{self.finished}/{self.total}] {key}  {what}  elapsed {_hms(elapsed)}  "
            f"{left} left  ETA {_hms(eta)}"
        )


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def encoder_path(output: Path, pretrain_key: str) -> Path:
    """Where `mmder pretrain` leaves a pre-training's encoder (our layout) for the sweep's cells."""
    return output / "pretrain" / pretrain_key / "encoder.pt"


def _pretrained_paths(spec: ExperimentConfig, output: Path, cells: list[Cell]) -> dict[str, str | None]:
    """cell key -> absolute checkpoint to start from; a missing one stops the sweep before it starts."""
    paths: dict[str, str | None] = {}
    for cell in cells:
        if cell.training is None:  # a classical baseline loads no weights
            paths[cell.key] = None
            continue
        if cell.pretrain_key:
            path = encoder_path(output, cell.pretrain_key)
            hint = f"run `mmder pretrain` on this experiment first (no encoder at {path})"
        elif cell.model.pretrained:
            path = spec.resolved_path(cell.model.pretrained)
            hint = f"no such checkpoint: {path}"
        else:
            paths[cell.key] = None
            continue
        if not path.exists():
            raise ConfigError("model.pretrained", hint)
        paths[cell.key] = str(path)
    return paths


def run_sweep(
    spec: ExperimentConfig,
    output: Path,
    *,
    address: str | None = None,
    verbose: bool = False,
    echo: Echo = print,
) -> int:
    """Run every unfinished cell; returns the number of cells that failed."""
    check_data_roots(spec, output)
    plan = plan_sweep(spec, output)
    check_listings(spec, output, {c.dataset for c in plan.todo}, echo)
    pretrained = _pretrained_paths(spec, output, plan.todo)
    extras = {c.key: {"pretrained_path": pretrained[c.key]} for c in plan.todo}
    return _run_cells(spec, output, plan, "train", extras, address=address, verbose=verbose, echo=echo)


def run_pretrain(
    spec: ExperimentConfig,
    output: Path,
    *,
    address: str | None = None,
    verbose: bool = False,
    echo: Echo = print,
) -> int:
    """MAE pre-training, one resumable cell per input setting; returns the number that failed."""
    check_data_roots(spec, output)
    plan = plan_pretrain(spec, output)
    if plan.todo:
        check_listings(spec, output, {ds.label for ds in spec.datasets}, echo)
    extras = {c.key: {"encoder_path": str(encoder_path(output, c.key))} for c in plan.todo}
    return _run_cells(spec, output, plan, "pretrain", extras, address=address, verbose=verbose, echo=echo)


def plan_pretrain(spec: ExperimentConfig, output: Path) -> Plan:
    return _plan(expand_pretrain_cells(spec), spec, output)


def _run_cells(
    spec: ExperimentConfig,
    output: Path,
    plan: Plan,
    kind: str,
    extras: dict[str, dict[str, Any]],
    *,
    address: str | None,
    verbose: bool,
    echo: Echo,
) -> int:
    output.mkdir(parents=True, exist_ok=True)
    uri = resolve_uri(spec.tracking.uri, output)
    tracker = Tracker.open(uri, spec.mlflow_experiment, artifact_root=output / "mlartifacts")
    parent = tracker.parent_run(spec.name, spec.description)
    todo = plan.todo
    what = "cells" if kind == "train" else "pre-training cells"
    echo(f"{spec.name}: {len(plan.cells)} {what}, {len(plan.finished)} already finished, {len(todo)} to run")
    if not todo:
        return 0
    needed = {ds.label for ds in spec.datasets} if kind == "pretrain" else {c.dataset for c in todo}
    caches = prepare_datasets(spec, output, needed, echo)
    storage = spec.ray.storage_path or str(output / "ray")
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())

    _init_ray(spec, address, verbose)
    from ray import tune

    from harness.trial import GRID_PARAM, run_cell  # imports Ray: only after _init_ray set its environment

    res = spec.resources
    configs = [
        CellJob(
            cell=cell,
            cache_paths=caches,
            tracking_uri=uri,
            experiment_id=tracker.experiment_id,
            parent_run_id=parent,
            storage_path=storage,
            resources=res,
            **extras[cell.key],
        ).model_dump(mode="json")
        for cell in todo
    ]
    progress = _Progress(len(todo), res.max_concurrent_trials, echo, GRID_PARAM)

    tuner = tune.Tuner(
        tune.with_resources(run_cell, {"CPU": TRIAL_CPUS}),
        param_space={GRID_PARAM: tune.grid_search(configs)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=res.max_concurrent_trials,
            # Every cell asks the same resources: reuse the trial actors instead of importing torch anew.
            reuse_actors=True,
            trial_name_creator=lambda t: t.config[GRID_PARAM]["cell"]["key"],
            trial_dirname_creator=lambda t: t.config[GRID_PARAM]["cell"]["key"],
        ),
        run_config=tune.RunConfig(
            name=f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(Path(storage) / "tune") if "://" not in storage else f"{storage}/tune",
            verbose=0,
            callbacks=[progress.callback],
        ),
    )
    tuner.fit()
    return len(progress.failed)
