"""One round of the sweep as a Ray Tune grid: prepare the data, start (or join) Ray, build each cell's
job from the plan, run the grid, and end the runs of the cells that failed."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.driver.outcome import SweepOutcome
from harness.driver.prepare import prepare_datasets
from harness.driver.progress import Progress
from harness.driver.ray_setup import TRIAL_CPUS, init_ray
from harness.plan.cells import GRID_PARAM, Cell, CellJob
from harness.plan.lanes import is_lane
from harness.plan.provenance import code_versions, recorded_tags
from harness.plan.sweep_plan import SweepPlan
from harness.tracking.failures import fail_run
from harness.tracking.tags import FINISHED, TAG_DATA_DIGEST, TAG_STATUS
from mmder.timing import mark

if TYPE_CHECKING:
    from harness.tracking.store import Tracker


class Round(Protocol):
    """What a round of the grid reads and writes of its driver (:class:`harness.driver.sweep.SweepDriver`)."""

    plan: SweepPlan
    tracker: Tracker | None
    parent: str
    stop: dict[str, int]
    outcome: SweepOutcome
    address: str | None
    verbose: bool
    echo: Callable[[str], None]


def run_grid(driver: Round, cells: list[Cell]) -> None:
    """Run ``cells`` (owned by ``driver``) as one Tune grid; failed cells go to ``driver.outcome``."""
    plan, stop = driver.plan, driver.stop
    assert driver.tracker is not None
    caches = prepare_datasets(plan, plan.datasets_read_by(cells), driver.echo)
    # Tune's own SIGINT handler prints its Tuner.restore hint; ours stops the grid and says how to resume
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # with --wait, a second round of cells reuses this Ray; Ray is not imported before init_ray set
    # its environment (it reads RAY_AUTH_MODE on import)
    if "ray" not in sys.modules or not sys.modules["ray"].is_initialized():
        init_ray(plan.spec, driver.address, driver.verbose, log_dir=plan.places.log_dir)
    from ray import tune

    from harness.worker.trial import run_trial  # imports Ray: only after init_ray set its environment

    if plan.kind == "train" and plan.spec.search is not None:  # each cell trains its search's choice
        from harness.search.driver import apply_searches

        cells = apply_searches(plan, cells, caches, driver.tracker, driver.parent, driver.echo)
    provenance = {**recorded_tags(), **code_versions(plan.kind)}  # the same for every cell of the round
    jobs, lanes = trial_jobs(plan, cells, caches, driver.tracker, driver.parent, provenance)
    res = plan.spec.resources
    local = None if plan.places.remote_storage else Path(plan.places.storage)
    progress = Progress(len(cells), res.max_concurrent_trials, driver.echo, lanes, local)

    class _StopOnSignal(tune.Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            return "signal" in stop

        def stop_all(self) -> bool:
            return "signal" in stop

    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"CPU": TRIAL_CPUS}),
        param_space={GRID_PARAM: tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=res.max_concurrent_trials,
            # Every cell asks the same resources: reuse the trial actors instead of importing torch anew.
            reuse_actors=True,
            trial_name_creator=lambda t: trial_label(t.config[GRID_PARAM]),
            trial_dirname_creator=lambda t: trial_label(t.config[GRID_PARAM]),
        ),
        run_config=tune.RunConfig(
            # two sweeps (of one experiment or two) may start in the same second on one output folder
            name=f"{plan.kind}-{plan.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            storage_path=_tune_storage(plan.places.storage),
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
        job = result.config[GRID_PARAM]
        if is_lane(job):  # a lane: its cells that failed alone already say so in their runs
            _lane_outcome(driver, lanes[job["lane"]], result)
            continue
        if result.error is None:
            continue
        key = job["cell"]["key"]
        driver.outcome.failed.append(key)
        fail_run(driver.tracker, key, driver.parent, plan.kind, result.error)


def _lane_outcome(driver: Round, keys: list[str], result: Any) -> None:
    """A lane's failed cells into the outcome; when the lane itself failed, its unfinished cells fail."""
    assert driver.tracker is not None
    if result.error is None:
        driver.outcome.failed += [k for k in str((result.metrics or {}).get("failed", "")).split(",") if k]
        return
    runs = driver.tracker.cell_runs()
    for key in keys:
        run = (runs.get(key) or [None])[0]
        if run is not None and run.data.tags.get(TAG_STATUS) == FINISHED:
            continue
        driver.outcome.failed.append(key)
        if run is None or run.info.status != "FAILED":
            fail_run(driver.tracker, key, driver.parent, driver.plan.kind, result.error)


