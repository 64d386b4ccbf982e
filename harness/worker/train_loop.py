"""The function every Ray Train worker runs for one cell: data -> model -> ``mmder.train.loop.fit``.

It lives in an importable module (cloudpickle cannot ship ``deepspeed.ops`` from ``__main__``), uses
absolute paths only (Train workers change directory), and is the one place where ``fit``'s callback is
wired to ``ray.train.report`` and rank 0's MLflow logging.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import ray.train
import torch

from harness.plan.cells import Cell, CellJob
from harness.tracking.store import EpochLog, Tracker
from harness.tracking.tags import (
    KIND_PRETRAIN,
    TAG_DATA_DIGEST,
    TAG_DEVICE,
    TAG_DEVICE_COUNT,
    TAG_DEVICE_KIND,
    TAG_ENCODER,
    TAG_ENCODER_PATH,
    TAG_PRECISION,
    TAG_PRETRAIN_CLIPS,
    TAG_PRETRAIN_EXCLUDED,
    TAG_PRETRAIN_SPEAKERS,
    TAG_PRETRAINED,
    TAG_RESUMED,
    TAG_SEARCH,
    TAG_TEST_SPEAKERS,
    TAG_WORLD_SIZE,
)
from harness.worker.cell_data import build_cell, tensor_digest
from harness.worker.resume import resume_from
from mmder.timing import mark, mark_process_start


def train_cell(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train loop for one cell; ``config`` is the trial's :class:`CellJob` as JSON."""
    from mmder.train.loop import EpochResult, fit

    job = CellJob.model_validate(config)
    cell = job.cell
    mark_process_start("worker_process", cell.key)
    mark("worker_entry", cell.key)
    assert cell.training is not None, "a train cell carries its training section"
    torch.set_num_threads(job.threads)
    rank = ray.train.get_context().get_world_rank()
    parts = build_cell(cell, job.cache_paths[cell.dataset], job.pretrained_path)
    mark("cell_built", cell.key)
    cache, fold = parts["cache"], parts["fold"]

    tracker = run_id = epochs = None
    if rank == 0:
        tracker = Tracker(uri=job.tracking_uri, experiment_id=job.experiment_id)
        run_id, created = tracker.cell_run(
            cell.key,
            job.parent_run_id,
            tags={
                **cell_tags(cell, _device_kind(job), job),
                **run_tags(job, cell.training.precision, fold.test_speakers),
                **({TAG_SEARCH: cell.search_key} if cell.search_key else {}),
            },
            params=flat_params(cell),
        )
        if parts["pretrained_digest"]:
            tracker.tag(run_id, TAG_PRETRAINED, parts["pretrained_digest"])
        if created and TAG_DATA_DIGEST in job.tags:
            log_cell_dataset(tracker, run_id, job, cache, fold)
        # a resumed run holds the epochs logged before the cut: they are not logged again
        epochs = EpochLog(tracker, run_id, done=tracker.logged_steps(run_id, "war"))
    mark("tracking_ready", cell.key)
    _maybe_fail(cell.key)

    def report(result: EpochResult, checkpoint_dir: str | None) -> None:
        metrics = {
            "epoch": result.epoch,
            "war": 100.0 * result.war,
            "uar": 100.0 * result.uar,
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
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)
        _maybe_crash(job, cell.key, result.epoch)

    t0 = time.monotonic()
    with resume_from(job.storage_path, cell.key, cell.world_size) as resume_dir:
        result = fit(
            parts["model"],
            parts["train"],
            parts["test"],
            len(cache.classes),
            cell.training,
            report=report,
            resume_from=resume_dir,
            seed=cell.seed,
            val_set=parts["val"],
        )

    if tracker is not None and run_id is not None and epochs is not None:
        epochs.flush()
        if result.resumed_from_epoch is not None:
            tracker.tag(run_id, TAG_RESUMED, str(result.resumed_from_epoch))
        clips = cache.clips
        predictions = [
            {
                "clip_id": clips[i].clip_id,
                "speaker": clips[i].speaker,
                "true": cache.classes[t],
                "predicted": cache.classes[p],
            }
            for i, t, p in result.predictions
        ]
        tracker.finish_cell(
            run_id,
            final={
                "final_uar": 100.0 * result.uar,
                "final_war": 100.0 * result.war,
                "wall_seconds": time.monotonic() - t0,
                # with a validation split: the epoch chosen on it, whose test metrics final_* are
                **(
                    {"selected_epoch": float(result.selected_epoch)}
                    if result.selected_epoch is not None
                    else {}
                ),
            },
            confusion=result.confusion,
            class_names=list(cache.classes),
            predictions=predictions,
        )
    mark("worker_end", cell.key)
    return {
        "war": 100.0 * result.war,
        "uar": 100.0 * result.uar,
        "run_id": run_id,
        "test_clips": len(fold.test_idx),
        "resumed_from_epoch": result.resumed_from_epoch,
    }


