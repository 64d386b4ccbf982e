"""The function every Ray Train worker runs for one cell: data -> model -> ``mmder.train.loop.fit``.

It lives in an importable module (cloudpickle cannot ship ``deepspeed.ops`` from ``__main__``), uses
absolute paths only (Train workers change directory), and is the one place where ``fit``'s callback is
wired to ``ray.train.report`` and rank 0's MLflow logging.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import ray.train
import torch

from harness.plan.cells import CellJob
from harness.tracking.store import EpochLog, FinishedMeanwhile, Tracker
from harness.tracking.tags import (
    FINAL_LOSS,
    FINAL_UAR,
    FINAL_WAR,
    KIND_PRETRAIN,
    LEGACY_EPOCH_NAMES,
    LOSS,
    SELECTED_EPOCH,
    TAG_DATA_DIGEST,
    TAG_ENCODER,
    TAG_ENCODER_PATH,
    TAG_PRETRAIN_CLIPS,
    TAG_PRETRAIN_EXCLUDED,
    TAG_PRETRAIN_SPEAKERS,
    TAG_PRETRAINED,
    TAG_RESUMED,
    TAG_SEARCH,
    TEST_UAR,
    TEST_WAR,
    WALL_SECONDS,
)
from harness.worker.cell_artifacts import cell_artifacts
from harness.worker.cell_data import build_cell, fit_cell, tensor_digest, tested_cache_path
from harness.worker.faults import maybe_crash, maybe_exhaust_memory, maybe_fail, maybe_pause
from harness.worker.memory import WorkerMemory, records_dir, watch_worker
from harness.worker.ranks import agree
from harness.worker.resume import copy_checkpoint, drop_older_checkpoints, is_remote, resume_from
from harness.worker.run_info import (
    cell_tags,
    device_kind,
    flat_params,
    grid_tags,
    log_cell_dataset,
    predictions_rows,
    run_tags,
)
from harness.worker.stall import Beats
from mmder.disk import folder_bytes, require_space
from mmder.timing import mark, mark_process_start


def train_cell(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train loop for one cell in a Train job of its own; ``config`` is the trial's :class:`CellJob`."""
    job = CellJob.model_validate(config)
    mark_process_start("worker_process", job.cell.key)
    rank, memory = start_worker(job, f"mmder-{job.cell.key}")
    return train_one(job, rank, memory)


def train_one(job: CellJob, rank: int, memory: WorkerMemory, attempt: str | None = None) -> dict[str, Any]:
    """Train and test one cell in this worker group; ``attempt``: the cell's attempt folder in a lane
    (:mod:`harness.worker.lane`), where its checkpoints go instead of the Train run's own folder."""
    cell = job.cell
    mark("worker_entry", cell.key)
    assert cell.training is not None, "a train cell carries its training section"
    beats = _beats(job, rank)  # before the data: a read that hangs is watched too
    parts = build_cell(
        cell, job.cache_paths[cell.dataset], job.pretrained_path, tested_cache_path(cell, job.cache_paths)
    )
    mark("cell_built", cell.key)
    meanwhile: FinishedMeanwhile | None = None
    tracker = run_id = epochs = None
    try:
        if rank == 0:
            tracker, run_id, epochs = _open_train_run(job, parts)
    except FinishedMeanwhile as done:
        meanwhile = done
    if agree(meanwhile is not None):
        return _finished_meanwhile(cell.key, meanwhile, len(parts["fold"].test_idx))
    mark("tracking_ready", cell.key)
    maybe_fail(cell.key)
    maybe_exhaust_memory(cell.key, rank, cell.world_size, memory.limit_bytes)

    t0 = time.monotonic()
    with resume_from(
        job.storage_path, cell.key, cell.world_size, ray_checkpoint=attempt is None
    ) as resume_dir:
        result = fit_cell(cell, parts, _epoch_reporter(job, epochs, attempt, beats), resume_dir)
    if tracker is not None and run_id is not None and epochs is not None:
        _finish_train_run(tracker, run_id, epochs, job, parts, result, time.monotonic() - t0)
    mark("worker_end", cell.key)
    return {
        "war": 100.0 * result.war,
        "uar": 100.0 * result.uar,
        "run_id": run_id,
        "test_clips": len(parts["fold"].test_idx),
        "resumed_from_epoch": result.resumed_from_epoch,
    }


