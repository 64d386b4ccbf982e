"""Finished cell runs written through the real logging code, without training: a store at any scale.

The read path (status, leaderboard, compare, report, the API) is measured and tested at thousands of
finished runs; training them costs a second of a lane each, so a read-path test or benchmark writes
them here instead: each cell of the plan gets its run as a worker makes it (``Tracker.cell_run`` with
the cell's tags and params, an epoch's metrics, ``Tracker.finish_cell`` with predictions, confusion
matrix and final metrics), the test speakers of its fold predicted by a seeded rule. The numbers are
made up; what reads them is not.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.plan.cells import Cell
from harness.tracking.store import Tracker
from harness.tracking.tags import (
    FINAL_UAR,
    FINAL_WAR,
    PROB_PREFIX,
    TAG_DEVICE_COUNT,
    TAG_SEED,
    TAG_TEST_SPEAKERS,
    TEST_UAR,
    TEST_WAR,
    WALL_SECONDS,
)
from harness.worker.run_info import flat_params, grid_tags


@dataclass(frozen=True)
class MadeUpFold:
    """The test clips a made-up cell predicts: ``speakers`` speakers x ``clips`` clips of each class."""

    classes: tuple[str, ...] = ("a", "b", "c", "d")
    speakers: int = 6
    clips: int = 2

    def test_clips(self, fold: int) -> list[tuple[str, str, str]]:
        """(clip id, speaker, true label) of the fold's test speakers (other folds, other speakers)."""
        out = []
        for s in range(self.speakers):
            speaker = f"f{fold}s{s}"
            for label in self.classes:
                for n in range(self.clips):
                    out.append((f"{speaker}-{label}-{n}", speaker, label))
        return out


def made_up_predictions(cell: Cell, fold: MadeUpFold) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """The cell's predictions.csv rows and confusion matrix: right with a probability that depends on
    the setting (so settings differ) and on the seed (so seeds disagree), seeded by the cell's key."""
    rng = np.random.default_rng(zlib.crc32(cell.key.encode()))
    skill = 0.45 + 0.05 * (zlib.crc32(cell.setting.encode()) % 8) + 0.02 * (cell.seed % 3)
    classes = list(fold.classes)
    index = {c: i for i, c in enumerate(classes)}
    rows, confusion = [], [[0] * len(classes) for _ in classes]
    for clip_id, speaker, true in fold.test_clips(cell.fold):
        t = index[true]
        p = t if rng.random() < skill else int(rng.integers(len(classes)))
        probs = rng.dirichlet(np.ones(len(classes)))
        probs = 0.5 * probs + 0.5 * np.eye(len(classes))[p]
        confusion[t][p] += 1
        rows.append(
            {
                "clip_id": clip_id,
                "speaker": speaker,
                "true": true,
                "predicted": classes[p],
                **{f"{PROB_PREFIX}{c}": float(f"{v:.7g}") for c, v in zip(classes, probs, strict=True)},
            }
        )
    return rows, confusion


def write_finished_run(
    tracker: Tracker, parent_run_id: str, cell: Cell, fold: MadeUpFold, tags: dict[str, str] | None = None
) -> str:
    """One cell's finished run, as a worker's rank 0 writes it (a single epoch); ``tags``: the identity
    the driver hands its workers (data digest, code versions), so planning counts the run finished."""
    rows, confusion = made_up_predictions(cell, fold)
    speakers = sorted({r["speaker"] for r in rows})
    run_id, _ = tracker.cell_run(
        cell.key,
        parent_run_id,
        tags={
            **grid_tags(cell),
            TAG_SEED: str(cell.seed),
            TAG_DEVICE_COUNT: str(cell.world_size),
            TAG_TEST_SPEAKERS: ",".join(speakers),
            **(tags or {}),
        },
        params=flat_params(cell),
    )
    right = sum(confusion[i][i] for i in range(len(confusion)))
    war = 100.0 * right / len(rows)
    recalls = [row[i] / max(1, sum(row)) for i, row in enumerate(confusion)]
    uar = 100.0 * sum(recalls) / len(recalls)
    tracker.log_epoch(run_id, 0, {TEST_WAR: war, TEST_UAR: uar, "test_loss": 1.0, "train_loss": 1.0})
    tracker.finish_cell(
        run_id,
        final={FINAL_WAR: war, FINAL_UAR: uar, WALL_SECONDS: 1.0},
        confusion=confusion,
        class_names=list(fold.classes),
        predictions=rows,
    )
    return run_id
