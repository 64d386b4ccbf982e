"""Experiment YAML -> a validated, typed spec -> the grid of cells, each with a deterministic key.

A cell's key is a hash of everything that changes its result (dataset, protocol and fold, input
setting, seed, preprocessing, model, training, world size); it names the cell's Train run, its
checkpoints and its MLflow tag, so a rerun finds its own past and never duplicates it. Things that
do not change the result (concurrency, retries, tracking, where the data lies) stay out of the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.schema import bounded, choice, parse, to_dict


def _corpora() -> list[str]:
    from mmder.data.corpora import available_corpora

    return sorted(available_corpora())


def _settings() -> list[str]:
    from mmder.fusion import SETTINGS

    return list(SETTINGS)


def _sizes() -> list[str]:
    from mmder.model import MODEL_SIZES

    return list(MODEL_SIZES)


def _protocols() -> list[str]:
    from mmder.data.folds import PROTOCOLS

    return sorted(PROTOCOLS)


@dataclass
class SyntheticSpec:
    """Parameters of the generated corpus (corpus: synthetic), created on first use."""

    clips_per_class: int = bounded(3, min=1)
    speakers: int = bounded(16, min=2)
    seed: int = 0


@dataclass
class DatasetSpec:
    corpus: str = choice("synthetic", _corpora)
    name: str | None = None
    # Folder of the corpus as downloaded. For `synthetic` it may be left out: the corpus is generated
    # under the sweep's output folder.
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    # {kind: ..., and that kind's keys}; see mmder.data.folds for the kinds and their keys.
    protocol: dict[str, Any] = field(default_factory=lambda: {"kind": "speaker_kfold", "folds": 5})
    # Run only these folds (by index); all when left out.
    folds: list[int] | None = None

    @property
    def label(self) -> str:
        return self.name or self.corpus


@dataclass
class GridSpec:
    settings: list[str] = choice(
        ["video", "audio", "CFAS", "SFAS", "FFLS", "FSLF", "OFOS", "RFAS"], _settings
    )
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass
class PreprocessSpec:
    image_size: int = bounded(224, min=16)
    face: str = choice("none", ["none", "haar"])
    spectrogram: str = choice("mfcc", ["mfcc", "logmel"])
    colormap: str = choice("viridis", ["viridis", "gray"])
    sample_rate: int = bounded(16000, min=4000)
    workers: int = bounded(1, min=1)


@dataclass
class ModelSpec:
    size: str = choice("base", _sizes)
    # A checkpoint (official VideoMAE, HuggingFace or ours; relative to the experiment file), or `mae`:
    # each cell starts from `mmder pretrain`'s encoder for its own input setting.
    pretrained: str | None = None
    drop_path: float = bounded(0.0, min=0.0, max=1.0)
    head_dropout: float = bounded(0.0, min=0.0, max=1.0)
    # Recompute each block's activations in the backward pass: less memory for large sizes, ~30 % slower.
    grad_checkpointing: bool = False


@dataclass
class TrainingSpec:
    epochs: int = bounded(10, min=1)
    batch_size: int = bounded(16, min=1)
    eval_batch_size: int = bounded(32, min=1)
    lr: float = bounded(5e-4, min=0.0)
    min_lr: float = bounded(1e-6, min=0.0)
    weight_decay: float = bounded(0.05, min=0.0)
    warmup_epochs: float = bounded(1.0, min=0.0)
    label_smoothing: float = bounded(0.0, min=0.0, max=1.0)
    grad_clip: float | None = bounded(1.0, min=0.0)
    # finetune (VideoMAE's recipe), linear_probe (the authors' code: frozen encoder, LayerNorm + Linear),
    # or partial:K (the last K blocks trained too).
    recipe: str = "finetune"
    layer_decay: float = bounded(1.0, min=0.0, max=1.0)
    mixup: float = bounded(0.0, min=0.0)
    cutmix: float = bounded(0.0, min=0.0)
    mixup_prob: float = bounded(1.0, min=0.0, max=1.0)
    zero_stage: int = choice(2, [0, 1, 2, 3])
    precision: str = choice("auto", ["auto", "fp32", "bf16", "fp16"])
    data_workers: int = bounded(0, min=0)


@dataclass
class PretrainSpec:
    """MAE pre-training (`mmder pretrain`): one run per input setting on every clip of every dataset."""

    # Input settings to pre-train for (a modality's sequence or a fusion's); the grid's when left out.
    settings: list[str] | None = choice(None, _settings)
    epochs: int = bounded(20, min=1)
    batch_size: int = bounded(8, min=1)
    # None: VideoMAE's 1.5e-4 x global batch / 256.
    lr: float | None = bounded(None, min=0.0)
    min_lr: float = bounded(1e-5, min=0.0)
    weight_decay: float = bounded(0.05, min=0.0)
    warmup_epochs: float = bounded(2.0, min=0.0)
    mask_ratio: float = bounded(0.9, min=0.0, max=0.99)
    zero_stage: int = choice(2, [0, 1, 2, 3])


@dataclass
class ResourcesSpec:
    num_workers: int = bounded(1, min=1)
    use_gpu: bool = False
    cpus_per_worker: float = bounded(1.0, min=0.0)
    max_concurrent_trials: int = bounded(1, min=1)
    max_failures: int = bounded(2, min=-1)


@dataclass
class TrackingSpec:
    # MLflow experiment name; the experiment's name when left out.
    experiment: str | None = None
    # MLflow tracking URI; $MLFLOW_TRACKING_URI, else sqlite:///<output>/mlflow.db.
    uri: str | None = None


@dataclass
class RaySpec:
    # None: a local Ray started in-process. "auto" or "ray://host:10001" for a cluster.
    address: str | None = None
    # Where Train runs keep checkpoints: <output>/ray when left out; a shared path or s3:// on a cluster.
    storage_path: str | None = None


@dataclass
class ExperimentSpec:
    name: str
    datasets: list[DatasetSpec]
    description: str = ""
    grid: GridSpec = field(default_factory=GridSpec)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    ray: RaySpec = field(default_factory=RaySpec)
    # Set by load_experiment: the YAML file's folder, for resolving relative data roots.
    base_dir: str = "."

    @property
    def mlflow_experiment(self) -> str:
        return self.tracking.experiment or self.name


@dataclass(frozen=True)
class Cell:
    """One training job of the grid. ``config`` is everything the worker needs, as plain data."""

    key: str
    dataset: str
    setting: str
    fold: int
    fold_name: str
    seed: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls(**data)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment file; every problem is a ConfigError naming the key."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError("experiment", f"no such file: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError("experiment", f"not valid YAML: {err}", source) from err
    if not isinstance(data, dict):
        raise ConfigError("experiment", "the file must hold a mapping of keys", source)
    if "base_dir" in data:
        raise ConfigError("base_dir", "is set by mmder, not by the experiment file", source)
    data = dict(data, base_dir=str(path.resolve().parent))
    spec = parse(ExperimentSpec, data, "", source)
    validate(spec, source)
    return spec


def validate(spec: ExperimentSpec, source: str | None = None) -> None:
    """Cross-field checks that a single field's type cannot express."""
    from mmder.data.folds import fold_names
    from mmder.fusion import get_setting

    if not _NAME.match(spec.name):
        raise ConfigError("name", f"{spec.name!r} must be letters, digits, '_', '.' or '-'", source)
    if not spec.datasets:
        raise ConfigError("datasets", "needs at least one dataset", source)
    if not spec.grid.settings:
        raise ConfigError("grid.settings", "needs at least one setting", source)
    if not spec.grid.seeds:
        raise ConfigError("grid.seeds", "needs at least one seed", source)
    labels = [d.label for d in spec.datasets]
    for i, ds in enumerate(spec.datasets):
        key = f"datasets[{i}]"
        if labels.count(ds.label) > 1:
            raise ConfigError(
                f"{key}.name", f"dataset name {ds.label!r} is used twice; give each a name", source
            )
        if ds.corpus != "synthetic" and not ds.root:
            raise ConfigError(f"{key}.root", f"is required for corpus {ds.corpus!r}", source)
        kind = ds.protocol.get("kind")
        if kind not in _protocols():
            raise ConfigError(
                f"{key}.protocol.kind", f"{kind!r} is not allowed; allowed: {', '.join(_protocols())}", source
            )
        try:
            names = fold_names(ds.protocol)
        except ValueError as err:
            raise ConfigError(f"{key}.protocol", str(err), source) from err
        for f in ds.folds or []:
            if not 0 <= f < len(names):
                raise ConfigError(
                    f"{key}.folds", f"fold {f} does not exist; allowed: 0..{len(names) - 1}", source
                )
    for setting in spec.grid.settings:
        get_setting(setting)
    if not re.fullmatch(r"finetune|linear_probe|partial:[1-9][0-9]*", spec.training.recipe):
        raise ConfigError(
            "training.recipe",
            f"{spec.training.recipe!r} is not allowed; allowed: finetune, "
            "linear_probe, partial:K (K = the number of last blocks to train)",
            source,
        )
    if spec.training.recipe == "linear_probe" and (spec.training.mixup or spec.training.cutmix):
        raise ConfigError(
            "training.mixup", "linear_probe has no augmentation (its features are cached); allowed: 0", source
        )
    if spec.model.pretrained == "mae":
        missing = sorted(set(spec.grid.settings) - set(pretrain_settings(spec)))
        if missing:
            raise ConfigError(
                "pretrain.settings", f"model.pretrained: mae needs a pre-training for {missing}", source
            )
    if spec.training.min_lr > spec.training.lr:
        raise ConfigError("training.min_lr", "must not exceed training.lr", source)
    if spec.resources.use_gpu is False and spec.training.precision == "fp16":
        raise ConfigError(
            "training.precision", "fp16 needs resources.use_gpu: true; allowed on CPU: auto, fp32, bf16"
        )


