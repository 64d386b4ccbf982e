"""The experiment's ``search:`` section: a per-setting hyper-parameter search on validation speakers.

Why per setting: a grid that compares fusion strategies under one fixed recipe favours whichever
strategy that recipe happens to suit. With a ``search:`` block every (dataset, setting) gets the same
budget of trials, scored on speakers held out of the fold's *training* speakers, never on its test
speakers; the chosen configuration is then trained once on all training speakers and tested once.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from mmder.config import ModelConfig, Strict, TrainingConfig, is_operational, operational


class ParamSpace(Strict):
    """One searched hyper-parameter: ``log``/``uniform`` floats, ``int`` ranges or ``categorical`` choices."""

    type: Literal["log", "uniform", "int", "categorical"] = Field(description="distribution of the values")
    low: float | None = Field(None, description="lower bound (log, uniform, int)")
    high: float | None = Field(None, description="upper bound (log, uniform, int)")
    choices: list[Any] | None = Field(None, description="the values to choose from (categorical)")

    @model_validator(mode="after")
    def _bounds(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty `choices` list")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.type} needs low < high, got low={self.low}, high={self.high}")
        if self.type == "log" and self.low <= 0:
            raise ValueError(f"log needs low > 0, got {self.low}")
        if self.type == "int" and (self.low != math.floor(self.low) or self.high != math.floor(self.high)):
            raise ValueError("int needs whole-number bounds")
        return self

    def values(self) -> list[Any]:
        """The extreme values a trial may draw: each must give a valid training section."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            return [int(self.low or 0), int(self.high or 0)]
        return [self.low, self.high]


# What a search may vary: result-bearing fields of the training and model sections.
SEARCHABLE = {
    **{
        f"training.{n}": TrainingConfig
        for n in TrainingConfig.model_fields
        if not is_operational(TrainingConfig, n)
    },
    **{f"model.{n}": ModelConfig for n in ("drop_path", "head_dropout")},
}


class SearchConfig(Strict):
    """A search per (dataset, setting), through Ray Tune with Optuna, scored on validation speakers."""

    space: dict[str, ParamSpace] = Field(
        min_length=1,
        description="searched fields, by section: training.lr, training.weight_decay, training.epochs, "
        "model.drop_path, ... (training. may be left out)",
    )
    trials: int = Field(
        8, ge=1, description="trials per (dataset, setting), or per fold with scope: per_fold"
    )
    objective: Literal["uar", "war"] = Field("uar", description="validation metric to maximise")
    scope: Literal["first_fold", "per_fold"] = Field(
        "first_fold",
        description="first_fold: one search on the first fold's training speakers serves every fold; "
        "per_fold: a search inside each fold",
    )
    validation_speakers: float = Field(
        2, gt=0, description="speakers held out of the training speakers: a count (>= 1) or a share (< 1)"
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler")
    startup_trials: int | None = Field(
        None,
        ge=1,
        description="trials TPE draws at random before it models the results; null: half the budget, "
        "at least 2 and at most Optuna's own default of 10 (with that default, a budget of 10 or fewer "
        "would be a random search)",
    )
    pruner: Literal["asha", "median", "none"] = Field(
        "asha", description="stop poor trials early on their per-epoch validation metric (Tune scheduler)"
    )
    grace_epochs: int = Field(2, ge=1, description="epochs every trial runs before it may be pruned")
    seed: int = Field(0, description="seed of the sampler and of the validation speakers' draw")
    max_concurrent_trials: int = operational(1, "search trials running at once", ge=1)

    @model_validator(mode="before")
    @classmethod
    def _qualified_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("space"), dict):
            space = {k if "." in k else f"training.{k}": v for k, v in data["space"].items()}
            data = {**data, "space": space}
        return data

    @model_validator(mode="after")
    def _searchable(self) -> SearchConfig:
        for name in self.space:
            if name not in SEARCHABLE:
                raise ValueError(f"space.{name}: not searchable; allowed: {', '.join(sorted(SEARCHABLE))}")
        if self.sampler == "random" and self.startup_trials is not None:
            raise ValueError("startup_trials: only sampler: tpe has start-up trials (random draws them all)")
        if self.sampler == "tpe" and self.startup_trials is not None and self.startup_trials >= self.trials:
            raise ValueError(
                f"startup_trials: {self.startup_trials} random trials of a budget of {self.trials} leave TPE "
                "none to choose; lower it, or say sampler: random"
            )
        return self

    def random_trials(self) -> int:
        """How many trials are drawn at random before TPE proposes (all of them for ``random``)."""
        if self.sampler == "random":
            return self.trials
        if self.startup_trials is not None:
            return self.startup_trials
        return max(2, min(10, self.trials // 2))

    def section_updates(self, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """``{"training.lr": 1e-3}`` -> ``{"training": {"lr": 1e-3}}`` (values cast like the space's type)."""
        out: dict[str, dict[str, Any]] = {}
        for name, value in params.items():
            section, field = name.split(".", 1)
            kind = self.space[name].type
            out.setdefault(section, {})[field] = int(value) if kind == "int" else value
        return out
