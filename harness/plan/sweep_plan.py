"""What a sweep would do, without data, Ray or a new store: each cell judged run, skip, stale or retry.

The sweep (`mmder sweep`, `--dry-run`) and `mmder status` both read the plan from here, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.experiment.config import ExperimentConfig
from harness.plan.cells import Cell, expand_cells, expand_pretrain_cells
from harness.plan.provenance import dataset_digests, judge
from harness.tracking.places import resolve_uri
from harness.tracking.store import Tracker
from harness.tracking.tags import FINISHED, KIND_SWEEP, TAG_ERROR, TAG_STATUS


def output_dir(spec: ExperimentConfig, output: str | Path | None) -> Path:
    return Path(output or Path("runs") / spec.name).expanduser().resolve()


@dataclass(frozen=True)
class CellPlan:
    """What the sweep does with one cell, and why."""

    action: str  # run, skip, stale, retry, resume
    why: str = ""  # stale: "data changed" / "code changed"; retry: the error's first line
    run_id: str | None = None  # the run it skips, supersedes, retries or resumes

    @property
    def label(self) -> str:
        if self.action == "stale":
            return f"stale ({self.why})"
        if self.action == "retry":
            return "retry (failed)"
        if self.action == "skip" and self.why:
            return f"skip (stale, accepted: {self.why})"
        return self.action


@dataclass
class Plan:
    """What a sweep would do: cells to run and cells already finished (key -> MLflow run id)."""

    cells: list[Cell]
    finished: dict[str, str] = field(default_factory=dict)
    states: dict[str, CellPlan] = field(default_factory=dict)
    digests: dict[str, str | None] = field(default_factory=dict)  # dataset label -> data digest
    parent: Any = None  # the sweep's parent run as planning read it (SQLite store only), else None

    @property
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if c.key not in self.finished]

    def state(self, key: str) -> CellPlan:
        return self.states.get(key) or CellPlan("skip" if key in self.finished else "run")


def plan_sweep(spec: ExperimentConfig, output: Path, *, accept_stale: bool = False) -> Plan:
    """Expand the grid and judge each cell's runs; needs no Ray and creates nothing (lists the data)."""
    return _plan(expand_cells(spec), spec, output, accept_stale=accept_stale)


def cell_digest(cell: Cell, digests: dict[str, str | None]) -> str | None:
    """A cell's data digest: its dataset's, or for a pre-training all its datasets' together."""
    if cell.kind == "pretrain":
        parts = [digests.get(ds.label) for ds in cell.datasets]
        return None if any(p is None for p in parts) else "+".join(p or "" for p in parts)
    return digests.get(cell.dataset)


def judge_cell(cell: Cell, runs: list[Any], digest: str | None, accept_stale: bool) -> CellPlan:
    """The cell's fate from its runs (newest first, superseded ones left out) and today's identity."""
    if not runs:
        return CellPlan("run")
    latest = runs[0]
    tags, run_id = latest.data.tags, latest.info.run_id
    verdict = judge(tags, digest, cell.kind)
    if tags.get(TAG_STATUS) == FINISHED:
        if verdict.current:
            return CellPlan("skip", run_id=run_id)
        return CellPlan("skip" if accept_stale else "stale", verdict.why, run_id)
    if latest.info.status == "FAILED" and verdict.current:
        error = (tags.get(TAG_ERROR) or "").strip().splitlines()
        return CellPlan("retry", error[-1] if error else "", run_id)
    if not verdict.current:  # failed or cut off under an older identity: its epochs are not today's cell's
        return CellPlan("stale", verdict.why, run_id)
    return CellPlan("resume", run_id=run_id)


def _plan(cells: list[Cell], spec: ExperimentConfig, output: Path, *, accept_stale: bool = False) -> Plan:
    uri = resolve_uri(spec.tracking.uri, output)
    digests = dataset_digests(spec, output)
    runs, parent = existing_runs(uri, spec.mlflow_experiment, spec.name)
    plan = Plan(cells=cells, digests=digests, parent=parent)
    for cell in cells:
        state = judge_cell(cell, runs.get(cell.key, []), cell_digest(cell, digests), accept_stale)
        plan.states[cell.key] = state
        if state.action == "skip" and state.run_id:
            plan.finished[cell.key] = state.run_id
    return plan


def existing_runs(uri: str, experiment: str, sweep: str) -> tuple[dict[str, list[Any]], Any]:
    """(key -> the cell's runs, newest first; the sweep's parent run or None).

    The SQLite store is read once, without importing MLflow; a server's parent is not looked up (None).
    """
    from harness.tracking.places import sqlite_path
    from harness.tracking.runs import by_cell, read_sqlite_runs
    from harness.tracking.tags import TAG_KIND, TAG_SWEEP

    path = sqlite_path(uri)
    if path is not None:
        runs = read_sqlite_runs(path, experiment) or []
        tagged = [(r, r.data.tags) for r in runs]
        parents = [r for r, t in tagged if t.get(TAG_KIND) == KIND_SWEEP and t.get(TAG_SWEEP) == sweep]
        return by_cell(runs), parents[0] if len(parents) == 1 else None
    tracker = Tracker.existing(uri, experiment)
    return (tracker.cell_runs() if tracker is not None else {}), None


def format_plan(plan: Plan) -> str:
    counts: dict[str, int] = {}
    for c in plan.cells:
        action = plan.state(c.key).action
        counts[action] = counts.get(action, 0) + 1
    extra = "".join(f", {counts[a]} {a}" for a in ("stale", "retry", "resume") if counts.get(a))
    lines = [
        f"{len(plan.cells)} cells: {len(plan.todo)} to run, {len(plan.finished)} finished (skipped){extra}"
    ]
    width = max((len(c.key) for c in plan.cells), default=10)
    labels = {c.key: plan.state(c.key).label for c in plan.cells}
    status_w = max([6, *map(len, labels.values())])
    lines.append(f"  {'status':<{status_w}}  {'cell':<{width}}  dataset / setting / fold / seed")
    for c in plan.cells:
        lines.append(
            f"  {labels[c.key]:<{status_w}}  {c.key:<{width}}  "
            f"{c.dataset} / {c.setting} / {c.fold_name} / {c.seed}"
        )
    return "\n".join(lines)


def plan_pretrain(spec: ExperimentConfig, output: Path) -> Plan:
    return _plan(expand_pretrain_cells(spec), spec, output)


def storage_root(spec: ExperimentConfig, output: Path) -> str:
    """Where Train runs (and cell owners) live: ray.storage_path, else <output>/ray; absolute."""
    storage = spec.ray.storage_path or str(output / "ray")
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())
