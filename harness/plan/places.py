"""Where everything of one experiment lives: output folder, MLflow store, Ray storage, caches, corpora.

Worked out once per command from the experiment and ``--output``; every later step reads these paths
instead of deriving them again. All paths are absolute: Train workers change directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.experiment.config import DatasetConfig, ExperimentConfig
from harness.tracking.places import resolve_uri


def output_dir(spec: ExperimentConfig, output: str | Path | None) -> Path:
    """``--output``, else ``runs/<experiment name>`` under the current folder; absolute."""
    return Path(output or Path("runs") / spec.name).expanduser().resolve()


@dataclass(frozen=True)
class Places:
    output: Path
    tracking_uri: str  # tracking.uri, else $MLFLOW_TRACKING_URI, else SQLite under the output
    storage: str  # Train runs and cell owners: ray.storage_path, else <output>/ray (may be s3://...)
    cache: Path  # preprocessed clips: $MMDER_CACHE_DIR, else <output>/cache
    dataset_roots: dict[str, Path] = field(default_factory=dict)  # dataset label -> corpus folder

    @classmethod
    def of(cls, spec: ExperimentConfig, output: str | Path | None) -> Places:
        out = output_dir(spec, output)
        storage = spec.ray.storage_path or str(out / "ray")
        return cls(
            output=out,
            tracking_uri=resolve_uri(spec.tracking.uri, out),
            storage=storage if "://" in storage else str(Path(storage).expanduser().resolve()),
            cache=Path(os.environ.get("MMDER_CACHE_DIR") or out / "cache").expanduser().resolve(),
            dataset_roots={ds.label: dataset_root(spec, ds, out) for ds in spec.datasets},
        )

    @property
    def remote_storage(self) -> bool:
        """Storage on an object store (``s3://``): nothing to lock, list or prune there."""
        return "://" in self.storage

    @property
    def artifact_root(self) -> Path:
        """Where the embedded store's runs keep their artifacts."""
        return self.output / "mlartifacts"

    @property
    def log_dir(self) -> Path:
        return self.output / "logs"

    def encoder_path(self, pretrain_key: str) -> Path:
        """Where `mmder pretrain` leaves a pre-training's encoder (our layout) for the sweep's cells."""
        return self.output / "pretrain" / pretrain_key / "encoder.pt"


def dataset_root(spec: ExperimentConfig, ds: DatasetConfig, output: Path) -> Path:
    """A corpus folder: ``root`` resolved against the experiment file, else generated under the output."""
    if ds.root:
        return spec.resolved_path(ds.root)
    return (output / "data" / ds.label).resolve()
