"""The Ray Tune trainable for one cell: it builds and fits one Ray Train ``TorchTrainer``.

Train V2 no longer runs as a Tune trainable itself; a small Tune function acts as the trial's driver
and returns the cell's final metrics to Tune. Epochs are not forwarded to Tune (nothing in a grid
reads them: workers log them to MLflow, and ``TuneReportCallback`` would start two queue actors per
cell); a search's trials do forward them, for pruning (:mod:`harness.search.trial`).

Every start of a cell is a fresh Train run (``<storage>/<key>/attempt-NNN``, :mod:`harness.worker.resume`);
its workers resume from the newest complete checkpoint of any earlier attempt, so a crash of the
sweep's driver (or a torn Ray snapshot) costs at most the epoch in flight.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from harness.experiment.config import ResourcesConfig
from harness.plan.cells import GRID_PARAM
from harness.plan.lanes import is_lane
from harness.worker.memory import GIB, memory_verdict, records_dir, release_records
from harness.worker.placement import fit_watched
from harness.worker.resume import attempt_run, discard_attempts, is_remote, prune_cell
from harness.worker.stall import StallBounds, StallWatch
from harness.worker.train_actors import NoDatasetActor
from mmder.timing import mark


class CellTrainer(NoDatasetActor, TorchTrainer):
    """A ``TorchTrainer`` that starts no Ray Data actor when it is given no Ray Dataset."""


class CellOutOfMemory(RuntimeError):
    """A worker of the cell was killed for memory: the message says by whom and at which limit."""


class CellStalled(RuntimeError):
    """The cell made no progress for longer than its bound, as often as its failure budget allows."""


def fit_cell_watched(
    trainer: TorchTrainer,
    key: str,
    world_size: int,
    per_worker: dict[str, float],
    cells: list[str] | None = None,
    stall: StallWatch | None = None,
) -> Any:
    """``trainer.fit`` under the placement and stall watchdogs; a failure that was a memory kill, or a
    stall past the budget, says so.

    ``key``: the cell, or the lane whose ``cells`` the workers train (their memory records).
    """
    records = [records_dir(k) for k in cells or [key]]
    for folder in records:
        release_records(folder)  # what a dead earlier attempt on this node left
    try:
        return fit_watched(trainer.fit, key, world_size, per_worker, watch=stall.poll if stall else None)
    except Exception as err:
        text = f"{type(err).__name__}: {err}\n{err.__cause__ or ''}"
        verdict = next((v for v in (memory_verdict(text, r) for r in records) if v), None)
        if verdict is None and stall is not None and stall.fired and cells is None:
            raise CellStalled(stall.fired) from err
        if verdict is None:
            raise
        print(f"[{key}] {verdict}", flush=True)
        raise CellOutOfMemory(verdict) from err
    finally:
        for folder in records:
            release_records(folder)


def worker_resources(resources: ResourcesConfig) -> dict[str, float]:
    """What one Train worker of a cell (or of a search trial) asks the cluster for."""
    per_worker: dict[str, float] = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = 1
    if resources.memory_per_worker_gb is not None:  # Ray counts memory in bytes
        per_worker["memory"] = resources.memory_per_worker_gb * GIB
    return per_worker


def scaling(resources: ResourcesConfig, world_size: int) -> ScalingConfig:
    """The worker group of a cell or a search trial: ``world_size`` workers of :func:`worker_resources`."""
    return ScalingConfig(
        num_workers=world_size, use_gpu=resources.use_gpu, resources_per_worker=worker_resources(resources)
    )


def fresh_attempt(storage: str, key: str, world_size: int) -> tuple[str, str]:
    """A new attempt of the cell (:func:`attempt_run`), after pruning what earlier ones left. Call only
    while none of the cell's runs is alive (the sweep owns it and this trial is its start)."""
    if not is_remote(storage):
        for path in prune_cell(Path(storage) / key, world_size):
            print(f"[{key}] removed {path.relative_to(Path(storage))}", flush=True)
    return attempt_run(storage, key)


def cell_run_config(storage: str, key: str, world_size: int, max_failures: int) -> RunConfig:
    """The Train ``RunConfig`` of a fresh attempt of the cell, after pruning what earlier ones left.

    Pruning runs here, before the new attempt exists and while none of the cell's runs is alive.
    """
    run_storage, run_name = fresh_attempt(storage, key, world_size)
    return RunConfig(
        name=run_name,
        storage_path=run_storage,
        failure_config=FailureConfig(max_failures=max_failures),
        # The latest checkpoint is all a resume needs; older ones are only disk.
        checkpoint_config=CheckpointConfig(num_to_keep=1),
    )


def stall_watch(
    storage: str, attempts: dict[str, str], resources: ResourcesConfig, label: str
) -> StallWatch | None:
    """The trial's stall watch over its cells (their attempt folders of this start); none on s3://."""
    bounds = StallBounds.of(resources)
    if is_remote(storage) or not bounds.on:
        return None
    return StallWatch(Path(storage), list(attempts), attempts, bounds, label)


def run_trial(trial_config: dict[str, Any]) -> dict[str, Any]:
    """The grid's one trainable: a lane of cells (:func:`run_lane`), or a cell alone (:func:`run_cell`)."""
    return run_lane(trial_config) if is_lane(trial_config[GRID_PARAM]) else run_cell(trial_config)