def dataset_root(spec: ExperimentSpec, ds: DatasetSpec, output: Path) -> Path:
    """Absolute corpus folder: Train workers change directory, so relative paths would break there."""
    if ds.root:
        root = Path(ds.root).expanduser()
        return root if root.is_absolute() else (Path(spec.base_dir) / root).resolve()
    return (output / "data" / ds.label).resolve()


def check_data_roots(spec: ExperimentSpec, output: Path) -> None:
    """For a real run: every corpus folder must exist (a synthetic one is generated)."""
    for i, ds in enumerate(spec.datasets):
        if ds.corpus == "synthetic" and not ds.root:
            continue
        root = dataset_root(spec, ds, output)
        if not root.exists():
            raise ConfigError(f"datasets[{i}].root", f"folder does not exist: {root}")


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def precision_for(spec: ExperimentSpec) -> str:
    if spec.training.precision != "auto":
        return spec.training.precision
    return "bf16" if spec.resources.use_gpu else "fp32"


def _dataset_identity(ds: DatasetSpec) -> dict[str, Any]:
    return {
        "corpus": ds.corpus,
        "name": ds.label,
        "options": ds.options,
        "synthetic": to_dict(ds.synthetic) if ds.corpus == "synthetic" else None,
        "protocol": ds.protocol,
    }


