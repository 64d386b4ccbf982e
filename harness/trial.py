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


def run_cell(trial_config: dict[str, Any]) -> dict[str, Any]:
    """Tune function trainable: one Train job of ``num_workers`` DeepSpeed workers for one cell."""
    config = trial_config[GRID_PARAM]
    key = config["cell"]["key"]
    resources = config["resources"]
    storage = config["storage_path"]
    if "://" not in storage:
        remove_stray_checkpoints(Path(storage) / key)
    per_worker: dict[str, float] = {"CPU": resources["cpus_per_worker"]}
    if resources["use_gpu"]:
        per_worker["GPU"] = 1
    trainer = TorchTrainer(
        pretrain_cell if config["kind"] == "pretrain" else train_cell,
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
