"""Checks that need the machine or the data's listing (but no decoding), run before Ray or any MLflow run.

``harness/experiment/config.py`` checks everything a file alone can say. What is left needs the disk: that the
corpus folders and checkpoints exist, and what a corpus lists: a root that lists no usable clip, an
``explicit`` protocol naming a speaker the corpus does not have, more folds than speakers. These run
right after listing, which costs seconds, so a sweep never fails the same way in every cell inside Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.experiment.config import DatasetConfig, ExperimentConfig
from harness.experiment.errors import ConfigError

Echo = Callable[[str], None]


def dataset_root(spec: ExperimentConfig, ds: DatasetConfig, output: Path) -> Path:
    """Absolute corpus folder: Train workers change directory, so relative paths would break there."""
    if ds.root:
        return spec.resolved_path(ds.root)
    return (output / "data" / ds.label).resolve()


def missing_paths(spec: ExperimentConfig, output: Path) -> list[tuple[str, Path]]:
    """(dotted key, path) of every corpus folder and checkpoint file the experiment names but lacks."""
    missing = []
    for i, ds in enumerate(spec.datasets):
        if ds.corpus == "synthetic" and not ds.root:
            continue
        root = dataset_root(spec, ds, output)
        if not root.exists():
            missing.append((f"datasets[{i}].root", root))
    if spec.model.pretrained and spec.model.pretrained != "mae":
        path = spec.resolved_path(spec.model.pretrained)
        if not path.exists():
            missing.append(("model.pretrained", path))
    return missing


def check_data_roots(spec: ExperimentConfig, output: Path) -> None:
    """For a real run: every corpus folder and checkpoint must exist (a synthetic corpus is generated)."""
    for key, path in missing_paths(spec, output):
        raise ConfigError(key, f"does not exist: {path}")


def ensure_synthetic(spec: ExperimentConfig, ds: DatasetConfig, output: Path, echo: Echo) -> None:
    """Generate a synthetic corpus that has no root of its own (idempotent: seconds when it exists)."""
    from mmder.data.synthetic import generate_corpus

    if ds.corpus != "synthetic" or ds.root:
        return
    root = dataset_root(spec, ds, output)
    t0 = time.perf_counter()
    generate_corpus(
        root,
        clips_per_class=ds.synthetic.clips_per_class,
        speakers=ds.synthetic.speakers,
        seed=ds.synthetic.seed,
    )
    echo(f"synthetic corpus ready in {root} ({time.perf_counter() - t0:.1f} s)")


def check_listings(
    spec: ExperimentConfig, output: Path, labels: set[str], echo: Echo, *, generate: bool = True
) -> None:
    """List each needed corpus and make its folds: an empty root or an impossible protocol stops here.

    Also prints what a person should know about a listing (e.g. a label seen on very few clips).
    ``generate=False`` (``mmder validate``) leaves a synthetic corpus that does not exist yet alone.
    """
    from mmder.data.corpora import EmptyCorpusError, list_corpus
    from mmder.data.folds import make_folds

    for i, ds in enumerate(spec.datasets):
        if ds.label not in labels:
            continue
        if generate:
            ensure_synthetic(spec, ds, output, echo)
        elif ds.corpus == "synthetic" and not ds.root and not dataset_root(spec, ds, output).exists():
            continue
        root = dataset_root(spec, ds, output)
        try:
            listing = list_corpus(ds.corpus, root, **ds.options)
        except EmptyCorpusError as err:
            raise ConfigError(f"datasets[{i}].root", str(err)) from None
        if not listing.clips:
            raise ConfigError(f"datasets[{i}].root", f"corpus {ds.corpus!r} at {root} lists no usable clip")
        for note in listing.notes:
            echo(f"{ds.label}: {note}")
        try:
            make_folds(ds.protocol, [c.speaker for c in listing.clips], [c.group for c in listing.clips])
        except ValueError as err:
            speakers = sorted({c.speaker for c in listing.clips})
            raise ConfigError(
                f"datasets[{i}].protocol", f"{err} (the corpus at {root} has speakers {', '.join(speakers)})"
            ) from None
