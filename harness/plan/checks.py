"""Checks that need the machine or the data's listing (but no decoding), run before Ray or any MLflow run.

``harness/experiment/config.py`` checks everything a file alone can say. What is left needs the disk:
that the corpus folders and checkpoints exist, and what a corpus lists: a root that lists no usable
clip, an ``explicit`` protocol naming a speaker the corpus does not have, more folds than speakers,
split files naming a clip the corpus lacks or a test speaker who also trains, a cross-corpus label map
naming a class either corpus lacks.
Each corpus is listed once here (stat calls, seconds) and the listing is kept in the plan: its digest,
its folds and the cache's preparation all read that one listing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from harness.experiment.config import DatasetConfig, ExperimentConfig
from harness.experiment.errors import ConfigError
from harness.plan.places import Places

if TYPE_CHECKING:
    from mmder.data.corpora import CorpusListing

Echo = Callable[[str], None]


def missing_paths(spec: ExperimentConfig, places: Places) -> list[tuple[str, Path]]:
    """(dotted key, path) of every corpus folder and checkpoint file the experiment names but lacks."""
    missing = []
    for i, ds in enumerate(spec.datasets):
        if ds.corpus == "synthetic" and not ds.root:
            continue
        root = places.dataset_roots[ds.label]
        if not root.exists():
            missing.append((f"datasets[{i}].root", root))
    if spec.model.pretrained and spec.model.pretrained != "mae":
        path = spec.resolved_path(spec.model.pretrained)
        if not path.exists():
            missing.append(("model.pretrained", path))
    return missing


def check_data_roots(spec: ExperimentConfig, places: Places) -> None:
    """For a real run: every corpus folder and checkpoint must exist (a synthetic corpus is generated)."""
    for key, path in missing_paths(spec, places):
        raise ConfigError(key, f"does not exist: {path}")


def check_writable(places: Places, *, existing_only: bool = False) -> None:
    """A sweep writes its store and checkpoints: a read-only folder is refused before any work
    (``existing_only``: only folders that exist, for ``mmder validate``, which creates nothing).

    The cache is left out on purpose: a shared cache prepared ahead may be mounted read-only and is
    then only read; a cache that must still be written fails its preparation with the folder named.
    """
    folders = [("--output", places.output)]
    if not places.remote_storage:
        folders.append(("ray.storage_path", Path(places.storage)))
    for key, folder in folders:
        if existing_only and not folder.exists():
            continue
        nearest = folder
        while not nearest.exists() and nearest != nearest.parent:
            nearest = nearest.parent
        if not os.access(nearest, os.W_OK):
            where = folder if nearest == folder else f"{folder} (its nearest existing folder {nearest})"
            raise ConfigError(
                key,
                f"{where} cannot be written (a read-only file system, or no permission); a sweep writes "
                "its results there: point it at a writable folder",
            )


def ensure_synthetic(ds: DatasetConfig, root: Path, echo: Echo) -> None:
    """Generate a synthetic corpus that has no root of its own (idempotent: seconds when it exists)."""
    from mmder.data.synthetic import generate_corpus

    if ds.corpus != "synthetic" or ds.root:
        return
    t0 = time.perf_counter()
    generate_corpus(
        root,
        clips_per_class=ds.synthetic.clips_per_class,
        speakers=ds.synthetic.speakers,
        seed=ds.synthetic.seed,
    )
    echo(f"synthetic corpus ready in {root} ({time.perf_counter() - t0:.1f} s)")


def read_listings(
    spec: ExperimentConfig, places: Places, echo: Echo, *, strict: bool, generate: bool = False
) -> dict[str, CorpusListing | None]:
    """Each dataset's listing (label -> listing), each corpus listed once.

    ``strict`` (a run, ``mmder validate``): an empty root or an impossible protocol is a
    :class:`ConfigError` naming the key, and a listing's notes are printed. Otherwise (a dry run,
    ``status``, on a machine that may not hold the data) a dataset that cannot be listed is None.
    ``generate`` writes a synthetic corpus that does not exist yet; without it such a corpus is None.
    """
    listings: dict[str, CorpusListing | None] = {}
    for i, ds in enumerate(spec.datasets):
        root = places.dataset_roots[ds.label]
        if generate:
            ensure_synthetic(ds, root, echo)
        elif ds.corpus == "synthetic" and not ds.root and not root.exists():
            listings[ds.label] = None
            continue
        listings[ds.label] = _checked_listing(i, ds, root, echo) if strict else _listing_or_none(ds, root)
    if strict:  # every corpus listed: a cross_corpus protocol reads its test corpus's listing too
        for i, ds in enumerate(spec.datasets):
            _check_folds(i, ds, places.dataset_roots[ds.label], listings, echo)
    return listings


def _listing_or_none(ds: DatasetConfig, root: Path) -> CorpusListing | None:
    from mmder.data.corpora import list_corpus

    try:
        return list_corpus(ds.corpus, root, **ds.options)
    except (OSError, ValueError, KeyError):
        return None  # not here (dry run on another machine, synthetic not generated yet)


def _checked_listing(i: int, ds: DatasetConfig, root: Path, echo: Echo) -> CorpusListing:
    from mmder.data.corpora import EmptyCorpusError, list_corpus

    try:
        listing = list_corpus(ds.corpus, root, **ds.options)
    except EmptyCorpusError as err:
        raise ConfigError(f"datasets[{i}].root", str(err)) from None
    if not listing.clips:
        raise ConfigError(f"datasets[{i}].root", f"corpus {ds.corpus!r} at {root} lists no usable clip")
    for note in listing.notes:
        echo(f"{ds.label}: {note}")
    return listing


def _check_folds(
    i: int, ds: DatasetConfig, root: Path, listings: dict[str, CorpusListing | None], echo: Echo
) -> None:
    """The dataset's folds built on its listing (a dataset with ``folds: []`` has none to build): an
    impossible protocol, a split file naming a clip the corpus lacks or a test speaker who trains, a
    label map a corpus contradicts, all stop here; what a protocol leaves out is said."""
    from mmder.data.folds import make_folds

    listing = listings[ds.label]
    if listing is None or ds.folds == []:
        return
    test = ds.protocol.get("test") if ds.protocol.get("kind") == "cross_corpus" else None
    tested = listings.get(test) if test else None
    if test and tested is None:
        return  # the test corpus is not here (a synthetic one not generated yet): checked when it is
    try:
        folds = make_folds(
            ds.protocol,
            [c.speaker for c in listing.clips],
            [c.group for c in listing.clips],
            clips=listing.clips,
            test_clips=tested.clips if tested is not None else None,
        )
    except ValueError as err:
        speakers = sorted({c.speaker for c in listing.clips})
        raise ConfigError(
            f"datasets[{i}].protocol", f"{err} (the corpus at {root} has speakers {', '.join(speakers)})"
        ) from None
    for note in dict.fromkeys(n for f in folds for n in f.notes):
        echo(f"{ds.label}: {note}")
