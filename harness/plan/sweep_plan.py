"""The experiment planned once: every place, each dataset's listing and digest, and per cell its key,
search key, digest, pre-trained weights and fate (run, skip, stale, retry, resume).

The sweep's driver, ``--dry-run``, ``mmder status``, the board cache and the search all read one
:class:`SweepPlan`; nothing downstream derives these again from the experiment and the output folder.
Planning imports neither Ray, MLflow nor torch (the embedded SQLite store is read with ``sqlite3``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.experiment.config import ExperimentConfig
from harness.experiment.errors import ConfigError
from harness.plan.cells import Cell, expand_cells, expand_pretrain_cells
from harness.plan.checks import check_data_roots, check_writable, read_listings
from harness.plan.grid_size import cell_lines, check_grid_size, describe_axes
from harness.plan.places import Places
from harness.plan.provenance import dataset_digests, judge
from harness.plan.strays import stray_outputs
from harness.tracking.places import sqlite_path
from harness.tracking.tags import (
    FINISHED,
    KIND_SWEEP,
    PLANNED_METRICS,
    TAG_ERROR,
    TAG_KIND,
    TAG_STATUS,
    TAG_SWEEP,
)

Kind = Literal["train", "pretrain"]
Echo = Callable[[str], None]


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
class SweepPlan:
    """What a sweep would do: every cell with its fate, and where everything is."""

    spec: ExperimentConfig
    kind: Kind
    places: Places
    cells: list[Cell]
    digests: dict[str, str | None] = field(default_factory=dict)  # dataset label -> data digest
    listings: dict[str, Any] = field(default_factory=dict)  # dataset label -> CorpusListing or None
    states: dict[str, CellPlan] = field(default_factory=dict)
    finished: dict[str, str] = field(default_factory=dict)  # key -> the finished run's id
    runs: dict[str, list[Any]] = field(default_factory=dict)  # key -> its runs, newest first
    parent: Any = None  # the sweep's parent run as planning read it (SQLite store only), else None
    weights: dict[str, str | None] = field(default_factory=dict)  # key -> checkpoint it starts from
    # another MLflow experiment of the same store -> how many of these cells it holds finished
    elsewhere: dict[str, int] = field(default_factory=dict)
    strays: str | None = None  # checkpoints or artifacts in the output with no store to account for them

    @property
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if c.key not in self.finished]

    @property
    def unterminated(self) -> list[str]:
        """Finished runs MLflow still shows RUNNING or KILLED: their process died between the finished tag
        and ending the run (a worker of a SIGKILLed driver that lived on)."""
        out = []
        for key, run_id in self.finished.items():
            run = next((r for r in self.runs.get(key, []) if r.info.run_id == run_id), None)
            if run is not None and run.info.status != "FINISHED":
                out.append(run_id)
        return out

    def state(self, key: str) -> CellPlan:
        return self.states.get(key) or CellPlan("skip" if key in self.finished else "run")

    def digest(self, cell: Cell) -> str | None:
        """A cell's data digest: its dataset's, or all its datasets' together (a pre-training's, a
        cross-corpus cell's training and test corpus)."""
        if cell.kind == "pretrain" or len(cell.datasets) > 1:
            parts = [self.digests.get(ds.label) for ds in cell.datasets]
            return None if any(p is None for p in parts) else "+".join(p or "" for p in parts)
        return self.digests.get(cell.dataset)

    def datasets_read_by(self, cells: list[Cell]) -> set[str]:
        """The datasets ``cells`` read (a pre-training reads them all; a cross-corpus cell two)."""
        if self.kind == "pretrain":
            return {ds.label for ds in self.spec.datasets}
        return {ds.label for c in cells for ds in c.datasets}


def plan_sweep(
    spec: ExperimentConfig, output: str | Path | None, *, kind: Kind = "train", accept_stale: bool = False
) -> SweepPlan:
    """The plan as it stands, for ``--dry-run`` and ``status``: creates nothing, needs no data here."""
    places = Places.of(spec, output)
    listings = read_listings(spec, places, print, strict=False)
    return _judged(spec, kind, places, listings, accept_stale)


def plan_run(
    spec: ExperimentConfig,
    output: str | Path | None,
    *,
    kind: Kind,
    accept_stale: bool,
    echo: Echo,
    yes: bool = False,
    fresh: bool = False,
) -> SweepPlan:
    """The plan a sweep runs: every folder and checkpoint checked, synthetic corpora generated, every
    corpus listed strictly (bad data stops here, before Ray), pre-trained weights found for each cell."""
    cells = expand_cells(spec) if kind == "train" else expand_pretrain_cells(spec)
    check_grid_size(cells, spec.resources.max_cells, yes)
    places = Places.of(spec, output)
    check_writable(places)
    check_data_roots(spec, places)
    listings = read_listings(spec, places, echo, strict=True, generate=True)
    plan = _judged(spec, kind, places, listings, accept_stale, cells)
    if plan.strays and not fresh:
        raise ConfigError("--fresh", plan.strays)
    if kind == "train":
        plan.weights = {c.key: _weights(plan, c) for c in plan.todo}
    return plan


