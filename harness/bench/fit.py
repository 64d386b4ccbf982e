"""One cell of an experiment through ``mmder.train.loop.fit`` here, then resumed: no Ray, no MLflow.

For a GPU machine that cannot hold Ray (``mmder bench fit``): it shows that the loss falls in the
chosen precision on that device and that a run started from an epoch checkpoint trains only the epochs
after it and lands where the uninterrupted run did. The cell is the experiment's own (its typed
sections, its folds), built like the Train worker builds it (:func:`harness.worker.cell_data.build_cell`);
only the epochs and the precision may be overridden.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.experiment.loading import load_experiment
from harness.plan.cells import Cell, expand_cells
from harness.worker.cell_data import build_cell, fit_cell
from mmder.config import TrainingConfig


def pick_cell(spec: Any, setting: str, fold: int, seed: int) -> Cell:
    cells = [
        c
        for c in expand_cells(spec)
        if c.kind == "train" and c.training and c.setting == setting and c.fold == fold and c.seed == seed
    ]
    if not cells:
        raise ValueError(
            f"the experiment has no trained cell with setting {setting!r}, fold {fold}, seed {seed}"
        )
    return cells[0]


def with_training(cell: Cell, **changes: Any) -> Cell:
    """The cell with its training section changed and validated again (a bad override fails here)."""
    assert cell.training is not None
    training = TrainingConfig.model_validate(cell.training.model_dump() | changes)
    return cell.model_copy(update={"training": training})


def bench_fit(
    experiment: str | Path | Any,
    output: Path,
    *,
    setting: str,
    cache: str | None = None,
    fold: int = 0,
    seed: int = 0,
    epochs: int = 3,
    precision: str | None = None,
    resume_after: int = 0,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the cell for ``epochs``, then again from the checkpoint of epoch ``resume_after``."""
    spec = load_experiment(experiment) if isinstance(experiment, str | Path) else experiment
    changes: dict[str, Any] = {"epochs": epochs}
    if precision:
        changes["precision"] = precision
    cell = with_training(pick_cell(spec, setting, fold, seed), **changes)
    if len(cell.datasets) > 1:
        raise ValueError(f"bench fit reads one cache; {cell.key} is a cross_corpus cell (two corpora)")
    if not 0 <= resume_after < epochs - 1:
        raise ValueError(f"resume_after must leave an epoch to train: 0 <= it < {epochs - 1}")
    output.mkdir(parents=True, exist_ok=True)
    if cache is None:
        cache = _prepared_cache(spec, cell, output, echo)
    assert cell.training is not None

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    echo(
        f"cell {cell.key} ({cell.setting}, fold {cell.fold}, model {cell.model.size}) on {device}, "
        f"{cell.training.resolved_precision()}, ZeRO-{cell.training.zero_stage}, {epochs} epochs; "
        f"cache {cache}"
    )
    first, _, first_s = _fit_once(cell, cache, output, None, echo)
    checkpoint = output / f"epoch-{resume_after}"
    echo(f"again from the checkpoint of epoch {resume_after} ({checkpoint}):")
    second, _, second_s = _fit_once(cell, cache, output, str(checkpoint), echo)
    # the last epochs, not fit's return value: with validation speakers that is the chosen epoch
    last, again = first[-1], second[-1]

    losses = [r.train_loss for r in first]
    expected_epochs = list(range(resume_after + 1, epochs))
    figures = {
        "device": device,
        "precision": cell.training.resolved_precision(),
        "train_losses": losses,
        "loss_fell": losses[-1] < losses[0],
        "first_run_s": first_s,
        "resumed_epochs": [r.epoch for r in second],
        "resumed_from_epoch": again.resumed_from_epoch,
        "resumed_where_it_should": [r.epoch for r in second] == expected_epochs
        and again.resumed_from_epoch == resume_after,
        "resumed_last_train_loss": again.train_loss,
        "uninterrupted_last_train_loss": last.train_loss,
        "resumed_last_war": again.war,
        "uninterrupted_last_war": last.war,
        "second_run_s": second_s,
    }
    echo(
        f"loss {' -> '.join(f'{x:.4f}' for x in losses)}: "
        f"{'fell' if figures['loss_fell'] else 'DID NOT FALL'}; the resumed run trained epochs "
        f"{figures['resumed_epochs']} (expected {expected_epochs}); "
        f"last epoch's train loss {again.train_loss:.4f} resumed vs {last.train_loss:.4f} uninterrupted, "
        f"test WAR {100 * again.war:.1f} vs {100 * last.war:.1f}"
    )
    return figures


def _prepared_cache(spec: Any, cell: Cell, output: Path, echo: Callable[[str], None]) -> str:
    """The cell's dataset prepared under ``output`` (a synthetic corpus generated first)."""
    from harness.driver.prepare import prepare_datasets
    from harness.plan.checks import read_listings
    from harness.plan.places import Places
    from harness.plan.sweep_plan import SweepPlan

    places = Places.of(spec, output)
    listings = read_listings(spec, places, echo, strict=True, generate=True)
    plan = SweepPlan(spec, "train", places, [cell], listings=listings)
    return prepare_datasets(plan, {cell.dataset}, echo)[cell.dataset]


def _fit_once(
    cell: Cell, cache: str, output: Path, resume_from: str | None, echo: Callable[[str], None]
) -> tuple[list[Any], Any, float]:
    """One run of the cell (from ``resume_from`` if given); the first keeps its epoch checkpoints."""
    from mmder.train.loop import EpochResult

    parts = build_cell(cell, cache)
    seen: list[EpochResult] = []

    def keep(result: EpochResult, checkpoint_dir: str | None) -> None:
        seen.append(result)
        echo(
            f"  epoch {result.epoch}: train loss {result.train_loss:.4f}, "
            f"test WAR {100 * result.war:.1f}, {result.train_clips_per_s:.1f} clips/s, "
            f"peak {result.peak_memory_mb:.0f} MB"
        )
        if checkpoint_dir and resume_from is None:
            target = output / f"epoch-{result.epoch}"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(checkpoint_dir, target)

    t0 = time.perf_counter()
    last = fit_cell(cell, parts, keep, resume_from)
    return seen, last, time.perf_counter() - t0