def _finished_meanwhile(key: str, done: FinishedMeanwhile | None, test_clips: int) -> dict[str, Any]:
    """A cell another process finished since the sweep planned it: its run's result, nothing trained."""
    metrics = done.metrics if done is not None else {}
    if done is not None:
        print(
            f"[{key}] finished meanwhile in run {done.run_id} (a worker of an earlier sweep): "
            "not trained again"
        )
    return {
        "war": metrics.get(FINAL_WAR, float("nan")),
        "uar": metrics.get(FINAL_UAR, float("nan")),
        "run_id": done.run_id if done is not None else None,
        "test_clips": test_clips,
        "resumed_from_epoch": None,
    }


def start_worker(job: CellJob, name: str) -> tuple[int, WorkerMemory]:
    """This worker's rank, its torch threads set and its memory watched for the cell (and limited, when
    asked, in the cgroup ``name``-r<rank>: a lane keeps one for all its cells)."""
    torch.set_num_threads(job.threads)
    rank = ray.train.get_context().get_world_rank()
    return rank, watch_worker(
        records_dir(job.cell.key), rank, job.resources.memory_per_worker_gb, f"{name}-r{rank}"
    )


def _beats(job: CellJob, rank: int) -> Beats | None:
    """The cell's beats for its trial's stall watch (:mod:`harness.worker.stall`), begun; none on s3://."""
    if is_remote(job.storage_path):
        return None
    beats = Beats(Path(job.storage_path) / job.cell.key, rank)
    beats.start()
    return beats


def _open_train_run(job: CellJob, parts: dict[str, Any]) -> tuple[Tracker, str, EpochLog]:
    """Rank 0's run of the cell (created, or resumed), and the epochs it already holds."""
    cell, fold = job.cell, parts["fold"]
    assert cell.training is not None
    tracker = Tracker(uri=job.tracking_uri, experiment_id=job.experiment_id)
    run_id, created = tracker.cell_run(
        cell.key,
        job.parent_run_id,
        tags={
            **cell_tags(cell, device_kind(job), job),
            **run_tags(job, cell.training.precision, fold.test_speakers),
            **({TAG_SEARCH: cell.search_key} if cell.search_key else {}),
        },
        params=flat_params(cell),
    )
    if parts["pretrained_digest"]:
        tracker.tag(run_id, TAG_PRETRAINED, parts["pretrained_digest"])
    if created and TAG_DATA_DIGEST in job.tags:
        log_cell_dataset(tracker, run_id, job, parts["cache"], fold, parts["test_cache"])
    # a resumed run holds the epochs logged before the cut (under today's name, or the one of the code
    # that started it): they are not logged again
    if created:  # a new run holds no epochs: two round trips fewer per cell
        return tracker, run_id, EpochLog(tracker, run_id)
    done = tracker.logged_steps(run_id, TEST_WAR) | tracker.logged_steps(run_id, LEGACY_EPOCH_NAMES[TEST_WAR])
    return tracker, run_id, EpochLog(tracker, run_id, done=done)


def _checkpoint(job: CellJob, checkpoint_dir: str | None, epoch: int) -> ray.train.Checkpoint | None:
    """The epoch's checkpoint for Ray Train to copy into the storage, once the storage can hold it.

    Every rank asks for room for all ranks' shards (they copy at once); the previous checkpoint is
    removed only after the new one is registered, so both must fit.
    """
    if checkpoint_dir is None:
        return None
    if not is_remote(job.storage_path):
        need = folder_bytes(checkpoint_dir) * job.cell.world_size
        require_space(
            job.storage_path,
            need,
            f"the checkpoint of epoch {epoch} of {job.cell.key}",
            "Free some space or set ray.storage_path to a larger disk; a rerun resumes from the last "
            "checkpoint that was written",
        )
    return ray.train.Checkpoint.from_directory(checkpoint_dir)


