"""The experiment file as one pydantic model: YAML -> ``ExperimentConfig`` -> cells -> worker, unchanged.

Every field has its type, bounds, default and a one-line description here or in :mod:`mmder.config`
(the sections the science reads) and :mod:`mmder.data.preprocess`; nothing else holds a default.
Reading the YAML and naming its problems is :mod:`harness.experiment.loading`; checks that need the
data's listing live in :mod:`harness.plan.checks`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harness.experiment.search import SearchConfig
from mmder.config import ModelConfig, PretrainConfig, Strict, TrainingConfig, operational
from mmder.data.preprocess import PreprocessConfig
from mmder.fusion import SETTINGS
from mmder.registry import BASELINES

__all__ = ["ExperimentConfig", "DatasetConfig", "experiment_schema"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "postgresql+psycopg2", "mysql", "databricks")


class SyntheticConfig(Strict):
    """Parameters of the generated corpus (corpus: synthetic), created on first use."""

    clips_per_class: int = Field(3, ge=1, description="clips per class and speaker")
    speakers: int = Field(16, ge=2, description="number of speakers")
    seed: int = Field(0, description="seed of the generator")


class DatasetConfig(Strict):
    """One corpus of the grid, its adapter options and its evaluation protocol."""

    corpus: str = Field(
        "synthetic", description="corpus adapter: ravdess, cremad, iemocap, manifest, synthetic"
    )
    name: str | None = operational(None, "display name in tables (default: the corpus name)")
    root: str | None = operational(
        None,
        "folder of the corpus as downloaded (relative to the experiment file); `synthetic` may leave it "
        "out: the corpus is generated under the output folder",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the corpus adapter's options")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig, description="corpus: synthetic only")
    protocol: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "speaker_kfold", "folds": 5},
        description="{kind: ..., and that kind's keys}: speaker_kfold (folds), explicit (train, test), "
        "ravdess_paper, leave_one_group_out (groups), split_files (dir: the folder of fold_N/ lists, "
        "relative to the experiment file; rename), cross_corpus (test: another dataset's name, labels: "
        "{test class: training class})",
    )
    folds: list[int] | None = Field(
        None,
        description="run only these folds (by index); all when left out; [] runs none (a dataset only "
        "tested on, by another's cross_corpus protocol)",
    )

    @property
    def label(self) -> str:
        return self.name or self.corpus

    @field_validator("corpus")
    @classmethod
    def _known_corpus(cls, value: str) -> str:
        from mmder.data.corpora import available_corpora

        allowed = available_corpora()
        if value not in allowed:
            raise ValueError(f"{value!r} is not allowed; allowed: {', '.join(allowed)}")
        return value

    @model_validator(mode="after")
    def _options_and_protocol(self, info: ValidationInfo) -> DatasetConfig:
        from mmder.data.corpora import corpus_options_model
        from mmder.data.folds import fold_names

        try:
            checked = corpus_options_model(self.corpus).model_validate(self.options)
        except ValidationError as err:
            raise _nested(err, "options") from None
        # keep what the user wrote (keys stay minimal), but in the adapter's types
        self.__dict__["options"] = checked.model_dump(include=set(self.options))
        self.__dict__["protocol"] = _absolute_dir(self.protocol, (info.context or {}).get("base_dir"))
        try:
            names = fold_names(self.protocol)
        except ValueError as err:
            raise _LocatedError(("protocol",), str(err)) from None
        for f in self.folds or []:
            if not 0 <= f < len(names):
                raise _LocatedError(("folds",), f"fold {f} does not exist; allowed: 0..{len(names) - 1}")
        return self


def _absolute_dir(protocol: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """A protocol's ``dir`` (split files) relative to the experiment file, made absolute once: the
    cells carry it to workers that run elsewhere. Not part of any key (the files' digest is)."""
    value = protocol.get("dir")
    if not isinstance(value, str) or not value:
        return protocol
    path = Path(value).expanduser()
    return {**protocol, "dir": str(path if path.is_absolute() else (base_dir or Path.cwd()) / path)}


class GridConfig(Strict):
    """The axes every dataset is crossed with."""

    settings: list[str] = Field(
        default_factory=lambda: [name for name, s in SETTINGS.items() if s.paper],
        min_length=1,
        description=f"input settings: {', '.join(SETTINGS)}, or a classical baseline in the same folds "
        f"({', '.join(BASELINES)})",
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="seeds of every cell")

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, value: list[str]) -> list[str]:
        for s in value:
            if s not in SETTINGS and s not in BASELINES:
                allowed = [*SETTINGS, *BASELINES]
                raise ValueError(f"{s!r} is not allowed; allowed: {', '.join(allowed)}")
        if len(set(value)) != len(value):
            raise ValueError("a setting is listed twice")
        return value


