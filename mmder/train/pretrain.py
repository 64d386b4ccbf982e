"""VideoMAE self-supervised pre-training (tube masking, masked-pixel MSE) around a DeepSpeed engine.

The same contract as :func:`mmder.train.loop.fit`, so the harness can drive it the same way: every epoch,
on every rank, a DeepSpeed checkpoint is saved and handed with a :class:`PretrainResult` to
``report(result, checkpoint_dir)``; ``resume_from`` continues after the epoch a checkpoint holds.
No labels are used (items are ``(clip, label, index)`` like :class:`mmder.data.dataset.FusedClipDataset`
yields, and the label is ignored). :func:`export_encoder` writes the encoder in the classifier's layout,
which :func:`mmder.models.checkpoints.load_pretrained` reads, to fine-tune or linear-probe it afterwards.

Masks come from a generator seeded per (seed, rank, epoch), so a resumed run redoes an epoch with the
masks it would have drawn.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mmder.config import PretrainConfig
from mmder.models.mae import VideoMAEPretrainer
from mmder.train.augment import SpecAugment
from mmder.train.engine import (
    adamw,
    engine_config,
    ensure_process_group,
    epoch_checkpoint,
    mean_across_ranks,
    resume_engine,
    set_epoch,
    silence_deepspeed_cpu_build,
    warmup_cosine,
)

__all__ = ["PretrainConfig", "PretrainResult", "export_encoder", "pretrain"]


@dataclass
class PretrainResult:
    """One epoch: mean masked-token reconstruction loss over all ranks, and the lr at its end."""

    epoch: int
    epochs: int
    loss: float
    lr: float
    seconds: float
    resumed_from_epoch: int | None = None

    @property
    def is_last(self) -> bool:
        return self.epoch >= self.epochs - 1

    def scalars(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k in ("loss", "lr", "seconds")}


PretrainReporter = Callable[[PretrainResult, str | None], None]


def _mask_seed(seed: int, rank: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) * 65_537 + rank


def pretrain(
    model: VideoMAEPretrainer,
    train_set: Dataset,
    cfg: PretrainConfig,
    *,
    report: PretrainReporter,
    resume_from: str | None = None,
    seed: int = 0,
) -> PretrainResult:
    """Pre-train ``cfg.epochs`` epochs (or the rest, when resuming); returns the last epoch's result."""
    ensure_process_group()
    silence_deepspeed_cpu_build()
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed)

    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.data_workers, drop_last=False
    )
    engine, optimizer = _pretrain_engine(model, cfg, world=world, steps_per_epoch=max(1, len(loader)))
    start_epoch, resumed_from = resume_engine(engine, resume_from)
    # 8 training speakers' clips, seen hundreds of times: perturbed speakers give the MAE more to learn
    augment = SpecAugment(time_shift=cfg.time_shift, freq_warp=cfg.freq_warp)

    result: PretrainResult | None = None
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        engine.train()
        sampler.set_epoch(epoch)
        set_epoch(train_set, epoch)
        masks = torch.Generator().manual_seed(_mask_seed(seed, rank, epoch))
        augment.reseed([seed, rank, epoch, 2])  # a resumed run replays the epochs it redoes
        loss_sum, seen = _pretrain_batches(engine, model, loader, cfg, masks, augment)
        result = PretrainResult(
            epoch=epoch,
            epochs=cfg.epochs,
            loss=mean_across_ranks(loss_sum, seen),
            lr=max(g["lr"] for g in optimizer.param_groups),
            seconds=time.perf_counter() - t0,
            resumed_from_epoch=resumed_from,
        )
        with epoch_checkpoint(engine, epoch, prefix="mmder-pretrain-") as checkpoint_dir:
            report(result, checkpoint_dir)

    if result is None:  # the checkpoint already holds the last epoch: nothing left to train
        result = PretrainResult(
            epoch=cfg.epochs - 1,
            epochs=cfg.epochs,
            loss=float("nan"),
            lr=max(g["lr"] for g in optimizer.param_groups),
            seconds=0.0,
            resumed_from_epoch=resumed_from,
        )
        report(result, None)
    return result


def _pretrain_engine(
    model: VideoMAEPretrainer, cfg: PretrainConfig, *, world: int, steps_per_epoch: int
) -> tuple[Any, Any]:
    """The DeepSpeed engine and its optimizer: VideoMAE's AdamW (betas 0.9, 0.95) at the lr scaled to
    the global batch, with a per-step warm-up cosine schedule."""
    import deepspeed

    lr = cfg.peak_lr(world)
    optimizer = adamw(model, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    factor = warmup_cosine(
        epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        lr=lr,
        min_lr=cfg.min_lr,
        steps_per_epoch=steps_per_epoch,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    config = engine_config(
        batch_size=cfg.batch_size,
        zero_stage=cfg.zero_stage,
        precision=cfg.resolved_precision(),
        grad_clip=cfg.grad_clip,
    )
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
    )
    return engine, optimizer


def _pretrain_batches(
    engine: Any,
    model: VideoMAEPretrainer,
    loader: DataLoader,
    cfg: PretrainConfig,
    masks: torch.Generator,
    augment: SpecAugment,
) -> tuple[float, int]:
    """One pass over this rank's batches, each with fresh tube masks: (sum of per-clip losses, clips)."""
    dtype = next(engine.module.parameters()).dtype
    loss_sum, seen = 0.0, 0
    for x, _, _ in loader:
        if augment.active:
            x = augment(x)
        x = x.to(engine.device, dtype=dtype)
        mask = model.make_mask(
            len(x), cfg.mask_ratio, generator=masks, device=engine.device, kind=cfg.masking
        )
        loss = engine(x, mask).float()
        engine.backward(loss)
        engine.step()
        loss_sum += float(loss.detach()) * len(x)
        seen += len(x)
    return loss_sum, seen


def export_encoder(model: VideoMAEPretrainer, path: str | os.PathLike[str]) -> Path:
    """Write ``{"model": encoder weights}`` in the classifier's naming (fp32, CPU) for ``load_pretrained``.

    Call it on one rank after :func:`pretrain` (ZeRO stages 1-2 leave full weights on every rank; stage 3
    would need them gathered first). bf16 weights widen to fp32 exactly.
    """
    state = {
        k: (v.float() if v.is_floating_point() else v).cpu() for k, v in model.encoder_state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path
