"""What made a result: the data a cell saw, the declared code versions, and where and how it ran.

A finished run counts for a cell only when its *identity* matches today's: the cell key (settings),
the data digest of its dataset (:func:`mmder.data.preprocess.data_digest`) and the declared versions
(:data:`mmder.data.preprocess.CACHE_VERSION`, :data:`mmder.versions.RESULTS_VERSION`). The git commit
and the mmder version are recorded on every run but are not identity: a README edit never reruns a
grid. Every value here is an MLflow tag (named in :mod:`harness.tracking.tags`), so the UI can filter
on it, e.g. on ``TAG_DATA_DIGEST``.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.experiment.config import DatasetConfig, ExperimentConfig
from harness.tracking.tags import (
    TAG_CACHE_VERSION,
    TAG_DATA_DIGEST,
    TAG_GIT_COMMIT,
    TAG_RESULTS_VERSION,
    TAG_VERSION,
)

if TYPE_CHECKING:
    from mmder.data.corpora import CorpusListing


REPO = Path(__file__).resolve().parents[2]


@functools.cache
def git_commit(repo: Path = REPO) -> str:
    """``<sha>`` or ``<sha>+dirty`` (tracked files changed), ``unknown`` outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def code_versions(kind: str = "train") -> dict[str, str]:
    """The declared versions a result of this kind depends on (identity tags)."""
    from mmder.data.preprocess import CACHE_VERSION
    from mmder.versions import PRETRAIN_RESULTS_VERSION, RESULTS_VERSION

    results = PRETRAIN_RESULTS_VERSION if kind == "pretrain" else RESULTS_VERSION
    return {TAG_CACHE_VERSION: str(CACHE_VERSION), TAG_RESULTS_VERSION: str(results)}


def recorded_tags() -> dict[str, str]:
    """Recorded on every run, not identity: which code produced it."""
    from mmder.versions import package_version

    return {TAG_VERSION: package_version(), TAG_GIT_COMMIT: git_commit()}


def listing_digest(ds: DatasetConfig, root: Path, listing: CorpusListing) -> str:
    from mmder.data.preprocess import data_digest

    options = dict(ds.options)
    if ds.corpus == "synthetic":
        options["synthetic"] = ds.synthetic.model_dump()
    return data_digest(listing, options, root)


def dataset_digests(
    spec: ExperimentConfig, roots: dict[str, Path], listings: dict[str, CorpusListing | None]
) -> dict[str, str | None]:
    """label -> data digest of each dataset whose files are here; None where they are not (yet)."""
    return {
        ds.label: listing_digest(ds, roots[ds.label], listing) if listing is not None else None
        for ds in spec.datasets
        for listing in [listings.get(ds.label)]
    }


@dataclass(frozen=True)
class Verdict:
    """How a recorded run stands against today's identity of its cell."""

    current: bool
    why: str = ""  # "data changed", "code changed" (or both)


def judge(tags: dict[str, str], digest: str | None, kind: str = "train") -> Verdict:
    """Compare a run's identity tags with today's; an unknown digest (data not here) is no evidence."""
    reasons = []
    recorded = tags.get(TAG_DATA_DIGEST)
    if digest is not None and recorded != digest:
        reasons.append("data changed")
    if any(tags.get(k) != v for k, v in code_versions(kind).items()):
        reasons.append("code changed")
    return Verdict(current=not reasons, why=", ".join(reasons))
