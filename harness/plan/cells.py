"""The experiment -> the grid of cells, each with a deterministic key, and the job a worker receives.

A cell's key hashes what changes its result: the dataset's identity (corpus, adapter options, generated
corpus parameters, protocol), the fold, input setting and seed, and the result-bearing fields of the
preprocessing, model and training sections (fields marked operational in the schema stay out), plus the
world size. It names the cell's Train runs, its checkpoints and its MLflow tag, so a rerun finds its own
past and never duplicates it. The cell carries its sections as the validated pydantic models; the worker
receives them as their exact JSON and validates them back, so nothing is dropped or defaulted twice.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.experiment.config import DatasetConfig, ExperimentConfig, ResourcesConfig
from harness.experiment.search import SearchConfig
from mmder.config import ModelConfig, PretrainConfig, TrainingConfig, resolve_precision, result_fields
from mmder.data.preprocess import PreprocessConfig

# A Tune trial's config holds its whole job description under this key: a sweep's grid runs over
# {"job": CellJob}, a search's trials get {"job": SearchJob, <sampled parameters>...}.
GRID_PARAM = "job"

__all__ = ["Cell", "CellJob", "expand_cells", "expand_pretrain_cells"]


class Cell(BaseModel):
    """One training job of the grid (``kind=train``) or one MAE pre-training (``kind=pretrain``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["train", "pretrain"] = "train"  # a baseline setting is a train cell without training
    key: str
    dataset: str = Field(description="the dataset's label")
    setting: str
    fold: int = Field(description="fold index (a pre-training's: it saw that fold's training clips only)")
    fold_name: str
    seed: int
    datasets: list[DatasetConfig] = Field(
        description="the cell's dataset (one, for a pre-training too); a cross_corpus cell's second is the "
        "dataset it tests on"
    )
    preprocess: PreprocessConfig
    model: ModelConfig
    training: TrainingConfig | None = None
    pretrain: PretrainConfig | None = None
    world_size: int
    pretrain_key: str | None = Field(None, description="model.pretrained: mae -> the pre-training's key")
    search_key: str | None = Field(None, description="the search whose chosen configuration this cell trains")

    @property
    def dataset_config(self) -> DatasetConfig:
        return self.datasets[0]


class CellJob(BaseModel):
    """What one Tune trial hands to its Train workers: the cell and where things are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cell: Cell
    cache_paths: dict[str, str]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    storage_path: str
    resources: ResourcesConfig
    pretrained_path: str | None = None
    encoder_path: str | None = None
    tags: dict[str, str] = Field(
        default_factory=dict, description="provenance the driver knows (data digest, versions, commit)"
    )
    dataset_roots: dict[str, str] = Field(default_factory=dict, description="label -> corpus folder")

    @property
    def threads(self) -> int:
        return max(1, int(self.resources.cpus_per_worker))


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def dataset_identity(ds: DatasetConfig, test: DatasetConfig | None = None) -> dict[str, Any]:
    """What of a dataset changes a result: not its display name, nor where its files lie.

    The protocol as its kind keys it (split files: their digest, not their folder; the kinds before
    those: as written, so their keys never moved). ``test``: the dataset a ``cross_corpus`` protocol
    tests on, hashed by what it is (corpus, options, generator), not by its display name.
    """
    identity = result_fields(ds)
    if ds.corpus != "synthetic":
        identity.pop("synthetic")
    identity.pop("folds")  # which folds run selects cells; it does not change any one of them
    if "protocol" in identity:
        from mmder.data.folds import protocol_identity

        identity["protocol"] = protocol_identity(ds.protocol)
    if test is not None:
        tested = dataset_identity(test)
        tested.pop("protocol", None)  # its own folds are not this cell's
        identity["protocol"] = {**identity["protocol"], "test_dataset": tested}
    return identity


def tested_dataset(spec: ExperimentConfig, ds: DatasetConfig) -> DatasetConfig | None:
    """The dataset a ``cross_corpus`` protocol tests on (validated to be another of the experiment)."""
    if ds.protocol.get("kind") != "cross_corpus":
        return None
    return next(d for d in spec.datasets if d.label == ds.protocol["test"])


def _resolved(spec: ExperimentConfig, section: TrainingConfig | PretrainConfig) -> Any:
    """The section with ``precision: auto`` resolved for the experiment's devices (part of the key)."""
    return section.model_copy(
        update={"precision": resolve_precision(section.precision, spec.resources.use_gpu)}
    )


def expand_pretrain_cells(spec: ExperimentConfig) -> list[Cell]:
    """One MAE pre-training per dataset, fold and input setting, on the (unlabeled) clips of that
    fold's training speakers only: a cell never starts from an encoder that saw its test speakers."""
    from mmder.data.folds import fold_names

    recipe = _resolved(spec, spec.pretrain.recipe())
    cells = []
    for ds, fold, names, setting in (
        (d, fold, fold_names(d.protocol), setting)
        for d in spec.datasets
        if d.protocol.get("kind") != "cross_corpus"  # its cells may not start from MAE (refused)
        for fold in (d.folds if d.folds is not None else range(len(fold_names(d.protocol))))
        for setting in spec.pretrain_settings
    ):
        identity = {
            "kind": "pretrain",
            "dataset": dataset_identity(ds),
            "fold": fold,
            "clips": "training speakers of the fold",
            "setting": setting,
            "preprocess": result_fields(spec.preprocess),
            "model": {"size": spec.model.size},
            "pretrain": result_fields(recipe),
            "world_size": spec.resources.num_workers,
        }
        cells.append(
            Cell(
                kind="pretrain",
                key=f"pretrain-{ds.corpus}-{setting}-f{fold}-{_digest(identity)}",
                dataset=ds.label,
                setting=setting,
                fold=fold,
                fold_name=names[fold],
                seed=0,
                datasets=[ds],
                preprocess=spec.preprocess,
                model=spec.model,
                pretrain=recipe,
                world_size=spec.resources.num_workers,
            )
        )
    return cells


def expand_cells(spec: ExperimentConfig) -> list[Cell]:
    """The grid in a stable order: dataset, fold, setting, seed; each cell with its key (and, with a
    ``search:`` block, the key of the search whose chosen configuration it trains)."""
    from mmder.data.folds import fold_names

    pretrained = (  # (dataset, fold, setting) -> the key of the pre-training on that fold's training clips
        {(c.dataset, c.fold, c.setting): c.key for c in expand_pretrain_cells(spec)}
        if spec.model.pretrained == "mae"
        else {}
    )
    sections = Sections.of(spec)
    cells: list[Cell] = []
    for ds in spec.datasets:
        names = fold_names(ds.protocol)
        for fold in ds.folds if ds.folds is not None else range(len(names)):
            for setting in spec.grid.settings:
                for seed in _seeds(spec, setting):
                    pretrain_key = pretrained.get((ds.label, fold, setting))
                    cell = _train_cell(sections, ds, fold, names[fold], setting, seed, pretrain_key)
                    if spec.search is not None and cell.training is not None:
                        cell = cell.model_copy(update={"search_key": search_key(spec.search, cell)})
                    cells.append(cell)
    return cells


@dataclass(frozen=True)
class Sections:
    """The experiment's sections and their result-bearing identities, resolved once per experiment:
    every cell of a grid shares them, so a 10,000-cell grid computes each once, not 10,000 times."""

    spec: ExperimentConfig
    training: TrainingConfig
    preprocess_id: dict[str, Any]
    model_id: dict[str, Any]
    training_id: dict[str, Any]
    search_id: dict[str, Any] | None
    model_as_given: dict[str, Any]  # the model's identity with ``pretrained`` as the experiment gives it
    datasets: dict[str, tuple[DatasetConfig | None, dict[str, Any]]]  # label -> (tested on, identity)
    blobs: dict[int, str]  # id of each shared identity above -> its canonical JSON, written once

    @classmethod
    def of(cls, spec: ExperimentConfig) -> Sections:
        training = _resolved(spec, spec.training)
        datasets = {}
        for ds in spec.datasets:
            tested = tested_dataset(spec, ds)
            datasets[ds.label] = (tested, dataset_identity(ds, tested))
        shared = {
            "preprocess_id": result_fields(spec.preprocess),
            "model_id": result_fields(spec.model),
            "training_id": result_fields(training),
            "search_id": result_fields(spec.search) if spec.search is not None else None,
        }
        shared["model_as_given"] = {**shared["model_id"], "pretrained": spec.model.pretrained}
        blobs = {id(v): _canonical(v) for v in shared.values() if v is not None}
        blobs.update({id(identity): _canonical(identity) for _, identity in datasets.values()})
        return cls(spec=spec, training=training, datasets=datasets, blobs=blobs, **shared)


def _seeds(spec: ExperimentConfig, setting: str) -> list[int]:
    """The seeds a setting runs with: all of the grid's, but one for a classical baseline, whose result
    cannot depend on the seed (an SVC without probability estimates ignores its random_state). The
    first seed keeps the keys such cells always had; the leaderboard then states its n as the folds."""
    from mmder.registry import BASELINES

    return spec.grid.seeds[:1] if setting in BASELINES else list(spec.grid.seeds)


def _train_cell(
    sections: Sections,
    ds: DatasetConfig,
    fold: int,
    fold_name: str,
    setting: str,
    seed: int,
    pretrain_key: str | None,
) -> Cell:
    from mmder.registry import BASELINES

    spec = sections.spec
    baseline = BASELINES.get(setting)
    tested, _ = sections.datasets[ds.label]
    if baseline is not None:  # reads the audio files: no model, no training, no cache
        digest = _digest(_baseline_identity(spec, ds, fold, setting, seed))
    else:
        digest = _fast_digest(_cell_identity(sections, ds, fold, setting, seed, pretrain_key), sections.blobs)
    # Every field comes from the validated experiment: constructing without validating again keeps a
    # large grid's planning to the hashing (validation re-ran each dataset's option model per cell)
    return Cell.model_construct(
        # the corpus, not the display name (operational), keeps keys readable
        key=f"{ds.corpus}-{setting}-f{fold}-s{seed}-{digest}",
        dataset=ds.label,
        setting=setting,
        fold=fold,
        fold_name=fold_name,
        seed=seed,
        datasets=[ds] if tested is None else [ds, tested],
        preprocess=spec.preprocess,
        model=spec.model,
        training=None if baseline else sections.training,
        world_size=1 if baseline else spec.resources.num_workers,
        pretrain_key=pretrain_key,
    )


def _cell_identity(
    sections: Sections,
    ds: DatasetConfig,
    fold: int,
    setting: str,
    seed: int,
    pretrain_key: str | None,
) -> dict[str, Any]:
    """What a deep cell's key hashes."""
    # with `mae`, the pre-training's key: a new pre-training makes new cells
    model = {**sections.model_id, "pretrained": pretrain_key} if pretrain_key else sections.model_as_given
    identity: dict[str, Any] = {
        "dataset": sections.datasets[ds.label][1],
        "fold": fold,
        "setting": setting,
        "seed": seed,
        "preprocess": sections.preprocess_id,
        "model": model,
        "training": sections.training_id,
        "world_size": sections.spec.resources.num_workers,
    }
    if sections.search_id is not None:  # a changed space or budget is a different result
        identity["search"] = sections.search_id
    return identity


@functools.cache
def _key_text(key: str) -> str:
    return json.dumps(key)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _fast_digest(identity: dict[str, Any], blobs: dict[int, str]) -> str:
    """``_digest(identity)``, writing the sections every cell shares (``blobs``: id -> their canonical
    JSON, made once per experiment) as they are: the same bytes, without serialising them per cell."""
    parts = []
    for key in sorted(identity):
        value = identity[key]
        text = blobs.get(id(value))
        if text is None:
            plain_int = type(value) is int  # noqa: E721 - not bool, which JSON writes as true/false
            text = str(value) if plain_int else _canonical(value)
        parts.append(f"{_key_text(key)}:{text}")
    return hashlib.sha256(("{" + ",".join(parts) + "}").encode()).hexdigest()[:10]


def _baseline_identity(
    spec: ExperimentConfig, ds: DatasetConfig, fold: int, setting: str, seed: int
) -> dict[str, Any]:
    """What a classical baseline cell's key hashes: its pipeline, not the deep sections."""
    from mmder.registry import BASELINE_VERSION, BASELINES

    baseline = BASELINES[setting]
    identity: dict[str, Any] = {
        "dataset": dataset_identity(ds),
        "fold": fold,
        "setting": setting,
        "seed": seed,
        "baseline": [baseline.feature_set, baseline.kernel, baseline.C, BASELINE_VERSION],
    }
    if spec.preprocess.speaker_norm != "none":  # its features are speaker-normalised
        identity["speaker_norm"] = True
    return identity


def search_fold(search: SearchConfig, cell: Cell) -> int:
    """The fold whose training speakers a cell's search uses."""
    if search.scope == "per_fold":
        return cell.fold
    ds = cell.dataset_config
    return ds.folds[0] if ds.folds else 0


def search_key(search: SearchConfig, cell: Cell) -> str:
    """What changes a search's outcome: data, setting, fold searched, base sections, the search itself."""
    assert cell.training is not None
    identity = {
        "dataset": dataset_identity(cell.dataset_config),
        "setting": cell.setting,
        "fold": search_fold(search, cell),
        "preprocess": result_fields(cell.preprocess),
        "model": result_fields(cell.model),
        "training": result_fields(cell.training),
        "search": result_fields(search),
        "world_size": cell.world_size,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"search-{cell.dataset}-{cell.setting}-f{identity['fold']}-{digest}"
