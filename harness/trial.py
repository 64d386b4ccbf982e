"""The Ray Tune trainable for one cell: it builds and fits one Ray Train ``TorchTrainer``.

Train V2 no longer runs as a Tune trainable itself; a small Tune function acts as the trial's driver
and ``TuneReportCallback`` forwards rank 0's reports to Tune. The Train run is named by the cell's key
under a fixed storage path, so starting the same cell again (after a crash of the sweep's driver)
resumes from the run's latest checkpoint instead of starting over.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from harness.worker import pretrain_cell, train_cell

SNAPSHOT = "checkpoint_manager_snapshot.json"


def remove_stray_checkpoints(run_dir: Path) -> list[Path]:
    """Delete ``checkpoint_*`` folders the run never registered (uploaded just before a kill).

    Ray picks the latest checkpoint from its snapshot, so strays are only wasted disk, but they
    confuse anybody who inspects the folder, and a cell of ViT-L leaves gigabytes of them.
    """
    snapshot = run_dir / SNAPSHOT
    if not snapshot.exists():
        return []
    state = json.loads(snapshot.read_text())
    known = {r["checkpoint_dir_name"] for r in state.get("checkpoint_results", [])}
    latest = state.get("latest_checkpoint_result") or {}
    known.add(latest.get("checkpoint_dir_name"))
    removed = []
    for path in run_dir.glob("checkpoint_*"):
        if path.is_dir() and path.name not in known:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


GRID_PARAM = "job"  # the Tune grid runs over whole job descriptions: {"job": {cell, cache_path, ...}}


def _complete_checkpoint(path: Path, world_size: int) -> bool:
    """Every rank's part of our DeepSpeed checkpoint is there (``latest`` is written last by rank 0)."""
    from mmder.train import CHECKPOINT_TAG

    tag = path / CHECKPOINT_TAG
    return (
        (path / "latest").is_file()
        and (tag / "mp_rank_00_model_states.pt").is_file()
        and len(list(tag.glob("*optim_states.pt"))) >= world_size
    )


def repair_snapshot(run_dir: Path, world_size: int) -> str | None:
    """Mend a torn ``checkpoint_manager_snapshot.json``; returns what was done, None if it was sound.

    Ray rewrites the snapshot in place, so a driver killed mid-write leaves it empty or cut, and Ray
    then refuses to resume that run on every later attempt. Rebuild it in Ray's own schema from the
    newest complete checkpoint folder, or, with none, remove it so the cell starts over.
    """
    snapshot = run_dir / SNAPSHOT
    if not snapshot.exists():
        return None
    try:
        json.loads(snapshot.read_text())
        return None
    except ValueError:
        pass
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import (
        _CheckpointManagerState,
        _TrainingResultState,
    )

    complete = sorted(p for p in run_dir.glob("checkpoint_*") if _complete_checkpoint(p, world_size))
    if not complete:
        snapshot.unlink()
        return "torn run snapshot removed (no complete checkpoint): the cell starts over"
    latest = _TrainingResultState(checkpoint_dir_name=complete[-1].name, metrics={})
    state = _CheckpointManagerState(
        checkpoint_results=[latest],
        checkpoint_report_indices=[0],
        latest_checkpoint_result=latest,
        pending_training_results=[],
        pending_validation_specs=[],
        current_report_index=1,
        validated_checkpoint_dir_names=[],
        timed_out_validation_checkpoint_dir_names=[],
        failed_validation_checkpoint_dir_names=[],
    )
    tmp = snapshot.with_suffix(".tmp")
    tmp.write_text(state.json())
    tmp.replace(snapshot)
    return f"torn run snapshot rebuilt from {complete[-1].name}"


def run_cell(trial_config: dict[str, Any]) -> dict[str, Any]:
    """Tune function trainable: one Train job of ``num_workers`` DeepSpeed workers for one cell."""
    config = trial_config[GRID_PARAM]
    key = config["cell"]["key"]
    resources = config["resources"]
    storage = config["storage_path"]
    if "://" not in storage:
        repaired = repair_snapshot(Path(storage) / key, resources["num_workers"])
        if repaired:
            print(f"[{key}] {repaired}", flush=True)
        remove_stray_checkpoints(Path(storage) / key)
    per_worker: dict[str, float] = {"CPU": resources["cpus_per_worker"]}
    if resources["use_gpu"]:
        per_worker["GPU"] = 1
    trainer = TorchTrainer(
        pretrain_cell if config["cell"]["kind"] == "pretrain" else train_cell,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=resources["num_workers"],
            use_gpu=resources["use_gpu"],
            resources_per_worker=per_worker,
        ),
        run_config=RunConfig(
            name=key,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=resources["max_failures"]),
            # The latest checkpoint is all a resume needs; older ones are only disk.
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    value = dict(result.return_value or {})
    value.pop("done", None)
    return {f"final_{k}": v for k, v in value.items() if isinstance(v, int | float) and v is not None}