def _epoch_reporter(
    job: CellJob, epochs: EpochLog | None, attempt: str | None = None, beats: Beats | None = None
) -> Any:
    """``fit``'s per-epoch callback: the epoch's metrics to MLflow (rank 0), then to Ray Train.

    In a lane (``attempt`` set) each rank copies its part of the checkpoint into the cell's own attempt
    folder (Train's checkpoint manager holds one run's checkpoints, and a lane's run is several cells');
    rank 0 then drops the cell's older epochs there.
    """

    def report(result: Any, checkpoint_dir: str | None) -> None:
        metrics = {
            "epoch": result.epoch,
            TEST_WAR: 100.0 * result.war,
            TEST_UAR: 100.0 * result.uar,
            "test_loss": result.test_loss,
            "train_loss": result.train_loss,
            "lr": result.lr,
            "epoch_seconds": result.seconds,
            "train_clips_per_s": result.train_clips_per_s,
            "peak_memory_mb": result.peak_memory_mb,
        }
        if result.val_war is not None:
            metrics.update(val_war=100.0 * result.val_war, val_uar=100.0 * (result.val_uar or 0.0))
        # Logged before the checkpoint is registered: a driver killed in between replays this epoch on
        # resume, and EpochLog skips epochs the run already holds, so each epoch is logged exactly once
        # (logged after, a kill in between lost the epoch's metrics for good). Never raises.
        if epochs is not None:
            epochs.log(result.epoch, {k: v for k, v in metrics.items() if k != "epoch"})
        checkpoint = _checkpoint(job, checkpoint_dir, result.epoch)
        if attempt is None:
            ray.train.report(metrics, checkpoint=checkpoint)
        else:  # a lane: the cell's own folder holds it; Train's run (several cells') registers none
            folder = Path(job.storage_path) / job.cell.key / attempt
            if checkpoint is not None:
                copy_checkpoint(checkpoint.path, folder / f"checkpoint_epoch-{result.epoch:04d}")
            ray.train.report(metrics)  # every rank's copy is complete past this barrier
            if checkpoint is not None and ray.train.get_context().get_world_rank() == 0:
                drop_older_checkpoints(folder, job.cell.world_size)
        if beats is not None:
            beats.epoch(result.epoch)
        maybe_crash(job.storage_path, job.cell.key, result.epoch)
        maybe_pause(job.cell.key, result.epoch, ray.train.get_context().get_world_rank())

    return report


def _finish_train_run(
    tracker: Tracker,
    run_id: str,
    epochs: EpochLog,
    job: CellJob,
    parts: dict[str, Any],
    result: Any,
    seconds: float,
) -> None:
    """The cell's final metrics, confusion matrix, predictions, job and figure; the finished tag last."""
    epochs.flush()
    if result.resumed_from_epoch is not None:
        tracker.tag(run_id, TAG_RESUMED, str(result.resumed_from_epoch))
    final = {FINAL_UAR: 100.0 * result.uar, FINAL_WAR: 100.0 * result.war, WALL_SECONDS: seconds}
    if result.selected_epoch is not None:  # with a validation split: the epoch chosen on it
        final[SELECTED_EPOCH] = float(result.selected_epoch)
    tracker.finish_cell(
        run_id,
        final=final,
        confusion=result.confusion,
        class_names=list(parts["cache"].classes),
        predictions=predictions_rows(
            parts["cache"], result.predictions, parts["test_cache"], result.probabilities or None
        ),
        extra=cell_artifacts(job, result.confusion, list(parts["cache"].classes)),
    )


