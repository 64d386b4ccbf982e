"""The sweep's driver: skip finished cells, own the rest, prepare data once, run them as a Tune grid.

Resuming is by construction rather than by restoring Tune state: finished cells are found in MLflow
and dropped before the grid is built (a new Tuner would otherwise re-run them all), and each remaining
cell's Train run is named by its key, so a cell cut off by a crash continues from its last checkpoint.
A finished run counts only while its identity holds (:mod:`harness.plan.provenance`: data digest, declared
versions); otherwise the cell is ``stale`` and runs again in a new run, from epoch 0: its checkpoints
belong to the older identity and are removed first. The driver owns every cell it
runs (:mod:`harness.driver.owners`), ends each run honestly (FINISHED, FAILED with its error, KILLED on
SIGINT/SIGTERM) and ends the sweep's parent run with counts.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.driver.ray_setup import TRIAL_CPUS, init_ray
from harness.experiment.config import ExperimentConfig
from harness.experiment.errors import ConfigError
from harness.plan.cells import Cell, CellJob
from harness.plan.checks import check_data_roots, check_listings, dataset_root
from harness.plan.provenance import code_versions, judge, recorded_tags
from harness.plan.sweep_plan import (
    Plan,
    cell_digest,
    plan_pretrain,
    plan_sweep,
    storage_root,
)
from harness.tracking.places import resolve_uri, store_lock
from harness.tracking.store import Tracker
from harness.tracking.tags import FINISHED, TAG_ACCEPTED_STALE, TAG_DATA_DIGEST, TAG_STATUS
from harness.worker.resume import discard_attempts
from mmder.timing import mark

Echo = Callable[[str], None]


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


@dataclass
class SweepOutcome:
    """How a sweep invocation ended: the CLI's exit code and message come from here."""

    failed: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # key -> who owns it
    signal: int | None = None  # SIGINT / SIGTERM that stopped it

    def __int__(self) -> int:  # the number of failed cells, as run_sweep returned before
        return len(self.failed)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived before Tune ran: stop where we are, cleanly."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def run_sweep(
    spec: ExperimentConfig,
    output: Path,
    *,
    address: str | None = None,
    verbose: bool = False,
    echo: Echo = print,
    accept_stale: bool = False,
    wait: bool = False,
) -> SweepOutcome:
    """Run every cell not finished under today's identity; says how it ended."""
    check_data_roots(spec, output)
    # every dataset is listed (and a synthetic one generated) first: stale cells need today's digests
    check_listings(spec, output, {ds.label for ds in spec.datasets}, echo)
    plan = plan_sweep(spec, output, accept_stale=accept_stale)
    pretrained = _pretrained_paths(spec, output, plan.todo)
    extras = {c.key: {"pretrained_path": pretrained[c.key]} for c in plan.todo}
    return _run_cells(
        spec, output, plan, "train", extras, address=address, verbose=verbose, echo=echo, wait=wait
    )


def run_pretrain(
    spec: ExperimentConfig,
    output: Path,
    *,
    address: str | None = None,
    verbose: bool = False,
    echo: Echo = print,
    wait: bool = False,
) -> SweepOutcome:
    """MAE pre-training, one resumable cell per input setting."""
    check_data_roots(spec, output)
    check_listings(spec, output, {ds.label for ds in spec.datasets}, echo)
    plan = plan_pretrain(spec, output)
    extras = {c.key: {"encoder_path": str(encoder_path(output, c.key))} for c in plan.todo}
    return _run_cells(
        spec, output, plan, "pretrain", extras, address=address, verbose=verbose, echo=echo, wait=wait
    )