class PretrainSection(PretrainConfig):
    """``mmder pretrain``: one MAE pre-training per input setting on every clip of every dataset."""

    settings: list[str] | None = Field(
        None, description="input settings to pre-train for; the grid's when left out"
    )

    def recipe(self) -> PretrainConfig:
        """The pre-training recipe proper, as the worker reads it."""
        return PretrainConfig.model_validate(self.model_dump(exclude={"settings"}))


class ResourcesConfig(Strict):
    """What each cell asks of the cluster; none of it changes a result but ``num_workers`` (world size)."""

    num_workers: int = Field(1, ge=1, description="DeepSpeed workers (GPUs) per cell: the world size")
    use_gpu: bool = operational(False, "one GPU per worker")
    cpus_per_worker: float = operational(1.0, "CPUs per worker (also its torch threads)", ge=0.0)
    max_concurrent_trials: int = operational(1, "cells running at once", ge=1)
    max_failures: int = operational(2, "worker-group restarts per cell (-1: unlimited)", ge=-1)
    memory_per_worker_gb: float | None = operational(
        None,
        "memory one Train worker may use (GiB): reserved with Ray's scheduler and, where the node lets a "
        "process make a memory cgroup, enforced by the kernel, so a runaway cell is killed alone and "
        "fails saying out of memory; none when left out",
        gt=0.0,
    )
    reuse_workers: bool = operational(
        True,
        "train the cells of a sweep in lanes, max_concurrent_trials of them, each one Train job whose "
        "workers train its cells one after another (each with its own run, checkpoints, resume and "
        "max_failures), instead of starting a Train job and its processes for every cell; false: a Train "
        "job per cell. Local storage only (on s3:// every cell has its own job)",
    )
    max_cells: int | None = operational(
        None,
        "the most cells a sweep runs without --yes (default 10000): a typo in a seeds or settings list "
        "is refused before any work, naming the axis that multiplies",
        ge=1,
    )
    stall_factor: float = operational(
        4.0,
        "a cell with no finished epoch for this many times its slowest epoch so far (never less than "
        "stall_floor_s) is stalled: its workers are restarted within max_failures and it resumes from its "
        "checkpoint; past the budget it fails as stalled. 0: never judged",
        ge=0.0,
    )
    stall_floor_s: float = operational(600.0, "the least a cell may go without progress (seconds)", gt=0.0)
    stall_first_epoch_s: float = operational(
        7200.0,
        "how long a (re)started cell may take to finish its first epoch, data and model included (seconds)",
        gt=0.0,
    )
    keep_checkpoints: Literal["last", "none"] = operational(
        "last",
        "what a finished cell keeps of its epoch checkpoints: last (its newest, to inspect or continue "
        "by hand) or none (the disk back at once; `mmder clean --checkpoints` does it later)",
    )


class TrackingConfig(Strict):
    experiment: str | None = operational(None, "MLflow experiment name; the experiment's name when left out")
    uri: str | None = operational(
        None, "MLflow tracking URI; $MLFLOW_TRACKING_URI, else sqlite:///<output>/mlflow.db"
    )

    @field_validator("uri")
    @classmethod
    def _tracking_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        scheme = parsed.scheme.lower()
        if scheme == "postgres":
            raise ValueError(f"{value!r}: write postgresql:// (SQLAlchemy does not know postgres://)")
        if scheme not in TRACKING_SCHEMES:
            raise ValueError(
                f"{value!r} has scheme {scheme or 'none'!r}; allowed: {', '.join(TRACKING_SCHEMES)}"
            )
        if scheme == "sqlite" and not value.startswith("sqlite:///"):
            raise ValueError(f"{value!r}: a SQLite store is sqlite:///ABSOLUTE/PATH/mlflow.db")
        if scheme != "sqlite" and scheme != "databricks" and not parsed.hostname:
            raise ValueError(f"{value!r} names no host; e.g. http://mlflow:5000")
        return value