def _judged(
    spec: ExperimentConfig,
    kind: Kind,
    places: Places,
    listings: dict[str, Any],
    accept_stale: bool,
    cells: list[Cell] | None = None,
) -> SweepPlan:
    if cells is None:
        cells = expand_cells(spec) if kind == "train" else expand_pretrain_cells(spec)
    plan = SweepPlan(spec, kind, places, cells, listings=listings, strays=stray_outputs(places))
    plan.digests = dataset_digests(spec, places.dataset_roots, listings)
    plan.runs, plan.parent = existing_runs(places.tracking_uri, spec.mlflow_experiment, spec.name)
    path = sqlite_path(places.tracking_uri)
    if path is not None:
        from harness.tracking.runs import finished_elsewhere

        plan.elsewhere = finished_elsewhere(path, spec.mlflow_experiment, {c.key for c in cells})
    for cell in cells:
        state = judge_cell(cell, plan.runs.get(cell.key, []), plan.digest(cell), accept_stale)
        plan.states[cell.key] = state
        if state.action == "skip" and state.run_id:
            plan.finished[cell.key] = state.run_id
    return plan


def _weights(plan: SweepPlan, cell: Cell) -> str | None:
    """The checkpoint a cell starts from; a missing one stops the sweep before it starts."""
    if cell.training is None:  # a classical baseline loads no weights
        return None
    if cell.pretrain_key:
        path = plan.places.encoder_path(cell.pretrain_key)
        hint = f"run `mmder pretrain` on this experiment first (no encoder at {path})"
    elif cell.model.pretrained:
        path = plan.spec.resolved_path(cell.model.pretrained)
        hint = f"no such checkpoint: {path}"
    else:
        return None
    if not path.exists():
        raise ConfigError("model.pretrained", hint)
    return str(path)


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


def existing_runs(uri: str, experiment: str, sweep: str) -> tuple[dict[str, list[Any]], Any]:
    """(key -> the cell's runs, newest first; the sweep's parent run or None).

    The SQLite store is read once, without importing MLflow; a server's parent is not looked up (None).
    """
    from harness.tracking.runs import by_cell, read_runs, read_sqlite_runs

    path = sqlite_path(uri)
    if path is not None:
        runs = read_sqlite_runs(path, experiment, PLANNED_METRICS) or []
        tagged = [(r, r.data.tags) for r in runs]
        parents = [r for r, t in tagged if t.get(TAG_KIND) == KIND_SWEEP and t.get(TAG_SWEEP) == sweep]
        return by_cell(runs), parents[0] if len(parents) == 1 else None
    return by_cell(read_runs(uri, experiment)), None


def elsewhere_note(plan: SweepPlan) -> list[str]:
    """What a renamed experiment should hear: its cells are finished under another name of this store."""
    lines = []
    for name, count in plan.elsewhere.items():
        lines.append(
            f"note: {count} of these cells are finished in MLflow experiment {name!r} of this store (the "
            f"experiment was renamed?). Results are looked up under {plan.spec.mlflow_experiment!r}, so they "
            f"run again here; to count them instead, set `tracking.experiment: {name}` "
            f"(or --set tracking.experiment={name})"
        )
    return lines


def format_plan(plan: SweepPlan, full: bool = False) -> str:
    """Counts, then the cells: every one with ``full`` (or when few), else the first and last few."""
    counts: dict[str, int] = {}
    for c in plan.cells:
        action = plan.state(c.key).action
        counts[action] = counts.get(action, 0) + 1
    extra = "".join(f", {counts[a]} {a}" for a in ("stale", "retry", "resume") if counts.get(a))
    lines = [
        f"{len(plan.cells)} cells: {len(plan.todo)} to run, {len(plan.finished)} finished (skipped){extra}",
        f"  grid: {describe_axes(plan.cells)}",
    ]
    if plan.strays:
        lines.append(f"warning: {plan.strays}")
    lines += elsewhere_note(plan)
    width = max((len(c.key) for c in plan.cells), default=10)
    labels = {c.key: plan.state(c.key).label for c in plan.cells}
    status_w = max([6, *map(len, labels.values())])
    lines.append(f"  {'status':<{status_w}}  {'cell':<{width}}  dataset / setting / fold / seed")

    def line(c: Cell) -> str:
        where = f"{c.dataset} / {c.setting} / {c.fold_name} / {c.seed}"
        return f"  {labels[c.key]:<{status_w}}  {c.key:<{width}}  {where}"

    return "\n".join(lines + cell_lines(plan.cells, line, full))
