"""What a cell's MLflow run is tagged with and the params it carries, from the worker's side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.plan.cells import Cell, CellJob
from harness.tracking.tags import (
    PARAM_CELL_KEY,
    PARAM_FOLD_NAME,
    PROB_PREFIX,
    TAG_DATA_DIGEST,
    TAG_DATASET,
    TAG_DEVICE,
    TAG_DEVICE_COUNT,
    TAG_DEVICE_KIND,
    TAG_FOLD,
    TAG_PRECISION,
    TAG_SEED,
    TAG_SETTING,
    TAG_TEST_SPEAKERS,
    TAG_WORLD_SIZE,
)


def grid_tags(cell: Cell) -> dict[str, str]:
    """Where the run sits in the grid, under plain names so the UI's columns read well."""
    return {TAG_DATASET: cell.dataset, TAG_SETTING: cell.setting, TAG_FOLD: cell.fold_name}


def cell_tags(cell: Cell, device_kind: str, job: CellJob) -> dict[str, str]:
    """What every cell run is tagged with: where it sits in the grid, its devices, its provenance."""
    return {
        **grid_tags(cell),
        TAG_SEED: str(cell.seed),
        TAG_DEVICE_KIND: device_kind,
        TAG_DEVICE_COUNT: str(cell.world_size),
        **job.tags,
    }


def run_tags(job: CellJob, precision: str, test_speakers: list[str]) -> dict[str, str]:
    """Provenance only a worker knows: the device it resolved, precision, world size, test speakers."""
    import ray.train

    tags = {
        TAG_DEVICE: device_kind(job),
        TAG_PRECISION: precision,
        TAG_WORLD_SIZE: str(ray.train.get_context().get_world_size()),
    }
    if test_speakers:
        tags[TAG_TEST_SPEAKERS] = ",".join(test_speakers)[:5000]
    return tags


def device_kind(job: CellJob) -> str:
    import torch

    if job.resources.use_gpu and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


def log_cell_dataset(
    tracker: Any, run_id: str, job: CellJob, cache: Any, fold: Any, test_cache: Any = None
) -> None:
    """The clips the cell saw (its split marked) as an MLflow dataset input named by the data digest;
    a cross-corpus cell's test clips (rows of ``test_cache``) follow its training corpus's."""
    import pandas as pd

    test = set(int(i) for i in fold.test_idx)
    val = set(int(i) for i in fold.val_idx) if fold.val_idx is not None else set()

    def split(i: int) -> str:
        if fold.test_source is None and i in test:
            return "test"
        return "validation" if i in val else "train"

    rows = [
        {"clip_id": c.clip_id, "label": c.label, "speaker": c.speaker, "split": split(i)}
        for i, c in enumerate(cache.clips)
    ]
    if fold.test_source is not None:
        rows += [
            {
                "clip_id": c.clip_id,
                "label": c.label,
                "speaker": c.speaker,
                "split": "test",
                "corpus": fold.test_source,
            }
            for i, c in enumerate(test_cache.clips)
            if i in test
        ]
    frame = pd.DataFrame(rows)
    cell = job.cell
    source = job.dataset_roots.get(cell.dataset, job.cache_paths[cell.dataset])
    tracker.log_dataset(run_id, frame, cell.dataset, job.tags[TAG_DATA_DIGEST], source)


def flat_params(cell: Cell) -> dict[str, Any]:
    """The cell's sections as flat MLflow params (``training.lr``, ``datasets.0.options.classes``, ...)."""
    flat: dict[str, Any] = {PARAM_CELL_KEY: cell.key, PARAM_FOLD_NAME: cell.fold_name}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            flat[prefix] = value

    walk("", cell.model_dump(mode="json", exclude={"key", "fold_name"}))
    return flat


def predictions_rows(
    cache: Any,
    rows: list[tuple[int, int, int]],
    test_cache: Any = None,
    probabilities: Sequence[Sequence[float]] | None = None,
) -> list[dict[str, Any]]:
    """``(clip index, true, predicted)`` triples as the rows of a run's ``predictions.csv``: clip, speaker
    (the unit a speaker-level statistic resamples), labels and, where the model gives them, one
    ``prob_<class>`` column per class (its probability, to 7 significant digits: float32's). The clip
    index is a row of ``test_cache`` (a cross-corpus cell's test corpus), the classes ``cache``'s."""
    clips, classes = (test_cache or cache).clips, list(cache.classes)
    if probabilities is not None and len(probabilities) != len(rows):
        raise ValueError(f"{len(probabilities)} probability rows for {len(rows)} predictions")
    out = []
    for n, (i, t, p) in enumerate(rows):
        row = {
            "clip_id": clips[i].clip_id,
            "speaker": clips[i].speaker,
            "true": classes[t],
            "predicted": classes[p],
        }
        if probabilities is not None:
            row.update(
                {
                    f"{PROB_PREFIX}{c}": float(f"{v:.7g}")
                    for c, v in zip(classes, probabilities[n], strict=True)
                }
            )
        out.append(row)
    return out