def run_cell(trial_config: dict[str, Any]) -> dict[str, Any]:
    """Tune function trainable: one Train job of ``num_workers`` DeepSpeed workers for one cell."""
    from harness.worker.train_loop import pretrain_cell, train_cell  # lazily: the whole stack

    config = trial_config[GRID_PARAM]
    key = config["cell"]["key"]
    mark("trial_start", key)
    if config["cell"]["training"] is None and config["cell"]["kind"] == "train":
        # a classical baseline: one process, no DeepSpeed, no checkpoints; runs in the trial itself
        from harness.plan.cells import CellJob
        from harness.worker.baseline import baseline_cell

        value = baseline_cell(CellJob.model_validate(config))
        return {f"final_{k}": v for k, v in value.items() if isinstance(v, int | float)}
    resources = ResourcesConfig.model_validate(config["resources"])
    storage = config["storage_path"]
    world_size = resources.num_workers
    per_worker = worker_resources(resources)
    run_config = cell_run_config(storage, key, world_size, resources.max_failures)
    trainer = CellTrainer(
        pretrain_cell if config["cell"]["kind"] == "pretrain" else train_cell,
        train_loop_config=config,
        scaling_config=scaling(resources, world_size),
        run_config=run_config,
    )
    # says which resources are missing, instead of Train's silent wait for a group that cannot fit
    mark("train_fit_start", key)
    watch = stall_watch(storage, {key: run_config.name}, resources, key)
    result = fit_cell_watched(trainer, key, world_size, per_worker, stall=watch)
    mark("train_fit_end", key)
    if not is_remote(storage):  # the run is over: its strays and the older attempts can go
        prune_cell(Path(storage) / key, world_size, current=run_config.name)
    if resources.keep_checkpoints == "none":  # finished (its run already says so): nothing will resume it
        discard_attempts(storage, key)
    value = dict(result.return_value or {})
    value.pop("done", None)
    mark("trial_end", key)
    return {f"final_{k}": v for k, v in value.items() if isinstance(v, int | float) and v is not None}


def run_lane(trial_config: dict[str, Any]) -> dict[str, Any]:
    """Tune function trainable: one Train job whose worker group trains the lane's cells in turn
    (:mod:`harness.worker.lane`); returns which finished and which failed (their runs say so)."""
    from harness.plan.lanes import LANES_FOLDER, LaneRef
    from harness.worker.lane import train_lane

    lane = LaneRef.model_validate(trial_config[GRID_PARAM]).read()
    first = lane.jobs[0]
    mark("trial_start", first.cell.key)
    resources, storage = first.resources, first.storage_path
    world_size = resources.num_workers
    attempts = {}
    for key in lane.keys:
        attempts[key] = fresh_attempt(storage, key, world_size)[1]
    run_storage, run_name = attempt_run(str(Path(storage) / LANES_FOLDER), lane.name)
    budget = -1 if resources.max_failures < 0 else (resources.max_failures + 1) * len(lane.jobs)
    trainer = CellTrainer(
        train_lane,
        train_loop_config=lane.model_copy(update={"attempts": attempts}).model_dump(mode="json"),
        scaling_config=scaling(resources, world_size),
        run_config=RunConfig(
            name=run_name,
            storage_path=run_storage,
            failure_config=FailureConfig(max_failures=budget),
            # the cells' checkpoints live in their own folders, pruned by the lane's rank 0
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            callbacks=[_cell_done_callback()],  # each cell's line of progress
        ),
    )
    mark("train_fit_start", first.cell.key)
    try:
        watch = stall_watch(storage, attempts, resources, lane.name)
        result = fit_cell_watched(
            trainer, lane.name, world_size, worker_resources(resources), lane.keys, stall=watch
        )
    finally:
        shutil.rmtree(run_storage, ignore_errors=True)  # Ray's own files of the lane's runs, read by none
    last = lane.jobs[-1].cell.key  # the bench reads the lane's end as its last cell's
    mark("train_fit_end", last)
    value = dict(result.return_value or {})
    finished = [k for k in str(value.get("finished", "")).split(",") if k]
    for key in finished:
        if resources.keep_checkpoints == "none":
            discard_attempts(storage, key)
    mark("trial_end", last)
    return {"finished": ",".join(finished), "failed": str(value.get("failed", ""))}


def _cell_done_callback() -> Any:
    """Train's ``TuneReportCallback`` forwarding only a lane's end-of-cell reports (its progress lines):
    the epochs are in MLflow, and nothing in a grid reads them from Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from harness.plan.lanes import CELL_DONE

    class CellDoneReport(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if metrics and CELL_DONE in metrics[0]:
                super().after_report(run_context, metrics, checkpoint)
                _until_taken(self._training_actor_item_queue)

    return CellDoneReport()


def _until_taken(queue: Any, poll_s: float = 0.005, limit_s: float = 120.0) -> None:
    """Return once the trial has taken the forwarded report off its queue (of one item).

    Tune's function trainable moves such a report, on the trial's main thread, into the trial's result
    queue of one, which only that thread empties; the lane function's own final report goes into the
    same queue when it returns. A report still in flight as the lane ended made the two puts race, and
    the main thread blocked forever on a queue only it reads: a sweep hung with every cell finished
    (once in a clean-clone run of the suite; py-spy: the trial's MainThread in ``Queue.put`` from
    ``_report_training_result``, the function's thread gone). Waiting here keeps Train's run, and so
    the lane function, from ending before the report is taken.
    """
    import time

    deadline = time.monotonic() + limit_s
    while not queue.empty() and time.monotonic() < deadline:
        time.sleep(poll_s)
