"""Cells grouped into lanes: one Tune trial and one Ray Train worker group per lane, its cells in turn.

A cell's own Train job pays a controller, a worker group and every import of torch, DeepSpeed and MLflow
before its first step: about 50 s on 2 cores with 4 cells at once, for cells that train for 15-60 s. A
lane pays that once and then trains its cells one after another in the same workers. Each cell keeps
everything of its own: key, MLflow run, checkpoint folder (``<storage>/<key>/attempt-NNN``), resume,
failure budget (``resources.max_failures`` restarts of the group while that cell runs) and its line of
progress. ``resources.reuse_workers: false`` gives every cell its own Train job again.

Cells go to lanes longest first, each to the lane with the least work so far (LPT scheduling), and each
lane trains its longest cell first: the long cells start at once and the short ones fill the tail.

A lane's trial carries a :class:`LaneRef`, not its jobs: Tune copies a trial's config into every result it
reports and formats each result it processes, so 5,000 jobs in a lane's config cost the driver about a
third of a core-second per finished cell (10,000 micro cells: the driver at 90 % of a core). The jobs go
to ``<storage>/lanes/<lane>.json`` (lanes run on local, shared storage only) and the trial reads them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from harness.plan.cells import Cell, CellJob
from mmder.disk import write_atomic

LANES_FOLDER = "lanes"  # <storage>/lanes/<lane>/attempt-NNN: a lane's Train runs (Ray's own files only)
CELL_DONE, CELL_FAILED = "cell_done", "cell_failed"  # a lane's report at the end of each of its cells


class LaneJob(BaseModel):
    """What one lane's trial hands to its Train workers: its cells' jobs, in the order they train."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="lane-<first cell's key>-<digest of its cells>: names its Train runs")
    jobs: list[CellJob]
    attempts: dict[str, str] = Field(
        default_factory=dict, description="cell key -> its attempt folder of this start (set by the trial)"
    )

    @property
    def keys(self) -> list[str]:
        return [job.cell.key for job in self.jobs]


class LaneRef(BaseModel):
    """What a lane's Tune trial carries: its name and the file of its :class:`LaneJob`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lane: str = Field(description="the lane's name (:func:`lane_name`)")
    lane_file: str = Field(description="<storage>/lanes/<lane>.json: the lane's jobs, written by the driver")

    def read(self) -> LaneJob:
        return LaneJob.model_validate_json(Path(self.lane_file).read_bytes())


def is_lane(job: dict) -> bool:
    """Whether a trial's config is a lane's reference (else it is one cell's job)."""
    return "lane_file" in job


def write_lane(lane: LaneJob, storage: str) -> LaneRef:
    """The lane's jobs into its file (atomically: a reader never sees half), and the trial's reference."""
    path = Path(storage) / LANES_FOLDER / f"{lane.name}.json"
    write_atomic(path, lane.model_dump_json())
    return LaneRef(lane=lane.name, lane_file=str(path))


def cell_cost(cell: Cell, clips: Callable[[str], int]) -> float:
    """A cell's length, for ordering only: epochs x clips of its dataset (1 for a cell without epochs)."""
    epochs = (
        cell.training.epochs if cell.training else cell.pretrain.epochs if cell.pretrain is not None else 1
    )
    return float(epochs * max(1, clips(cell.dataset)))


def make_lanes(cells: list[Cell], count: int, cost: Callable[[Cell], float]) -> list[list[Cell]]:
    """``cells`` in at most ``count`` lanes, longest first (ties: grid order), by least work so far."""
    order = sorted(range(len(cells)), key=lambda i: (-cost(cells[i]), i))
    lanes: list[list[Cell]] = [[] for _ in range(max(1, min(count, len(cells))))]
    load = [0.0] * len(lanes)
    for i in order:
        at = min(range(len(lanes)), key=lambda n: (load[n], n))
        lanes[at].append(cells[i])
        load[at] += cost(cells[i])
    return [lane for lane in lanes if lane]


def lane_name(cells: list[Cell]) -> str:
    digest = hashlib.sha256(",".join(c.key for c in cells).encode()).hexdigest()[:8]
    return f"lane-{cells[0].key}-{digest}"
