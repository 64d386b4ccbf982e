"""What a finished cell's run holds besides its predictions: the resolved job it ran and its confusion figure.

Both are for a person in the MLflow UI comparing runs on their own: ``job.yaml`` is the whole
:class:`~harness.plan.cells.CellJob` the workers received (the cell's resolved sections, its key,
resources and provenance), so a run says exactly what it ran without the experiment file; and
``confusion.svg`` is the matrix of ``confusion.csv`` shaded row-normalised, with the counts written in.
"""

from __future__ import annotations

import html

import yaml

from harness.plan.cells import CellJob

JOB_FILE = "job.yaml"
CONFUSION_FIGURE = "confusion.svg"


def cell_artifacts(
    job: CellJob, confusion: list[list[int]], class_names: list[str]
) -> dict[str, str | bytes]:
    """``job.yaml`` and ``confusion.svg`` of a finished cell (name -> content)."""
    return {
        JOB_FILE: job_yaml(job),
        CONFUSION_FIGURE: confusion_svg(confusion, class_names, f"{job.cell.setting}, {job.cell.fold_name}"),
    }


def job_yaml(job: CellJob) -> str:
    """The resolved job as YAML, in the order its model declares its fields."""
    return yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def confusion_svg(confusion: list[list[int]], class_names: list[str], title: str) -> bytes:
    """The confusion matrix as an SVG the MLflow UI shows: rows (true class) shaded by recall, counts in
    each square. Written as text, not drawn with matplotlib: a figure per cell cost a third of a micro
    cell's worker time (0.3 s of savefig), which a 10,000-cell sweep paid 10,000 times."""
    n = len(class_names)
    rows = [list(map(int, r)) for r in confusion]
    label = 12 + 7 * max((len(c) for c in class_names), default=1)  # room for the longest class name
    cell, left, top = 34, label, 40
    bottom = top + n * cell + label
    width, height = left + n * cell + 20, bottom + 10
    esc = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="10">',
        f'<text x="{width / 2:.0f}" y="14" text-anchor="middle" font-size="11">{esc(title)}: '
        f"{sum(map(sum, rows))} test clips (shade: recall)</text>",
        f'<text x="{left + n * cell / 2:.0f}" y="{height - 2}" text-anchor="middle">predicted</text>',
        f'<text x="10" y="{top + n * cell / 2:.0f}" transform="rotate(-90 10 {top + n * cell / 2:.0f})" '
        'text-anchor="middle">true</text>',
    ]
    for i, row in enumerate(rows):
        total = sum(row)
        y = top + i * cell
        parts.append(
            f'<text x="{left - 4}" y="{y + cell / 2 + 3:.0f}" text-anchor="end">{esc(class_names[i])}</text>'
        )
        for j, count in enumerate(row):
            shade = count / total if total else 0.0
            x = left + j * cell
            fill = _blue(shade)
            ink = "white" if shade > 0.5 else "black"
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#ccc"/>'
            )
            centre = f'x="{x + cell / 2:.0f}" y="{y + cell / 2 + 3:.0f}" text-anchor="middle"'
            parts.append(f'<text {centre} fill="{ink}">{count}</text>')
    for j, name in enumerate(class_names):
        x, y = left + j * cell + cell / 2, top + n * cell + 6
        parts.append(
            f'<text x="{x:.0f}" y="{y:.0f}" transform="rotate(45 {x:.0f} {y:.0f})">{esc(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts).encode()


def _blue(shade: float) -> str:
    """White to matplotlib's 'Blues' dark end, linearly."""
    lo, hi = (247, 251, 255), (8, 48, 107)
    r, g, b = (round(a + (c - a) * min(1.0, max(0.0, shade))) for a, c in zip(lo, hi, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"
