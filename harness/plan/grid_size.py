"""A grid's size said before any work: counts per axis, its first and last cells, and a ceiling a sweep
will not pass without being told (a ``seeds`` list typed as 0..99999 is 400,000 cells, not 40)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.experiment.errors import ConfigError

DEFAULT_MAX_CELLS = 10_000  # the largest sweep measured end to end on one machine (docs/benchmarks.md)
SHOWN = 3  # cells listed at each end when the full list is not asked for
FULL_UP_TO = 50  # a grid this small is listed whole

AXES = (("datasets", "dataset"), ("settings", "setting"), ("folds", "fold_name"), ("seeds", "seed"))


def axis_counts(cells: Sequence[Any]) -> dict[str, int]:
    """How many distinct values each axis of the grid takes among these cells (folds: the most any
    one dataset has, since each dataset has its own)."""
    counts = {name: len({getattr(c, attr) for c in cells}) for name, attr in AXES}
    per_dataset: dict[str, set[str]] = {}
    for c in cells:
        per_dataset.setdefault(c.dataset, set()).add(c.fold_name)
    counts["folds"] = max((len(f) for f in per_dataset.values()), default=0)
    return counts


def describe_axes(cells: Sequence[Any]) -> str:
    counts = axis_counts(cells)
    folds = {len({c.fold_name for c in cells if c.dataset == d}) for d in {c.dataset for c in cells}}
    words = {name: f"{n} {name if n != 1 else name[:-1]}" for name, n in counts.items()}
    if len(folds) > 1:
        words["folds"] = f"{min(folds)}-{max(folds)} folds"
    return " x ".join(words.values())


def largest_axis(cells: Sequence[Any]) -> tuple[str, int]:
    counts = axis_counts(cells)
    name = max(counts, key=lambda k: counts[k])
    return name, counts[name]


def cell_lines(cells: Sequence[Any], line: Any, full: bool) -> list[str]:
    """Every cell's line when asked (``full``) or when few; else the first and last few and a count."""
    if full or len(cells) <= FULL_UP_TO:
        return [line(c) for c in cells]
    hidden = len(cells) - 2 * SHOWN
    return [
        *(line(c) for c in cells[:SHOWN]),
        f"  ... {hidden} more cells (--list shows every one)",
        *(line(c) for c in cells[-SHOWN:]),
    ]


def check_grid_size(cells: Sequence[Any], max_cells: int | None, yes: bool) -> None:
    """Refuse a sweep larger than ``resources.max_cells`` (default :data:`DEFAULT_MAX_CELLS`) unless
    ``--yes``: naming the axis that multiplies, before Ray starts or anything is written."""
    ceiling = max_cells or DEFAULT_MAX_CELLS
    if yes or len(cells) <= ceiling:
        return
    name, n = largest_axis(cells)
    raise ConfigError(
        "resources.max_cells",
        f"{len(cells):,} cells ({describe_axes(cells)}) is above {ceiling:,}; the {name} axis multiplies "
        f"by {n:,}: check its list, or pass --yes (or raise resources.max_cells) to run them all",
    )
