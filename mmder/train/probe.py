"""The linear probe's fast path: a frozen encoder run once per clip, the head trained on cached features.

Linear probe in a distributed run: every rank runs the frozen encoder (eval mode, no grad) once over
its disjoint slice of the train and test folds, and the mean-pooled tokens (taken before ``fc_norm``,
which trains) are all-gathered, so every rank holds the features of the whole fold in dataset order
(N x D floats, a few MB). The head (``fc_norm`` + ``head`` of the caller's model, shared, not copied)
then trains in a DeepSpeed engine of its own over those features, with the same DistributedSampler,
loss and evaluation as the full model: an epoch sees the same batches in the same order as running
the encoder every epoch would (``cache_features=False`` does that, and the tests compare the two).
Checkpoints hold the head and its optimiser only; resuming re-runs the frozen encoder once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mmder.config import TrainingConfig
from mmder.train.engine import build_engine, resume_engine, set_epoch, shard
from mmder.train.optim import trainable_parameters
from mmder.train.recipes import HEAD_MODULES, FeatureSet, ProbeHead, pooled_tokens


@dataclass
class ProbeInputs:
    """What the shared epoch loop needs from the probe: its engine, data and input functions."""

    engine: Any
    optimizer: Any
    loader: DataLoader
    sampler: DistributedSampler
    train_set: Dataset
    test_set: Dataset
    inputs: Any
    eval_inputs: Any
    data_workers: int
    start_epoch: int
    resumed_from: int | None


def prepare_probe(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    cfg: TrainingConfig,
    *,
    seed: int,
    resume_from: str | None,
) -> ProbeInputs:
    """Frozen encoder, constant-lr AdamW on ``fc_norm`` + ``head``: the engine and (cached) inputs."""
    rank, world = dist.get_rank(), dist.get_world_size()
    trainable_parameters(model, "linear_probe")
    model.eval()  # the encoder stays in eval mode; engine.train() only flips the head's modules
    head = ProbeHead(model)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    steps_per_epoch = max(1, math.ceil(len(sampler) / cfg.batch_size))
    engine, optimizer, _ = build_engine(head, cfg, steps_per_epoch, constant_lr=True)
    dtype = next(engine.module.parameters()).dtype
    for name, child in model.named_children():  # DeepSpeed moved and cast the head; do the same here
        if name not in HEAD_MODULES:
            child.to(device=engine.device, dtype=dtype)
    start_epoch, resumed_from = resume_engine(engine, resume_from)

    def encode(x: Tensor) -> Tensor:
        # float32 in between, exactly as the cache stores it, so both paths feed the head the same values
        return pooled_tokens(model, x.to(engine.device, dtype=dtype)).float().to(dtype)

    def to_head(x: Tensor) -> Tensor:
        return x.to(engine.device, dtype=dtype)

    cache = cfg.cache_features and not _redraws(train_set) and not _redraws(test_set)
    if cache:
        test_features = extract_features(model, test_set, cfg, engine.device, dtype, epoch=start_epoch)
        if start_epoch < cfg.epochs:
            train_features = extract_features(model, train_set, cfg, engine.device, dtype, epoch=start_epoch)
        else:
            train_features = FeatureSet(torch.empty(0, 0), torch.empty(0), torch.empty(0))
        train_set, test_set, inputs, eval_inputs, workers = train_features, test_features, to_head, to_head, 0
    else:
        inputs, eval_inputs, workers = encode, encode, cfg.data_workers
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers)
    return ProbeInputs(
        engine=engine,
        optimizer=optimizer,
        loader=loader,
        sampler=sampler,
        train_set=train_set,
        test_set=test_set,
        inputs=inputs,
        eval_inputs=eval_inputs,
        data_workers=workers,
        start_epoch=start_epoch,
        resumed_from=resumed_from,
    )


def _redraws(dataset: Dataset) -> bool:
    """A dataset that changes its items per epoch (RFAS redraws) cannot be cached."""
    return bool(getattr(dataset, "redraw_each_epoch", False))


def extract_features(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainingConfig,
    device: torch.device,
    dtype: torch.dtype,
    *,
    epoch: int,
) -> FeatureSet:
    """Pooled tokens of every clip of ``dataset``: each rank encodes its slice, then all ranks gather all.

    Runs under a forked RNG so that caching draws nothing from the global generator (the head's dropout
    then sees the same random stream as without caching).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    with torch.random.fork_rng(devices=[]):
        set_epoch(dataset, epoch)
        loader = DataLoader(
            shard(dataset, rank, world),
            batch_size=cfg.eval_batch_size,
            shuffle=False,
            num_workers=cfg.data_workers,
        )
        feats, labels, indices = [], [], []
        for x, y, idx in loader:
            feats.append(pooled_tokens(model, x.to(device, dtype=dtype)).float().cpu())
            labels.append(torch.as_tensor(y))
            indices.append(torch.as_tensor(idx))
    dim = int(model.embed_dim)
    local = (
        torch.cat(feats) if feats else torch.empty(0, dim),
        torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
        torch.cat(indices) if indices else torch.empty(0, dtype=torch.long),
    )
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, local)
    n = len(dataset)  # type: ignore[arg-type]
    features = torch.empty(n, dim)
    all_labels = torch.empty(n, dtype=torch.long)
    all_indices = torch.empty(n, dtype=torch.long)
    for r, (f, y, i) in enumerate(gathered):
        positions = list(range(r, n, world))  # the rows shard gave rank r
        features[positions], all_labels[positions], all_indices[positions] = f, y, i
    return FeatureSet(features, all_labels, all_indices)