def trial_label(job: dict) -> str:
    """A trial's name: its cell's key, or its lane's name."""
    return job["lane"] if is_lane(job) else job["cell"]["key"]


def trial_jobs(
    plan: SweepPlan,
    cells: list[Cell],
    caches: dict[str, str],
    tracker: Tracker,
    parent: str,
    provenance: dict,
) -> tuple[list[dict], dict[str, list[str]]]:
    """The grid's trials: lanes of DeepSpeed cells (``resources.reuse_workers``; each a reference to its
    jobs' file), a trial per other cell; and each lane's cell keys, in order."""
    from harness.plan.lanes import LaneJob, cell_cost, lane_name, make_lanes, write_lane

    res = plan.spec.resources

    def job(cell: Cell) -> CellJob:
        return cell_job(plan, cell, caches, tracker, parent, provenance)

    laned = [c for c in cells if c.kind == "train" and c.training is not None]
    if not res.reuse_workers or plan.places.remote_storage or plan.kind != "train" or not laned:
        return [job(c).model_dump(mode="json") for c in cells], {}
    in_lanes = {c.key for c in laned}
    sizes = _clip_counts(caches)
    lanes = make_lanes(laned, res.max_concurrent_trials, lambda c: cell_cost(c, lambda d: sizes.get(d, 1)))
    refs = [
        write_lane(LaneJob(name=lane_name(lane), jobs=[job(c) for c in lane]), plan.places.storage)
        for lane in lanes
    ]
    keys = {ref.lane: [c.key for c in lane] for ref, lane in zip(refs, lanes, strict=True)}
    singles = [job(c).model_dump(mode="json") for c in cells if c.key not in in_lanes]
    return [ref.model_dump() for ref in refs] + singles, keys


def _clip_counts(caches: dict[str, str]) -> dict[str, int]:
    """Clips per dataset label, from the prepared caches (for the lanes' longest-first order)."""
    from mmder.data.cache import ClipCache

    counts = {}
    for label, path in caches.items():
        try:
            counts[label] = len(ClipCache.open(path).clips)
        except (OSError, ValueError):
            counts[label] = 1
    return counts


def _tune_storage(storage: str) -> str:
    return str(Path(storage) / "tune") if "://" not in storage else f"{storage}/tune"


def cell_job(
    plan: SweepPlan, cell: Cell, caches: dict[str, str], tracker: Tracker, parent: str, provenance: dict
) -> CellJob:
    """What the cell's trial (or its lane) receives: the cell, where everything is, its provenance tags."""
    places = plan.places
    digest = plan.digest(cell)
    tags = {**provenance, **({TAG_DATA_DIGEST: digest} if digest else {})}
    weights: dict[str, Any] = (
        {"pretrained_path": plan.weights.get(cell.key)}
        if plan.kind == "train"
        else {"encoder_path": str(places.encoder_path(cell.key))}
    )
    return CellJob(
        cell=cell,
        cache_paths=caches,
        tracking_uri=places.tracking_uri,
        experiment_id=tracker.experiment_id,
        parent_run_id=parent,
        storage_path=places.storage,
        resources=plan.spec.resources,
        tags=tags,
        dataset_roots={label: str(root) for label, root in places.dataset_roots.items()},
        **weights,
    )
