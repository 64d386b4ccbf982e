"""Declared versions of what a cell computes: part of a result's identity, unlike the git commit.

Why declared rather than taken from git: a README edit or a refactor must not re-run a grid, while
a change to what a cell computes must. So, as lm-evaluation-harness versions its tasks, the commit
that changes the training path's results bumps :data:`RESULTS_VERSION` (and one that changes the
cached arrays bumps :data:`mmder.data.preprocess.CACHE_VERSION`). Finished runs recorded under
another version then show as ``stale (code changed)`` and run again.
"""

from __future__ import annotations

__all__ = ["RESULTS_VERSION", "PRETRAIN_RESULTS_VERSION", "package_version"]

RESULTS_VERSION = 1  # bump when fine-tuning/evaluation (model, fusion, recipes, metrics) changes a result
PRETRAIN_RESULTS_VERSION = 1  # bump when MAE pre-training changes what it exports


def package_version() -> str:
    """The installed mmder version (pyproject), or ``unknown`` when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmder")
    except PackageNotFoundError:
        return "unknown"
