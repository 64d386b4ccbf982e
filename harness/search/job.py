"""What a search is, shared by its driver and its trials: the job a trial receives, the search's key,
the fold it searches on, and a cell with the chosen parameters applied."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.experiment.config import ExperimentConfig, ResourcesConfig
from harness.experiment.search import SearchConfig
from harness.plan.cells import Cell, dataset_identity
from mmder.config import ModelConfig, TrainingConfig, result_fields


class SearchJob(BaseModel):
    """What one search trial's Train workers receive (the trial's parameters come separately)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    search_key: str
    cell: Cell
    search: SearchConfig
    cache_path: str
    tracking_uri: str
    experiment_id: str
    search_run_id: str
    storage_path: str
    resources: ResourcesConfig


def search_fold(spec: ExperimentConfig, cell: Cell) -> int:
    """The fold whose training speakers a cell's search uses."""
    assert spec.search is not None
    if spec.search.scope == "per_fold":
        return cell.fold
    ds = cell.dataset_config
    return ds.folds[0] if ds.folds else 0


def search_key(spec: ExperimentConfig, cell: Cell) -> str:
    """What changes a search's outcome: data, setting, fold searched, base sections, the search itself."""
    assert spec.search is not None and cell.training is not None
    identity = {
        "dataset": dataset_identity(cell.dataset_config),
        "setting": cell.setting,
        "fold": search_fold(spec, cell),
        "preprocess": result_fields(cell.preprocess),
        "model": result_fields(cell.model),
        "training": result_fields(cell.training),
        "search": result_fields(spec.search),
        "world_size": cell.world_size,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"search-{cell.dataset}-{cell.setting}-f{identity['fold']}-{digest}"


def apply_chosen(cell: Cell, search: SearchConfig, chosen: dict[str, Any]) -> Cell:
    """The cell with its searched fields set to ``chosen``, validated again (bounds, min_lr <= lr, ...)."""
    updates = search.section_updates(chosen)
    training = cell.training
    if training is not None and "training" in updates:
        training = TrainingConfig.model_validate({**training.model_dump(), **updates["training"]})
    model = cell.model
    if "model" in updates:
        model = ModelConfig.model_validate({**model.model_dump(), **updates["model"]})
    return cell.model_copy(update={"training": training, "model": model})