class RayConfig(Strict):
    address: str | None = operational(
        None, "None: a local Ray started in-process; `auto` or ray://host:10001 for a cluster"
    )
    storage_path: str | None = operational(
        None,
        "where Train runs keep checkpoints: <output>/ray when left out; a shared path or s3:// on a cluster",
    )


class ExperimentConfig(Strict):
    """One experiment file: datasets x grid, and how each cell preprocesses, trains and is tracked."""

    name: str = Field(description="letters, digits, '_', '.' or '-'; names the output folder")
    description: str = operational("", "a sentence for the MLflow parent run")
    datasets: list[DatasetConfig] = Field(min_length=1, description="the corpora of the grid")
    grid: GridConfig = Field(default_factory=GridConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    search: SearchConfig | None = Field(
        None, description="a per-setting hyper-parameter search on validation speakers (none when left out)"
    )
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _overrides: list[str] = PrivateAttr(default_factory=list)  # --set KEY=VALUE, as given

    @property
    def overrides(self) -> list[str]:
        """The ``--set`` overrides applied over the file (already validated and part of every key)."""
        return list(self._overrides)

    @property
    def base_dir(self) -> Path:
        """The experiment file's folder: relative roots and checkpoints are resolved against it."""
        return self._base_dir

    @property
    def mlflow_experiment(self) -> str:
        return self.tracking.experiment or self.name

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} must be letters, digits, '_', '.' or '-'")
        return value

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        """``training.preset``: fill the unset training and model fields, lr scaled to the global batch."""
        training = data.get("training") if isinstance(data, dict) else None
        if not isinstance(training, dict) or training.get("preset") is None:
            return data
        from mmder.presets import TRAINING_PRESETS, expand_model_preset, expand_training_preset

        if training["preset"] not in TRAINING_PRESETS:
            return data  # TrainingConfig names the allowed presets
        resources = data.get("resources")
        workers = resources.get("num_workers", 1) if isinstance(resources, dict) else 1
        world = workers if isinstance(workers, int) and workers >= 1 else 1
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        return {
            **data,
            "training": expand_training_preset(training, world_size=world),
            "model": expand_model_preset(model, training["preset"]),
        }

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        _check_datasets(self)
        _check_protocols(self)
        _check_model(self)
        if self.search is not None:
            _check_search(self)
        if self.model.pretrained == "mae":
            missing = sorted(set(self.deep_settings) - set(self.pretrain_settings))
            if missing:
                raise _error(
                    ("pretrain", "settings"), f"model.pretrained: mae needs a pre-training for {missing}"
                )
        if not self.resources.use_gpu:
            for section in ("training", "pretrain"):
                if getattr(self, section).precision == "fp16":
                    raise _error(
                        (section, "precision"),
                        "fp16 needs resources.use_gpu: true; allowed on CPU: auto, fp32, bf16",
                    )
        return self

    @property
    def deep_settings(self) -> list[str]:
        """The grid's settings that train the encoder (not the classical baselines)."""
        from mmder.registry import BASELINES

        return [s for s in self.grid.settings if s not in BASELINES]

    @property
    def pretrain_settings(self) -> list[str]:
        return self.pretrain.settings or self.deep_settings

    def resolved_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()


def _check_datasets(spec: ExperimentConfig) -> None:
    from mmder.data.corpora import corpus_modalities

    labels = [d.label for d in spec.datasets]
    for i, ds in enumerate(spec.datasets):
        if labels.count(ds.label) > 1:
            raise _error(
                ("datasets", i, "name"), f"dataset name {ds.label!r} is used twice; give each a name"
            )
        if ds.corpus != "synthetic" and not ds.root:
            raise _error(("datasets", i, "root"), f"is required for corpus {ds.corpus!r}")
        fed = corpus_modalities(ds.corpus, ds.options)
        for setting in spec.grid.settings:
            inputs = SETTINGS.get(setting)
            modalities = inputs.modalities if inputs else ("audio",)  # the baselines read the audio
            needs = {"video" if m == "visual" else m for m in modalities}
            if not needs <= fed:
                raise _error(
                    ("grid", "settings"),
                    f"{setting!r} needs {' and '.join(sorted(needs))}, but dataset {ds.label!r} "
                    f"({ds.corpus}, options {ds.options}) has only {', '.join(sorted(fed))}",
                )


