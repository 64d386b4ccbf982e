"""What a finished cell's run holds besides its predictions: the resolved job it ran and its confusion figure.

Both are for a person in the MLflow UI comparing runs on their own: ``job.yaml`` is the whole
:class:`~harness.plan.cells.CellJob` the workers received (the cell's resolved sections, its key,
resources and provenance), so a run says exactly what it ran without the experiment file; and
``confusion.png`` is the matrix of ``confusion.csv`` drawn row-normalised, with the counts written in.
"""

from __future__ import annotations

import io
from typing import Any

import yaml

from harness.plan.cells import CellJob

JOB_FILE = "job.yaml"
CONFUSION_FIGURE = "confusion.png"


def cell_artifacts(
    job: CellJob, confusion: list[list[int]], class_names: list[str]
) -> dict[str, str | bytes]:
    """``job.yaml`` and ``confusion.png`` of a finished cell (name -> content)."""
    return {
        JOB_FILE: job_yaml(job),
        CONFUSION_FIGURE: confusion_png(confusion, class_names, f"{job.cell.setting}, {job.cell.fold_name}"),
    }


def job_yaml(job: CellJob) -> str:
    """The resolved job as YAML, in the order its model declares its fields."""
    return yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def confusion_png(confusion: list[list[int]], class_names: list[str], title: str) -> bytes:
    """The confusion matrix as a PNG: rows (true class) normalised to recall, counts in each square."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(confusion, dtype=float).reshape(len(class_names), len(class_names))
    totals = counts.sum(axis=1, keepdims=True)
    recall = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.6 * n + 2.4, 0.55 * n + 1.8))
    ax.imshow(recall, vmin=0.0, vmax=1.0, cmap="Blues")
    for i, j in np.ndindex(counts.shape):
        ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8, color=_ink(recall[i, j]))
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: {int(counts.sum())} test clips (colour: recall)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _ink(shade: Any) -> str:
    return "white" if float(shade) > 0.5 else "black"