def _own(
    cells: list[Cell], owners: Any, tracker: Tracker, plan: Plan
) -> tuple[list[Cell], dict[str, str], list[str]]:
    """Take ownership of what is free: (owned cells, key -> the live owner of each other cell,
    keys another sweep finished meanwhile). Owning a cell is followed by a second look at MLflow."""
    owned, others = [], {}
    for cell in cells:
        other = owners.acquire(cell.key)
        if other is None:
            owned.append(cell)
        else:
            others[cell.key] = other.describe()
    done = []
    if owned:
        finished = tracker.finished_cells()
        keep = []
        for cell in owned:
            run = finished.get(cell.key)
            if run is not None and judge(run.data.tags, cell_digest(cell, plan.digests), cell.kind).current:
                done.append(cell.key)
                owners.release(cell.key)
            else:
                keep.append(cell)
        owned = keep
    return owned, others, done


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
    wait: bool = False,
) -> SweepOutcome:
    from harness.driver.owners import CellOwners

    output.mkdir(parents=True, exist_ok=True)
    uri = resolve_uri(spec.tracking.uri, output)
    what = "cells" if kind == "train" else "pre-training cells"
    if _already_recorded(plan):  # a no-op rerun: nothing to run, nothing to write
        echo(f"{spec.name}: {len(plan.cells)} {what}, {len(plan.finished)} already finished, 0 to run")
        return SweepOutcome()
    with store_lock(uri):  # two sweeps started at once must not both create the store or the parent
        tracker = Tracker.open(uri, spec.mlflow_experiment, artifact_root=output / "mlartifacts")
        parent = tracker.parent_run(spec.name, spec.description)
    echo(
        f"{spec.name}: {len(plan.cells)} {what}, {len(plan.finished)} already finished, "
        f"{len(plan.todo)} to run"
    )
    for cell in plan.cells:
        state = plan.state(cell.key)
        if state.action == "stale":
            echo(
                f"{cell.key}: stale ({state.why}): runs again in a new run; the old one is kept as superseded"
            )
        elif state.action == "retry":
            echo(f"{cell.key}: failed before ({state.why or 'see its run'}): retried in a fresh attempt")
        elif state.action == "skip" and state.why and state.run_id:
            echo(f"{cell.key}: stale ({state.why}) but kept (--accept-stale)")
            tracker.tag(state.run_id, TAG_ACCEPTED_STALE, state.why)
    outcome = SweepOutcome()
    if not plan.todo:
        _end_parent(tracker, parent, plan, outcome, [])
        return outcome
    tracker.client.update_run(parent, status="RUNNING")
    storage = storage_root(spec, output)
    owners = CellOwners(storage)
    if not owners.enabled:
        echo(f"storage {storage} is remote: cells have no owner lock there; run one sweep at a time")
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop: dict[str, int] = {}

    def on_signal(signum: int, frame: Any) -> None:
        if "signal" in stop:
            return
        stop["signal"] = signum
        echo(f"\nmmder: {signal.Signals(signum).name}: stopping the sweep (running cells end KILLED)")
        if not stop.get("tune"):
            raise Interrupted(signum)

    for s in previous:
        signal.signal(s, on_signal)
    todo: list[Cell] = []
    ray_started = False
    try:
        owners.start_heartbeat()
        remaining, said = list(plan.todo), set()
        while remaining:  # with --wait: run what is ours, then look again at what others run
            owned, others, done = _own(remaining, owners, tracker, plan)
            for key in done:
                echo(f"{key}: finished meanwhile by another sweep; skipped")
            for key, who in others.items():
                if key not in said:
                    said.add(key)
                    verb = "waiting for it" if wait else "refused (--wait waits for it)"
                    echo(f"{key}: being run by another sweep ({who}); {verb}")
            for cell in owned:
                state = plan.state(cell.key)
                if state.action != "stale":
                    continue
                # first its checkpoints (made from the older data or code), then its old run: a driver
                # killed in between finds the cell stale again, with nothing left to discard
                if discard_attempts(storage, cell.key):
                    echo(f"{cell.key}: the older cell's checkpoints removed ({state.why}); starts at epoch 0")
                if state.run_id:
                    tracker.supersede(state.run_id, state.why)
            if owned:
                todo.extend(owned)
                ray_started = True
                stop.pop("tune", None)
                _tune(
                    spec,
                    output,
                    plan,
                    kind,
                    extras,
                    owned,
                    tracker,
                    parent,
                    storage,
                    uri,
                    stop,
                    outcome,
                    address=address,
                    verbose=verbose,
                    echo=echo,
                )
                if "signal" not in stop:
                    for cell in owned:
                        owners.release(cell.key)
            if "signal" in stop:
                break
            remaining = [c for c in remaining if c.key in others]
            if remaining and not wait:
                outcome.refused.update(others)
                break
            if remaining and not owned:
                time.sleep(2.0)
    except Interrupted as err:
        stop["signal"] = err.signum
    finally:
        if "signal" in stop:
            outcome.signal = stop["signal"]
            if ray_started:
                _shutdown_ray()  # the trials and their Train workers go with it, before runs are ended
            outcome.killed = _end_cut_off(tracker, todo, outcome)
        try:
            _end_parent(tracker, parent, plan, outcome, todo)
        finally:
            owners.release_all()
            for s, handler in previous.items():
                signal.signal(s, handler)
    return outcome


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _end_cut_off(tracker: Tracker, todo: list[Cell], outcome: SweepOutcome) -> list[str]:
    """End KILLED every run of ours that was cut off (RUNNING or SCHEDULED), so no run lies RUNNING."""
    runs = tracker.cell_runs()
    killed = []
    for cell in todo:
        found = runs.get(cell.key) or []
        if cell.key in outcome.failed or not found:
            continue
        run = found[0]
        if run.data.tags.get(TAG_STATUS) != FINISHED and run.info.status in ("RUNNING", "SCHEDULED"):
            tracker.end_run(run.info.run_id, "KILLED")
            killed.append(cell.key)
    return killed


