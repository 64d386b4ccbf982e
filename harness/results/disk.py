"""What an experiment's output folder holds on disk, and which of it no result needs any more.

A finished cell never resumes, so its last checkpoint is only disk (gigabytes per cell for ViT-L); a
superseded cell's checkpoints (its data or code changed) likewise. Nothing here ever removes a result:
the MLflow store and its artifacts, the pre-trained encoders cells start from, and the checkpoints of
any cell that may still resume (unfinished, failed, owned by a running sweep) are kept. A folder whose
key this experiment's store does not know is left alone too: it may belong to another experiment
sharing the output folder.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from harness.experiment.config import ExperimentConfig
from harness.plan.lanes import LANES_FOLDER
from harness.plan.owners import read_owner
from harness.plan.sweep_plan import SweepPlan, plan_sweep
from harness.worker.resume import attempts


def size_of(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder), links not followed."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


@dataclass
class Holding:
    """One kind of thing in the output folder: its paths and what they weigh."""

    what: str
    paths: list[Path] = field(default_factory=list)
    removable: str | None = None  # the clean flag that removes it; None: never removed

    @cached_property
    def size(self) -> int:  # walked once: listed, then (dry run or removal) reported
        return sum(size_of(p) for p in self.paths)


def holdings(plans: list[SweepPlan]) -> list[Holding]:
    """The output of the experiment (its training plan and, with `mae`, its pre-training plan), by kind."""
    places = plans[0].places
    finished = {k for p in plans for k in p.finished}
    current = {c.key for p in plans for c in p.cells}
    known = _store_keys(plans[0])
    done = Holding("checkpoints of finished cells", removable="--checkpoints")
    old = Holding(
        "checkpoints of cells no longer in the grid (an older version of this experiment)",
        removable="--superseded",
    )
    live = Holding("checkpoints of cells that may resume (unfinished, failed, or running)")
    foreign = Holding("checkpoint folders this experiment's store does not know (kept)")
    storage = Path(places.storage)
    if not places.remote_storage and storage.is_dir():
        for cell_dir in sorted(
            p for p in storage.iterdir() if p.is_dir() and p.name not in ("tune", LANES_FOLDER)
        ):
            folders = attempts(cell_dir)
            if not folders:
                continue
            owner = read_owner(cell_dir)
            if owner is not None and owner.alive():
                live.paths += folders
            elif cell_dir.name in finished:
                done.paths += folders
            elif cell_dir.name not in current and cell_dir.name in known:
                old.paths += folders
            elif cell_dir.name in current:
                live.paths += folders
            else:
                foreign.paths += folders
    out = places.output
    rest = [
        Holding(
            "preprocessed clip cache (rebuilt by the next sweep when removed)", [places.cache], "--cache"
        ),
        Holding("Tune's per-trial folders (error files of failed trials)", [storage / "tune"], "--tune"),
        Holding(
            "MLflow store and run artifacts (results: never removed)",
            [out / "mlflow.db", out / "mlartifacts"],
        ),
        Holding("pre-trained encoders the cells start from (never removed)", [out / "pretrain"]),
        Holding("generated corpora (regenerated when removed)", [out / "data"]),
    ]
    for h in rest:
        h.paths = [p for p in h.paths if p.exists()]
    return [done, old, live, foreign, *rest]


def _store_keys(plan: SweepPlan) -> set[str]:
    """Every cell key this experiment's store has a run of, superseded runs included."""
    from harness.tracking.runs import read_runs
    from harness.tracking.tags import TAG_CELL

    runs = read_runs(plan.places.tracking_uri, plan.spec.mlflow_experiment)
    return {k for r in runs if (k := r.data.tags.get(TAG_CELL))}


def plan_outputs(spec: ExperimentConfig, output: str | Path | None) -> list[SweepPlan]:
    """The plans whose cells own checkpoints in the output: the grid's and, with `mae`, the pre-training's."""
    plans = [plan_sweep(spec, output)]
    if spec.model.pretrained == "mae":
        plans.append(plan_sweep(spec, output, kind="pretrain"))
    return plans


def remove(holding: Holding) -> int:
    """Delete the holding's paths; returns the bytes freed."""
    freed = holding.size
    for path in holding.paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed
