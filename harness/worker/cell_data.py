"""One cell's datasets and fresh model, from its typed :class:`~harness.plan.cells.Cell` and a prepared cache.

Kept free of Ray and MLflow so that a cell can be built where neither is installed: the Train worker,
the search's trials and ``mmder bench fit`` (one cell through ``mmder.train.loop.fit`` on a GPU machine)
all build it here, the same way.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import torch

from harness.plan.cells import Cell


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """A short hash of named tensors, to show that a cell starts from exactly the weights exported."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tested_cache_path(cell: Cell, cache_paths: dict[str, str]) -> str | None:
    """The cache a cross-corpus cell tests on (its second dataset's); None for every other cell."""
    return cache_paths[cell.datasets[1].label] if len(cell.datasets) > 1 else None


@functools.lru_cache(maxsize=4)
def opened_cache(path: str) -> Any:
    """The prepared cache at ``path``, opened (and self-checked) once per worker process: a lane's cells
    read the same read-only cache one after another."""
    from mmder.data.cache import ClipCache

    return ClipCache.open(path)


def build_cell(
    cell: Cell, cache_path: str, pretrained_path: str | None = None, test_cache_path: str | None = None
) -> dict[str, Any]:
    """Datasets of the cell's fold and a fresh model, as plain objects (also used by tests).

    A cross-corpus cell (two datasets) tests on the clips of ``test_cache_path``, its second
    dataset's cache, their labels read through the protocol's map onto the training classes.
    """
    from mmder.data.dataset import FusedClipDataset
    from mmder.data.folds import cross_corpus_targets, make_folds, validation_split
    from mmder.models.classifier import build_model

    cache = opened_cache(cache_path)
    test_cache = opened_cache(test_cache_path) if test_cache_path else cache
    norm = cell.preprocess.speaker_norm
    protocol = cell.dataset_config.protocol
    folds = make_folds(
        protocol,
        cache.speakers,
        [c.group for c in cache.clips],
        clips=cache.clips,
        test_clips=test_cache.clips if test_cache_path else None,
    )
    fold = folds[cell.fold]
    train_idx, val_set = fold.train_idx, None
    if fold.val_idx is not None:  # the split files' validation list: the epoch is chosen on it
        val_set = FusedClipDataset(cache, fold.val_idx, cell.setting, seed=cell.seed, speaker_norm=norm)
    elif cell.training is not None and cell.training.validation_speakers:
        # speaker-disjoint validation rows inside the training fold: the epoch is chosen on them
        train_idx, val_idx = validation_split(
            cache.speakers, fold.train_idx, cell.training.validation_speakers, seed=cell.seed
        )
        val_set = FusedClipDataset(cache, val_idx, cell.setting, seed=cell.seed, speaker_norm=norm)
    train_set = FusedClipDataset(cache, train_idx, cell.setting, seed=cell.seed, speaker_norm=norm)
    targets = cross_corpus_targets(protocol, cache.classes, test_cache.classes) if fold.test_source else None
    test_set = FusedClipDataset(
        test_cache, fold.test_idx, cell.setting, seed=cell.seed, speaker_norm=norm, targets=targets
    )
    torch.manual_seed(cell.seed)
    model = build_model(
        cell.model.size,
        num_classes=len(cache.classes),
        image_size=cell.preprocess.image_size,
        num_frames=16,
        drop_path_rate=cell.model.drop_path,
        head_dropout=cell.model.head_dropout,
        patch_size=cell.model.patch_size,
        tubelet_size=cell.model.tubelet_size,
    )
    if cell.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    digest = None
    if pretrained_path:
        from mmder.models.checkpoints import load_pretrained

        report = load_pretrained(model, pretrained_path)
        print(f"[{cell.key}] {report.summary()}", flush=True)
        state = model.state_dict()
        digest = tensor_digest({k: state[k] for k in report.loaded})
    return {
        "cache": cache,
        "test_cache": test_cache,
        "fold": fold,
        "train": train_set,
        "test": test_set,
        "val": val_set,
        "model": model,
        "pretrained_digest": digest,
    }


def fit_cell(cell: Cell, parts: dict[str, Any], report: Any, resume_from: str | None = None) -> Any:
    """``mmder.train.loop.fit`` on what :func:`build_cell` made: the Train worker and ``bench fit``
    train a cell the same way (test set, class count, validation rows, seed)."""
    from mmder.train.loop import fit

    assert cell.training is not None, "a train cell carries its training section"
    return fit(
        parts["model"],
        parts["train"],
        parts["test"],
        len(parts["cache"].classes),
        cell.training,
        report=report,
        resume_from=resume_from,
        seed=cell.seed,
        val_set=parts["val"],
    )