def _already_recorded(plan: Plan) -> bool:
    """True when every cell is finished and current and the parent run already says so.

    Judged on the parent run planning read from the SQLite store (no MLflow import, no second read),
    so a rerun of a finished sweep costs about what planning costs; a server store, or anything left
    to run, tag or end, opens the store.
    """
    parent = plan.parent
    if parent is None or plan.todo or any(plan.state(c.key).why for c in plan.cells):
        return False
    counts = parent.data.metrics
    finished = counts.get("cells_finished") == counts.get("cells_total") == len(plan.cells)
    return parent.info.status == "FINISHED" and finished


def _end_parent(tracker: Tracker, parent: str, plan: Plan, outcome: SweepOutcome, todo: list[Cell]) -> None:
    """The sweep's parent run ends FINISHED, FAILED (a cell failed) or KILLED, with counts as metrics."""
    finished = tracker.finished_cells()
    done = sum(1 for c in plan.cells if c.key in finished)
    counts = {
        "cells_total": len(plan.cells),
        "cells_finished": done,
        "cells_skipped": len(plan.finished),
        "cells_run": len(todo),
        "cells_failed": len(outcome.failed),
        "cells_killed": len(outcome.killed),
        "cells_refused": len(outcome.refused),
    }
    status = "KILLED" if outcome.signal else "FAILED" if outcome.failed else "FINISHED"
    tracker.end_run(parent, status, counts)


def _tune(
    spec: ExperimentConfig,
    output: Path,
    plan: Plan,
    kind: str,
    extras: dict[str, dict[str, Any]],
    todo: list[Cell],
    tracker: Tracker,
    parent: str,
    storage: str,
    uri: str,
    stop: dict[str, int],
    outcome: SweepOutcome,
    *,
    address: str | None,
    verbose: bool,
    echo: Echo,
) -> None:
    needed = {ds.label for ds in spec.datasets} if kind == "pretrain" else {c.dataset for c in todo}
    caches = prepare_datasets(spec, output, needed, echo)
    roots = {ds.label: str(dataset_root(spec, ds, output)) for ds in spec.datasets}
    recorded = {**recorded_tags(), **code_versions(kind)}

    # Tune's own SIGINT handler prints its Tuner.restore hint; ours stops the grid and says how to resume
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # with --wait, a second round of cells reuses this Ray; Ray is not imported before init_ray set
    # its environment (it reads RAY_AUTH_MODE on import)
    if "ray" not in sys.modules or not sys.modules["ray"].is_initialized():
        init_ray(spec, address, verbose, log_dir=output / "logs")
    from ray import tune

    from harness.worker.trial import (  # imports Ray: only after init_ray set its environment
        GRID_PARAM,
        run_cell,
    )

    if kind == "train" and spec.search is not None:  # each cell trains its group's chosen configuration
        from harness.search.driver import apply_searches

        todo = apply_searches(
            spec,
            todo,
            output=output,
            caches=caches,
            tracker=tracker,
            parent_run_id=parent,
            storage_path=storage,
            echo=echo,
        )
    res = spec.resources
    configs = []
    for cell in todo:
        digest = cell_digest(cell, plan.digests)
        tags = dict(recorded, **({TAG_DATA_DIGEST: digest} if digest else {}))
        configs.append(
            CellJob(
                cell=cell,
                cache_paths=caches,
                tracking_uri=uri,
                experiment_id=tracker.experiment_id,
                parent_run_id=parent,
                storage_path=storage,
                resources=res,
                tags=tags,
                dataset_roots=roots,
                **extras[cell.key],
            ).model_dump(mode="json")
        )
    progress = _Progress(len(todo), res.max_concurrent_trials, echo, GRID_PARAM)

    class _StopOnSignal(tune.Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            return "signal" in stop

        def stop_all(self) -> bool:
            return "signal" in stop

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
            stop=_StopOnSignal(),
        ),
    )
    stop["tune"] = 1
    mark("tune_fit_start")
    results = tuner.fit()
    mark("tune_fit_end")
    if "signal" in stop:
        return
    for result in results:
        if result.error is None:
            continue
        key = result.config[GRID_PARAM]["cell"]["key"]
        outcome.failed.append(key)
        _fail_run(tracker, key, parent, kind, result.error)


def _fail_run(tracker: Tracker, key: str, parent: str, kind: str, error: BaseException) -> None:
    """End the cell's run FAILED with its error; a cell that failed before its worker made a run gets one."""
    import traceback

    text = "".join(traceback.format_exception(error)) if isinstance(error, BaseException) else str(error)
    runs = tracker.cell_runs().get(key) or []
    if runs and runs[0].info.status != "FAILED" and runs[0].data.tags.get(TAG_STATUS) != FINISHED:
        run_id = runs[0].info.run_id
    else:
        run_id, _ = tracker.cell_run(
            key, parent, tags={}, params={}, kind="cell" if kind == "train" else kind
        )
    tracker.fail_cell(run_id, text)