def pretrain_cell(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train loop of one MAE pre-training: the clips of its fold's training speakers, labels unused."""
    from mmder.data.cache import ClipCache
    from mmder.data.dataset import FusedClipDataset
    from mmder.data.folds import make_folds, natural_key
    from mmder.models.mae import build_pretrainer
    from mmder.train.pretrain import pretrain

    job = CellJob.model_validate(config)
    cell = job.cell
    assert cell.pretrain is not None and job.encoder_path, "a pre-training cell carries its recipe"
    rank, _ = start_worker(job, f"mmder-{job.cell.key}")
    beats = _beats(job, rank)
    cache = ClipCache.open(job.cache_paths[cell.dataset])
    norm = cell.preprocess.speaker_norm
    groups = [c.group for c in cache.clips]
    folds = make_folds(cell.dataset_config.protocol, cache.speakers, groups, clips=cache.clips)
    fold = folds[cell.fold]  # never the fold's test speakers: its cells are evaluated on them
    clips = FusedClipDataset(cache, fold.train_idx, cell.setting, seed=cell.seed, speaker_norm=norm)
    seen = sorted({cache.speakers[i] for i in fold.train_idx}, key=natural_key)
    torch.manual_seed(cell.seed)
    model = build_pretrainer(
        cell.model.size,
        image_size=cell.preprocess.image_size,
        num_frames=16,
        patch_size=cell.model.patch_size,
        tubelet_size=cell.model.tubelet_size,
    )
    tracker = run_id = epochs = None
    if rank == 0:
        tracker = Tracker(uri=job.tracking_uri, experiment_id=job.experiment_id)
        run_id, _ = tracker.cell_run(
            cell.key,
            job.parent_run_id,
            tags={
                **grid_tags(cell),
                # which clips the encoder saw: the fold's training speakers, never its test speakers
                TAG_PRETRAIN_CLIPS: f"{len(clips)} clips of the training speakers of {cell.fold_name}",
                TAG_PRETRAIN_SPEAKERS: ",".join(seen)[:5000],
                TAG_PRETRAIN_EXCLUDED: ",".join(fold.test_speakers)[:5000],
                **job.tags,
                **run_tags(job, cell.pretrain.precision, []),
            },
            params=flat_params(cell),
            kind=KIND_PRETRAIN,
        )
        epochs = EpochLog(tracker, run_id, done=tracker.logged_steps(run_id, LOSS))

    def report(result: Any, checkpoint_dir: str | None) -> None:
        metrics = {"epoch": result.epoch, LOSS: result.loss, "lr": result.lr}
        if epochs is not None:  # before the checkpoint, as in train_cell: each epoch logged exactly once
            epochs.log(result.epoch, {LOSS: result.loss, "lr": result.lr})
        ray.train.report(metrics, checkpoint=_checkpoint(job, checkpoint_dir, result.epoch))
        if beats is not None:
            beats.epoch(result.epoch)

    with resume_from(job.storage_path, cell.key, cell.world_size) as resume_dir:
        result = pretrain(model, clips, cell.pretrain, report=report, resume_from=resume_dir, seed=cell.seed)
    if tracker is not None and run_id is not None and epochs is not None:
        _finish_pretrain_run(tracker, run_id, epochs, model, job.encoder_path, result)
    return {"loss": result.loss, "run_id": run_id}


def _finish_pretrain_run(
    tracker: Tracker, run_id: str, epochs: EpochLog, model: Any, encoder_path: str, result: Any
) -> None:
    """Export the encoder the sweep's cells start from, record its digest, end the run finished."""
    from mmder.train.pretrain import export_encoder

    epochs.flush()
    path = export_encoder(model, encoder_path)
    digest = tensor_digest(torch.load(path, weights_only=True)["model"])
    tracker.tag(run_id, TAG_ENCODER, digest)
    tracker.tag(run_id, TAG_ENCODER_PATH, str(path))
    if result.resumed_from_epoch is not None:
        tracker.tag(run_id, TAG_RESUMED, str(result.resumed_from_epoch))
    if math.isnan(result.loss):  # cut off after its last checkpoint: that epoch's loss is in the run
        result.loss = tracker.client.get_run(run_id).data.metrics.get(LOSS, result.loss)
    tracker.finish_run(run_id, {FINAL_LOSS: result.loss}, {})
