"""One search trial: a Tune function that runs a Train job of the cell's workers on validation speakers.

The trial trains the cell with the trial's parameters on the fold's training speakers minus the
held-out validation speakers, and reports the validation metric every epoch (Tune's scheduler prunes on
it; Optuna receives the best epoch's). The test speakers of the fold are never loaded. Rank 0 logs the
trial as an MLflow run nested under the search's run, with the speaker lists it used.
"""

from __future__ import annotations

from typing import Any

import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig
from ray.tune.integration.ray_train import TuneReportCallback

from harness.plan.cells import GRID_PARAM
from harness.search.job import SearchJob, apply_chosen
from harness.tracking.tags import (
    KIND_SEARCH_TRIAL,
    OBJECTIVE,
    TAG_KIND,
    TAG_PARENT,
    TAG_SEARCH,
    TAG_TEST_EXCLUDED,
    TAG_TRAIN_SPEAKERS,
    TAG_TRIAL,
    TAG_TRIAL_STATE,
    TAG_VAL_SPEAKERS,
)
from harness.worker.trial import CellTrainer, scaling


def search_trial(config: dict[str, Any]) -> dict[str, Any]:
    """Tune function trainable: one Train job for one set of the trial's parameters."""
    from ray import tune

    job = SearchJob.model_validate(config[GRID_PARAM])
    trial_id = tune.get_context().get_trial_id()
    trainer = CellTrainer(
        search_trial_loop,
        train_loop_config={**config, "trial_id": trial_id},
        scaling_config=scaling(job.resources, job.cell.world_size),
        run_config=RunConfig(
            name=trial_id,
            storage_path=f"{job.storage_path}/{job.search_key}",
            failure_config=FailureConfig(max_failures=0),  # a failed trial is told to Optuna as failed
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    return {k: v for k, v in (result.return_value or {}).items() if k != "done"}


def trial_params(config: dict[str, Any], job: SearchJob) -> dict[str, Any]:
    return {name: config[name] for name in job.search.space}


def search_trial_loop(config: dict[str, Any]) -> dict[str, Any]:
    """What each Train worker of a search trial runs."""
    import numpy as np

    from harness.tracking.store import Tracker
    from harness.worker.cell_data import build_cell
    from mmder.data.dataset import FusedClipDataset
    from mmder.data.folds import validation_split
    from mmder.train.loop import EpochResult, fit

    job = SearchJob.model_validate(config[GRID_PARAM])
    params = trial_params(config, job)
    cell = apply_chosen(job.cell, job.search, params)
    assert cell.training is not None
    torch.set_num_threads(max(1, int(job.resources.cpus_per_worker)))
    parts = build_cell(cell, job.cache_path)
    cache, fold = parts["cache"], parts["fold"]
    count = job.search.validation_speakers
    train_idx, val_idx = validation_split(
        cache.speakers, fold.train_idx, int(count) if count >= 1 else count, seed=job.search.seed
    )
    norm = cell.preprocess.speaker_norm
    train_set = FusedClipDataset(cache, train_idx, cell.setting, seed=cell.seed, speaker_norm=norm)
    val_set = FusedClipDataset(cache, val_idx, cell.setting, seed=cell.seed, speaker_norm=norm)
    speakers = np.asarray(cache.speakers, dtype=object)
    used = {
        TAG_TRAIN_SPEAKERS: ",".join(sorted(set(speakers[train_idx].tolist()))),
        TAG_VAL_SPEAKERS: ",".join(sorted(set(speakers[val_idx].tolist()))),
        TAG_TEST_EXCLUDED: ",".join(sorted(fold.test_speakers)),
    }

    tracker = run_id = None
    if ray.train.get_context().get_world_rank() == 0:
        tracker = Tracker(uri=job.tracking_uri, experiment_id=job.experiment_id)
        run = tracker.client.create_run(
            job.experiment_id,
            run_name=f"{job.search_key}/{config['trial_id']}",
            tags={
                TAG_KIND: KIND_SEARCH_TRIAL,
                TAG_PARENT: job.search_run_id,
                TAG_SEARCH: job.search_key,
                TAG_TRIAL: config["trial_id"],
                TAG_TRIAL_STATE: "running",
                **used,
            },
        )
        run_id = run.info.run_id
        for name, value in params.items():
            tracker.client.log_param(run_id, name, value)

    best = {"value": float("-inf")}

    def report(result: EpochResult, checkpoint_dir: str | None) -> None:
        value = 100.0 * (result.uar if job.search.objective == "uar" else result.war)
        best["value"] = max(best["value"], value)
        metrics = {
            "val_uar": 100.0 * result.uar,
            "val_war": 100.0 * result.war,
            "val_loss": result.test_loss,
            "train_loss": result.train_loss,
        }
        if tracker is not None and run_id is not None:
            tracker.log_epoch(run_id, result.epoch, metrics)
        # no checkpoint: a search trial that dies is told to Optuna as failed, not resumed
        ray.train.report({**metrics, "epoch": result.epoch, OBJECTIVE: best["value"]})

    result = fit(
        parts["model"], train_set, val_set, len(cache.classes), cell.training, report=report, seed=cell.seed
    )
    if tracker is not None and run_id is not None:
        tracker.client.log_metric(run_id, OBJECTIVE, best["value"])
        tracker.tag(run_id, TAG_TRIAL_STATE, "complete")
        tracker.client.set_terminated(run_id, status="FINISHED")
    return {OBJECTIVE: best["value"], "epochs": result.epochs}
