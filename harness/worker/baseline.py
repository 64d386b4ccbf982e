"""A classical baseline setting (openSMILE functionals + SVM) as a cell, in exactly the deep cells' folds.

Runs in the Tune trial itself (one process, no DeepSpeed): the folds come from the same cache rows as
:func:`~harness.worker.cell_data.build_cell`'s, and each row's audio file from the corpus listing the
cache was made of. Features are cached next to the clip cache, so every fold and seed extracts them once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness.plan.cells import CellJob
from harness.tracking.store import Tracker
from harness.tracking.tags import (
    FINAL_UAR,
    FINAL_WAR,
    PARAM_BASELINE,
    TAG_DATA_DIGEST,
    TAG_DEVICE,
    TAG_PRECISION,
    TAG_TEST_SPEAKERS,
    TAG_WORLD_SIZE,
    WALL_SECONDS,
)
from harness.worker.cell_artifacts import cell_artifacts
from harness.worker.run_info import cell_tags, flat_params, log_cell_dataset, predictions_rows


def baseline_cell(job: CellJob) -> dict[str, Any]:
    """Fit and test the cell's baseline, log it as the cell's run; returns WAR/UAR in percent."""
    from mmder.eval.baseline import BASELINES

    cell = job.cell
    baseline = BASELINES[cell.setting]
    t0 = time.monotonic()
    cache, fold, truth, predicted, probs, metrics = _fit_and_test(job)
    per_speaker = cell.preprocess.speaker_norm != "none"
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
            f"{PARAM_BASELINE}features": baseline.feature_set,
            f"{PARAM_BASELINE}kernel": baseline.kernel,
            f"{PARAM_BASELINE}C": baseline.C,
            f"{PARAM_BASELINE}speaker_norm": per_speaker,
        },
    )
    if created and TAG_DATA_DIGEST in job.tags:
        log_cell_dataset(tracker, run_id, job, cache, fold)
    rows = [(int(i), int(t), int(p)) for i, t, p in zip(fold.test_idx, truth, predicted, strict=True)]
    tracker.finish_cell(
        run_id,
        final={
            FINAL_UAR: 100.0 * metrics["uar"],
            FINAL_WAR: 100.0 * metrics["war"],
            WALL_SECONDS: time.monotonic() - t0,
        },
        confusion=metrics["confusion"],
        class_names=list(cache.classes),
        predictions=predictions_rows(cache, rows, probabilities=probs),  # where the model gives them
        extra=cell_artifacts(job, metrics["confusion"], list(cache.classes)),
    )
    return {"war": 100.0 * metrics["war"], "uar": 100.0 * metrics["uar"], "run_id": run_id}


def _fit_and_test(job: CellJob) -> tuple[Any, Any, Any, Any, Any, dict[str, Any]]:
    """(cache, fold, true labels, predicted labels, class probabilities or None, metrics) of the cell's
    baseline on its fold."""
    from mmder.data.cache import ClipCache
    from mmder.data.corpora import list_corpus
    from mmder.data.folds import make_folds
    from mmder.eval.baseline import BASELINES, extract_features, fit_predict_proba
    from mmder.eval.metrics import classification_metrics

    cell = job.cell
    baseline = BASELINES[cell.setting]
    cache_path = Path(job.cache_paths[cell.dataset])
    cache = ClipCache.open(cache_path)
    groups = [c.group for c in cache.clips]
    folds = make_folds(cell.dataset_config.protocol, cache.speakers, groups, clips=cache.clips)
    fold = folds[cell.fold]
    listing = list_corpus(cell.dataset_config.corpus, cache.meta["root"], **cell.dataset_config.options)
    audio = {c.clip_id: c.audio for c in listing.clips}
    x = extract_features(
        [audio[c.clip_id] for c in cache.clips], baseline.feature_set, cache_path.parent / "opensmile"
    )
    y = cache.labels
    # preprocess.speaker_norm: the baseline's features get the deep cells' speaker normalisation too
    per_speaker = cell.preprocess.speaker_norm != "none"
    speakers = cache.speakers if per_speaker else None
    predicted, probs = fit_predict_proba(
        x,
        y,
        fold.train_idx,
        fold.test_idx,
        baseline.kernel,
        baseline.C,
        cell.seed,
        speakers,
        classes=range(len(cache.classes)),
    )
    truth = y[fold.test_idx]
    metrics = classification_metrics(truth.tolist(), predicted.tolist(), len(cache.classes))
    return cache, fold, truth, predicted, probs, metrics