def pretrain_cell(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train loop of one MAE pre-training: the clips of its fold's training speakers, labels unused."""
    from mmder.data.cache import ClipCache
    from mmder.data.dataset import FusedClipDataset
    from mmder.data.folds import make_folds, natural_key
    from mmder.models.mae import build_pretrainer
    from mmder.train.pretrain import PretrainResult, export_encoder, pretrain

    job = CellJob.model_validate(config)
    cell = job.cell
    assert cell.pretrain is not None and job.encoder_path, "a pre-training cell carries its recipe"
    torch.set_num_threads(job.threads)
    rank = ray.train.get_context().get_world_rank()
    cache = ClipCache.open(job.cache_paths[cell.dataset])
    norm = cell.preprocess.speaker_norm
    folds = make_folds(cell.dataset_config.protocol, cache.speakers, [c.group for c in cache.clips])
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
                "setting": cell.setting,
                "dataset": cell.dataset,
                "fold": cell.fold_name,
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
        epochs = EpochLog(tracker, run_id, done=tracker.logged_steps(run_id, "loss"))

    def report(result: PretrainResult, checkpoint_dir: str | None) -> None:
        metrics = {"epoch": result.epoch, "loss": result.loss, "lr": result.lr}
        if epochs is not None:  # before the checkpoint, as in train_cell: each epoch logged exactly once
            epochs.log(result.epoch, {"loss": result.loss, "lr": result.lr})
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    with resume_from(job.storage_path, cell.key, cell.world_size) as resume_dir:
        result = pretrain(model, clips, cell.pretrain, report=report, resume_from=resume_dir, seed=cell.seed)
    if tracker is not None and run_id is not None and epochs is not None:
        epochs.flush()
        path = export_encoder(model, job.encoder_path)
        digest = tensor_digest(torch.load(path, weights_only=True)["model"])
        tracker.tag(run_id, TAG_ENCODER, digest)
        tracker.tag(run_id, TAG_ENCODER_PATH, str(path))
        if result.resumed_from_epoch is not None:
            tracker.tag(run_id, TAG_RESUMED, str(result.resumed_from_epoch))
        if math.isnan(result.loss):  # cut off after its last checkpoint: that epoch's loss is in the run
            result.loss = tracker.client.get_run(run_id).data.metrics.get("loss", result.loss)
        tracker.finish_run(run_id, {"final_loss": result.loss}, {})
    return {"loss": result.loss, "run_id": run_id}


def baseline_cell(job: CellJob) -> dict[str, Any]:
    """A classical baseline setting (openSMILE functionals + SVM) in exactly the deep cells' folds.

    Runs in the Tune trial itself (one process, no DeepSpeed): the folds come from the same cache rows
    as :func:`build_cell`'s, and each row's audio file from the corpus listing the cache was made of.
    Features are cached next to the clip cache, so every fold and seed extracts them once.
    """
    import numpy as np

    from mmder.data.cache import ClipCache
    from mmder.data.corpora import list_corpus
    from mmder.data.folds import make_folds
    from mmder.eval.baseline import BASELINES, extract_features, fit_predict
    from mmder.eval.metrics import classification_metrics

    cell = job.cell
    baseline = BASELINES[cell.setting]
    t0 = time.monotonic()
    cache_path = Path(job.cache_paths[cell.dataset])
    cache = ClipCache.open(cache_path)
    folds = make_folds(cell.dataset_config.protocol, cache.speakers, [c.group for c in cache.clips])
    fold = folds[cell.fold]
    listing = list_corpus(cell.dataset_config.corpus, cache.meta["root"], **cell.dataset_config.options)
    audio = {c.clip_id: c.audio for c in listing.clips}
    paths = [audio[c.clip_id] for c in cache.clips]
    x = extract_features(paths, baseline.feature_set, cache_path.parent / "opensmile")
    y = cache.labels
    # preprocess.speaker_norm: the baseline's features get the deep cells' speaker normalisation too
    per_speaker = cell.preprocess.speaker_norm != "none"
    predicted = fit_predict(
        x,
        y,
        fold.train_idx,
        fold.test_idx,
        baseline.kernel,
        baseline.C,
        cell.seed,
        cache.speakers if per_speaker else None,
    )
    truth = y[fold.test_idx]
    metrics = classification_metrics(truth.tolist(), predicted.tolist(), len(cache.classes))

    tracker = Tracker(uri=job.tracking_uri, experiment_id=job.experiment_id)
    run_id, created = tracker.cell_run(
        cell.key,
        job.parent_run_id,
        tags={
            **cell_tags(cell, "cpu", job),
            TAG_DEVICE: "cpu",
            TAG_PRECISION: "fp64",  # scikit-learn's SVM
            TAG_WORLD_SIZE: "1",
            TAG_TEST_SPEAKERS: ",".join(fold.test_speakers)[:5000],
        },
        params={
            **flat_params(cell),
            "baseline.features": baseline.feature_set,
            "baseline.kernel": baseline.kernel,
            "baseline.C": baseline.C,
            "baseline.speaker_norm": per_speaker,
        },
    )
    if created and TAG_DATA_DIGEST in job.tags:
        log_cell_dataset(tracker, run_id, job, cache, fold)
    clips = cache.clips
    tracker.finish_cell(
        run_id,
        final={
            "final_uar": 100.0 * metrics["uar"],
            "final_war": 100.0 * metrics["war"],
            "wall_seconds": time.monotonic() - t0,
        },
        confusion=metrics["confusion"],
        class_names=list(cache.classes),
        predictions=[
            {
                "clip_id": clips[i].clip_id,
                "speaker": clips[i].speaker,
                "true": cache.classes[int(t)],
                "predicted": cache.classes[int(p)],
            }
            for i, t, p in zip(np.asarray(fold.test_idx).tolist(), truth, predicted, strict=True)
        ],
    )
    return {"war": 100.0 * metrics["war"], "uar": 100.0 * metrics["uar"], "run_id": run_id}


def cell_tags(cell: Cell, device_kind: str, job: CellJob) -> dict[str, str]:
    """What every cell run is tagged with: where it sits in the grid, its devices, its provenance."""
    return {
        "dataset": cell.dataset,
        "setting": cell.setting,
        "fold": cell.fold_name,
        "seed": str(cell.seed),
        TAG_DEVICE_KIND: device_kind,
        TAG_DEVICE_COUNT: str(cell.world_size),
        **job.tags,
    }


def run_tags(job: CellJob, precision: str, test_speakers: list[str]) -> dict[str, str]:
    """Provenance only a worker knows: the device it resolved, precision, world size, test speakers."""
    tags = {
        TAG_DEVICE: _device_kind(job),
        TAG_PRECISION: precision,
        TAG_WORLD_SIZE: str(ray.train.get_context().get_world_size()),
    }
    if test_speakers:
        tags[TAG_TEST_SPEAKERS] = ",".join(test_speakers)[:5000]
    return tags


def log_cell_dataset(tracker: Tracker, run_id: str, job: CellJob, cache: Any, fold: Any) -> None:
    """The clips the cell saw (its split marked) as an MLflow dataset input named by the data digest."""
    import pandas as pd

    test = set(int(i) for i in fold.test_idx)
    frame = pd.DataFrame(
        [
            {
                "clip_id": c.clip_id,
                "label": c.label,
                "speaker": c.speaker,
                "split": "test" if i in test else "train",
            }
            for i, c in enumerate(cache.clips)
        ]
    )
    cell = job.cell
    source = job.dataset_roots.get(cell.dataset, job.cache_paths[cell.dataset])
    tracker.log_dataset(run_id, frame, cell.dataset, job.tags[TAG_DATA_DIGEST], source)


FAIL_ENV = "MMDER_CHAOS_FAIL_CELL"


def _maybe_fail(key: str) -> None:
    """Fault injection: with $MMDER_CHAOS_FAIL_CELL=TEXT, a cell whose key contains TEXT raises."""
    target = os.environ.get(FAIL_ENV)
    if target and target in key:
        raise RuntimeError(f"{FAIL_ENV}={target}: injected failure of cell {key}")


def _device_kind(job: CellJob) -> str:
    if job.resources.use_gpu and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


CHAOS_ENV = "MMDER_CHAOS_EXIT_AFTER_EPOCH"


def _maybe_crash(job: CellJob, key: str, epoch: int) -> None:
    """Fault injection for recovery drills: with $MMDER_CHAOS_EXIT_AFTER_EPOCH=N the last rank of every
    cell dies (os._exit) once, right after epoch N was checkpointed; Ray Train must restart the worker
    group from that checkpoint (resources.max_failures) and lose nothing but the dying process."""
    target = os.environ.get(CHAOS_ENV)
    ctx = ray.train.get_context()
    if target is None or int(target) != epoch or ctx.get_world_rank() != ctx.get_world_size() - 1:
        return
    marker = Path(job.storage_path) / key / "chaos-done"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(f"[{key}] {CHAOS_ENV}={target}: rank {ctx.get_world_rank()} exits after epoch {epoch}", flush=True)
    os._exit(1)


def flat_params(cell: Cell) -> dict[str, Any]:
    """The cell's sections as flat MLflow params (``training.lr``, ``datasets.0.options.classes``, ...)."""
    flat: dict[str, Any] = {"cell_key": cell.key, "fold_name": cell.fold_name}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            flat[prefix] = value

    walk("", cell.model_dump(mode="json", exclude={"key", "fold_name"}))
    return flat
