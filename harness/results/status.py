"""``mmder status``: where a sweep stands, from MLflow and the storage path only.

It never starts Ray and imports neither torch nor Ray (nor, for the embedded SQLite store, MLflow:
MLflow's import alone costs seconds, so that store is read directly, read-only, through
:mod:`sqlite3`; a server store is read with ``MlflowClient``). Each cell is judged the way the
sweep's planner judges it (it reads the same :class:`~harness.plan.sweep_plan.SweepPlan`), so status and
``--dry-run`` agree.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.experiment.config import ExperimentConfig
from harness.plan.sweep_plan import SweepPlan, plan_sweep
from harness.tracking.tags import FINAL_UAR, FINAL_WAR, TEST_UAR, TEST_WAR, epoch_metric


@dataclass
class CellStatus:
    key: str
    dataset: str
    setting: str
    fold: str
    seed: int
    state: str  # done, running, failed, stale, pending
    detail: str = ""
    war: float | None = None
    uar: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    owner: str | None = None


@dataclass
class SweepStatus:
    experiment: str
    cells: list[CellStatus] = field(default_factory=list)
    eta_seconds: float | None = None

    @property
    def totals(self) -> dict[str, int]:
        out = {s: 0 for s in ("done", "running", "failed", "stale", "pending")}
        for c in self.cells:
            out[c.state] = out.get(c.state, 0) + 1
        return out


# ------------------------------------------------------------------------------------------ reading


# ------------------------------------------------------------------------------------------ judging


def sweep_status(sweep: SweepPlan) -> SweepStatus:
    """Every cell's state now, as the sweep's planner judges it (so status and --dry-run agree)."""
    from harness.plan.owners import read_owner

    storage = sweep.places.storage
    status = SweepStatus(sweep.spec.name)
    durations = []
    epochs = sweep.spec.training.epochs
    for cell in sweep.cells:
        found = sweep.runs.get(cell.key, [])
        plan = sweep.state(cell.key)
        row = CellStatus(cell.key, cell.dataset, cell.setting, cell.fold_name, cell.seed, "pending")
        latest = found[0] if found else None
        if plan.action == "skip" and latest is not None:
            row.state = "done"
            row.war = latest.data.metrics.get(FINAL_WAR)
            row.uar = latest.data.metrics.get(FINAL_UAR)
            if latest.info.end_time and latest.info.start_time:
                durations.append((latest.info.end_time - latest.info.start_time) / 1000)
        elif plan.action == "stale":
            row.state, row.detail = "stale", plan.why
        elif plan.action == "retry":
            row.state, row.detail = "failed", plan.why
        elif latest is not None and latest.info.status == "RUNNING":
            row.state = "running"
            steps = latest.data.steps
            row.epochs = epochs
            war, uar = epoch_metric(steps, TEST_WAR), epoch_metric(steps, TEST_UAR)
            if war is not None:
                row.epoch = war[1] + 1
                row.war = war[0]
                row.uar = uar[0] if uar is not None else None
            else:
                row.epoch = 0
        elif latest is not None:  # KILLED or SCHEDULED: cut off, resumes on the next sweep
            row.detail = f"cut off ({latest.info.status.lower()}), resumes from its last epoch"
        if "://" not in storage and row.state == "running":
            row.detail = _stall(Path(storage), cell.key)
        if "://" not in storage and row.state in ("running", "pending"):
            owner = read_owner(Path(storage) / cell.key)
            if owner is not None and owner.alive():
                ahead = owner.skew()
                skew = f"; its heartbeat is {ahead:.0f} s ahead of this host's clock (clock skew)"
                row.owner = owner.describe() + (skew if ahead else "")
            elif row.state == "running":  # RUNNING in MLflow, but no live sweep owns it: cut off
                row.state, row.detail = "pending", "cut off (its sweep is gone), resumes from its last epoch"
        status.cells.append(row)
    left = sum(1 for c in status.cells if c.state != "done")
    if durations and left:
        waves = math.ceil(left / sweep.spec.resources.max_concurrent_trials)
        status.eta_seconds = sum(durations) / len(durations) * waves
    return status


def _stall(storage: Path, key: str) -> str:
    """What the cell's stall watch says of it (:mod:`harness.worker.stall`), if it went quiet."""
    from harness.worker.stall import describe_stall, read_stall

    said = read_stall(storage, key)
    return describe_stall(said) if said else ""


# ------------------------------------------------------------------------------------------ showing


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def render_table(status: SweepStatus) -> str:
    width = max((len(c.key) for c in status.cells), default=10)
    lines = [f"{status.experiment}: {len(status.cells)} cells"]
    for c in status.cells:
        if c.state == "done":
            what = f"WAR {c.war:5.1f}  UAR {c.uar:5.1f}" if c.war is not None and c.uar is not None else ""
        elif c.state == "running":
            what = f"epoch {c.epoch}/{c.epochs}"
            if c.war is not None:
                what += f"  WAR {c.war:5.1f}"
            if c.detail:
                what += f"  {c.detail}"
        elif c.state == "failed":
            what = c.detail.splitlines()[0] if c.detail else "see its MLflow run"
        elif c.state == "stale":
            what = c.detail
        else:
            what = c.detail
        if c.owner:
            what += f"  [{c.owner}]"
        lines.append(f"  {c.state:<8} {c.key:<{width}}  {what}".rstrip())
    totals = ", ".join(f"{n} {s}" for s, n in status.totals.items() if n)
    eta = f"; ETA {_hms(status.eta_seconds)}" if status.eta_seconds is not None else ""
    lines.append(f"{totals}{eta}")
    return "\n".join(lines)


def render_json(status: SweepStatus) -> str:
    return json.dumps(
        {
            "experiment": status.experiment,
            "cells": [asdict(c) for c in status.cells],
            "totals": status.totals,
            "eta_seconds": status.eta_seconds,
        },
        indent=2,
    )


def show(
    spec: ExperimentConfig, output: str | Path | None, fmt: str = "table", watch: float | None = None
) -> int:
    """Print once, or every ``watch`` seconds until Ctrl-C (planned afresh each time: data may change)."""
    while True:
        status = sweep_status(plan_sweep(spec, output))
        text = render_json(status) if fmt == "json" else render_table(status)
        if watch:
            print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + text, flush=True)
            try:
                time.sleep(watch)
            except KeyboardInterrupt:
                return 0
        else:
            print(text)
            return 0
