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
from harness.plan.provenance import code_versions, recorded_tags
from harness.plan.sweep_plan import SweepPlan
from harness.tracking.tags import FINISHED, KIND_CELL, TAG_DATA_DIGEST, TAG_STATUS
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

    from harness.worker.trial import run_cell  # imports Ray: only after init_ray set its environment

    if plan.kind == "train" and plan.spec.search is not None:  # each cell trains its search's choice
        from harness.search.driver import apply_searches

        cells = apply_searches(plan, cells, caches, driver.tracker, driver.parent, driver.echo)
    provenance = {**recorded_tags(), **code_versions(plan.kind)}  # the same for every cell of the round
    jobs = [cell_job(plan, cell, caches, driver.tracker, driver.parent, provenance) for cell in cells]
    res = plan.spec.resources
    progress = Progress(len(cells), res.max_concurrent_trials, driver.echo)

    class _StopOnSignal(tune.Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            return "signal" in stop

        def stop_all(self) -> bool:
            return "signal" in stop

    tuner = tune.Tuner(
        tune.with_resources(run_cell, {"CPU": TRIAL_CPUS}),
        param_space={GRID_PARAM: tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=res.max_concurrent_trials,
            # Every cell asks the same resources: reuse the trial actors instead of importing torch anew.
            reuse_actors=True,
            trial_name_creator=lambda t: t.config[GRID_PARAM]["cell"]["key"],
            trial_dirname_creator=lambda t: t.config[GRID_PARAM]["cell"]["key"],
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
        if result.error is None:
            continue
        key = result.config[GRID_PARAM]["cell"]["key"]
        driver.outcome.failed.append(key)
        fail_run(driver.tracker, key, driver.parent, plan.kind, result.error)


def _tune_storage(storage: str) -> str:
    return str(Path(storage) / "tune") if "://" not in storage else f"{storage}/tune"


def cell_job(
    plan: SweepPlan, cell: Cell, caches: dict[str, str], tracker: Tracker, parent: str, provenance: dict
) -> dict:
    """What the cell's trial receives, as JSON: the cell, where everything is, its provenance tags."""
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
    ).model_dump(mode="json")


def fail_run(tracker: Tracker, key: str, parent: str, kind: str, error: BaseException) -> None:
    """End the cell's run FAILED with its error; a cell that failed before its worker made a run gets one."""
    import traceback

    text = "".join(traceback.format_exception(error)) if isinstance(error, BaseException) else str(error)
    runs = tracker.cell_runs().get(key) or []
    if runs and runs[0].info.status != "FAILED" and runs[0].data.tags.get(TAG_STATUS) != FINISHED:
        run_id = runs[0].info.run_id
    else:
        run_id, _ = tracker.cell_run(
            key, parent, tags={}, params={}, kind=KIND_CELL if kind == "train" else kind
        )
    tracker.fail_cell(run_id, text)
