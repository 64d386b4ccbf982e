"""What a search is, shared by its driver and its trials: the job a trial receives, the search's key,
the fold it searches on, and a cell with the chosen parameters applied."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.experiment.config import ResourcesConfig
from harness.experiment.search import SearchConfig
from harness.plan.cells import Cell
from mmder.config import ModelConfig, TrainingConfig


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