def _preprocess_identity(spec: ExperimentSpec) -> dict[str, Any]:
    return {k: v for k, v in to_dict(spec.preprocess).items() if k != "workers"}


def pretrain_settings(spec: ExperimentSpec) -> list[str]:
    return spec.pretrain.settings or spec.grid.settings


def expand_pretrain_cells(spec: ExperimentSpec) -> list[Cell]:
    """One MAE pre-training per input setting, on the unlabeled clips of all datasets."""
    cells = []
    pre = {k: v for k, v in to_dict(spec.pretrain).items() if k != "settings"}
    for setting in pretrain_settings(spec):
        config = {
            "kind": "pretrain",
            "datasets": [_dataset_identity(ds) for ds in spec.datasets],
            "setting": setting,
            "preprocess": _preprocess_identity(spec),
            "model": {"size": spec.model.size},
            "pretrain": dict(pre, precision=precision_for(spec)),
            "world_size": spec.resources.num_workers,
        }
        key = f"pretrain-{setting}-{_digest(config)}"
        cells.append(
            Cell(
                key=key,
                dataset="+".join(ds.label for ds in spec.datasets),
                setting=setting,
                fold=-1,
                fold_name="all clips",
                seed=0,
                config=config,
            )
        )
    return cells


def expand_cells(spec: ExperimentSpec) -> list[Cell]:
    """The grid in a stable order: dataset, fold, setting, seed."""
    from mmder.data.folds import fold_names

    pretrained = (
        {c.setting: c.key for c in expand_pretrain_cells(spec)} if spec.model.pretrained == "mae" else {}
    )
    cells: list[Cell] = []
    for ds in spec.datasets:
        protocol = ds.protocol
        names = fold_names(protocol)
        folds = ds.folds if ds.folds is not None else list(range(len(names)))
        dataset_identity = _dataset_identity(ds)
        for fold in folds:
            for setting in spec.grid.settings:
                for seed in spec.grid.seeds:
                    config = {
                        "dataset": dataset_identity,
                        "fold": fold,
                        "setting": setting,
                        "seed": seed,
                        "preprocess": _preprocess_identity(spec),
                        # with `mae`, the pre-training's key: a new pre-training makes new cells
                        "model": dict(
                            to_dict(spec.model), pretrained=pretrained.get(setting, spec.model.pretrained)
                        ),
                        "training": dict(to_dict(spec.training), precision=precision_for(spec)),
                        "world_size": spec.resources.num_workers,
                    }
                    key = f"{ds.label}-{setting}-f{fold}-s{seed}-{_digest(config)}"
                    cells.append(
                        Cell(
                            key=key,
                            dataset=ds.label,
                            setting=setting,
                            fold=fold,
                            fold_name=names[fold],
                            seed=seed,
                            config=config,
                        )
                    )
    return cells