def _check_protocols(spec: ExperimentConfig) -> None:
    """What a protocol needs of the rest of the file: a cross_corpus test dataset that is another
    dataset of it (and what that protocol does not run yet); split files' validation lists or
    ``training.validation_speakers``, not both."""
    from mmder.data.folds import split_files_have_validation

    labels = [d.label for d in spec.datasets]
    for i, ds in enumerate(spec.datasets):
        kind = ds.protocol.get("kind")
        if kind == "split_files" and spec.training.validation_speakers:
            if split_files_have_validation(ds.protocol):
                raise _error(
                    ("training", "validation_speakers"),
                    f"dataset {ds.label!r}'s split files hold validation lists, which choose the epoch; "
                    "leave validation_speakers out (or remove the valid lists)",
                )
        if kind != "cross_corpus":
            continue
        test = ds.protocol["test"]
        if test == ds.label or test not in labels:
            others = [label for label in labels if label != ds.label]
            raise _error(
                ("datasets", i, "protocol", "test"),
                f"{test!r} is not another dataset of this experiment; allowed: {', '.join(others) or 'none'} "
                "(list the test corpus under datasets, with folds: [] to give it no cells of its own)",
            )
        unsupported = [
            (("grid", "settings"), "a classical baseline setting", set(spec.grid.settings) & set(BASELINES)),
            (("search",), "a search: block", spec.search is not None),
            (("model", "pretrained"), "model.pretrained: mae", spec.model.pretrained == "mae"),
        ]
        for loc, what, present in unsupported:
            if present:
                raise _error(
                    loc, f"{what} does not run with dataset {ds.label!r}'s cross_corpus protocol yet"
                )


def _check_model(spec: ExperimentConfig) -> None:
    from mmder.registry import MODEL_SIZES, parse_recipe

    size, patch = spec.preprocess.image_size, spec.model.patch_size
    if size % patch:
        lower, upper = size // patch * patch, (size // patch + 1) * patch
        allowed = f"{lower} or {upper}" if lower else str(upper)
        raise _error(
            ("preprocess", "image_size"),
            f"{size} is not a multiple of the patch size {patch}; try {allowed}",
        )
    if 16 % spec.model.tubelet_size:
        raise _error(
            ("model", "tubelet_size"),
            f"{spec.model.tubelet_size} does not divide the clip's 16 frames; allowed: 1, 2, 4, 8, 16",
        )
    depth = MODEL_SIZES[spec.model.size].depth
    trained = parse_recipe(spec.training.recipe).trained_blocks
    if trained is not None and trained > depth:
        raise _error(
            ("training", "recipe"),
            f"{spec.training.recipe!r} trains more blocks than model size {spec.model.size!r} has ({depth}); "
            f"allowed: partial:1 .. partial:{depth}",
        )


def _check_search(spec: ExperimentConfig) -> None:
    """Every value a trial may draw must give valid sections (e.g. an lr below min_lr would not)."""
    assert spec.search is not None
    for name, param in spec.search.space.items():
        section, field = name.split(".", 1)
        base = getattr(spec, section)
        for value in param.values():
            try:
                type(base).model_validate({**base.model_dump(), field: value})
            except ValidationError as err:
                message = _message(err.errors()[0])
                raise _error(
                    ("search", "space", name), f"the value {value!r} is not valid here: {message}"
                ) from None


class _LocatedError(ValueError):
    """A cross-field error that knows its dotted location (pydantic would put it at the model's root)."""

    def __init__(self, loc: tuple, message: str) -> None:
        self.loc = loc
        super().__init__(message)


def _error(loc: tuple, message: str) -> _LocatedError:
    return _LocatedError(loc, message)


def _nested(err: ValidationError, prefix: str) -> _LocatedError:
    first = err.errors()[0]
    return _LocatedError((prefix, *first["loc"]), _message(first))


# ------------------------------------------------------------------------------------------ loading


def _message(error: dict) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    msg = msg.removeprefix("Value error, ")
    if kind in ("literal_error", "enum"):
        return msg.replace("Input should be", "not allowed; allowed:") + f" (got {error.get('input')!r})"
    if "input" in error and kind not in ("value_error", "assertion_error"):
        return f"{msg} (got {error['input']!r})"
    return msg


def experiment_schema() -> dict[str, Any]:
    """The JSON Schema of an experiment file, for editors (``# yaml-language-server: $schema=...``)."""
    schema = ExperimentConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mmder experiment"
    return schema
