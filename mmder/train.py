"""One worker's training loop around a DeepSpeed engine.

``fit`` knows nothing of Ray or MLflow: it trains, evaluates the held-out fold every epoch, saves a
DeepSpeed checkpoint (on every rank, as ZeRO needs) and hands both to a ``report`` callback. Under Ray
Train the callback forwards them to ``ray.train.report``; without Ray (benchmarks, tests) it can copy
the checkpoint anywhere. Resuming is ``fit(..., resume_from=dir)``.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from mmder.metrics import classification_metrics
from mmder.optim import param_groups_layer_decay

CHECKPOINT_TAG = "state"


@dataclass
class TrainConfig:
    """What changes how a cell trains; mirrors the experiment file's ``training`` section."""

    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 32
    lr: float = 5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    grad_clip: float | None = 1.0
    zero_stage: int = 2
    precision: str = "fp32"  # fp32 | bf16 | fp16
    data_workers: int = 0
    layer_decay: float = 1.0
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in {**data, **overrides}.items() if k in known})


@dataclass
class EpochResult:
    """What one epoch produced; ``predictions`` holds (dataset index, true, predicted) of the test fold."""

    epoch: int
    epochs: int
    train_loss: float
    test_loss: float
    uar: float
    war: float
    lr: float
    seconds: float
    confusion: list[list[int]]
    predictions: list[tuple[int, int, int]] = field(repr=False)
    resumed_from_epoch: int | None = None

    @property
    def is_last(self) -> bool:
        return self.epoch >= self.epochs - 1

    def scalars(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k in _SCALARS}


_SCALARS = ("train_loss", "test_loss", "uar", "war", "lr", "seconds")

Reporter = Callable[[EpochResult, str | None], None]


def ensure_process_group(backend: str | None = None) -> None:
    """A one-process group when nobody (Ray Train, torchrun) made one: DeepSpeed insists on a group."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)


def _silence_deepspeed_cpu_build() -> None:
    """Skip compiling the shared-memory comm op on CPU: it serves only inference all-reduce (~40 s)."""
    import deepspeed.ops

    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": cfg.zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16"},
    }
    if cfg.grad_clip:
        config["gradient_clipping"] = cfg.grad_clip
    return config


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio`` of the peak (VideoMAE's schedule, per step)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, no decay on biases/norms/position tables, layer-wise lr."""
    groups = param_groups_layer_decay(model, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    for g in groups:  # frozen parameters are already left out of the groups
        g["lr"] = cfg.lr * g["lr_scale"]
    fused = torch.cuda.is_available()
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=fused)


def _shard(dataset: Dataset, rank: int, world: int) -> Subset:
    """Every rank evaluates a disjoint slice; no padding, so no clip is counted twice."""
    return Subset(dataset, list(range(rank, len(dataset), world)))  # type: ignore[arg-type]


def _set_epoch(dataset: Dataset, epoch: int) -> None:
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def evaluate(engine: Any, test_set: Dataset, cfg: TrainConfig, num_classes: int) -> dict[str, Any]:
    """Loss, UAR, WAR and predictions over the whole test fold, gathered from all ranks."""
    rank, world = dist.get_rank(), dist.get_world_size()
    loader = DataLoader(
        _shard(test_set, rank, world),
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        num_workers=cfg.data_workers,
    )
    dtype = next(engine.module.parameters()).dtype
    engine.eval()
    loss_sum, rows = 0.0, []
    with torch.no_grad():
        for x, y, idx in loader:
            logits = engine(x.to(engine.device, dtype=dtype)).float()
            y = y.to(logits.device)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            pred = logits.argmax(dim=1)
            rows += list(zip(idx.tolist(), y.tolist(), pred.tolist(), strict=True))
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (loss_sum, rows))
    total_loss = sum(g[0] for g in gathered)
    predictions = sorted(r for g in gathered for r in g[1])
    y_true = [r[1] for r in predictions]
    y_pred = [r[2] for r in predictions]
    metrics = classification_metrics(y_true, y_pred, num_classes)
    return {"test_loss": total_loss / max(1, len(predictions)), "predictions": predictions, **metrics}


def fit(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    num_classes: int,
    cfg: TrainConfig,
    *,
    report: Reporter,
    resume_from: str | None = None,
) -> EpochResult:
    """Train ``cfg.epochs`` epochs (or the rest of them, when resuming) and return the last epoch's result."""
    import deepspeed

    ensure_process_group()
    _silence_deepspeed_cpu_build()
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(cfg.seed)

    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.data_workers, drop_last=False
    )
    steps_per_epoch = max(1, len(loader))
    optimizer = build_optimizer(model, cfg)
    factor = _schedule(cfg, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg)
    )

    start_epoch, resumed_from = 0, None
    if resume_from:
        _, client_state = engine.load_checkpoint(resume_from, tag=CHECKPOINT_TAG)
        if client_state is None:
            raise RuntimeError(f"no DeepSpeed checkpoint with tag {CHECKPOINT_TAG!r} in {resume_from}")
        resumed_from = int(client_state["epoch"])
        start_epoch = resumed_from + 1

    dtype = next(engine.module.parameters()).dtype
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    result: EpochResult | None = None
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        engine.train()
        sampler.set_epoch(epoch)
        _set_epoch(train_set, epoch)
        loss_sum, seen = 0.0, 0
        for x, y, _ in loader:
            logits = engine(x.to(engine.device, dtype=dtype))
            loss = criterion(logits.float(), y.to(logits.device))
            engine.backward(loss)
            engine.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
        train_loss = _mean_across_ranks(loss_sum, seen)
        _set_epoch(test_set, epoch)
        ev = evaluate(engine, test_set, cfg, num_classes)
        result = EpochResult(
            epoch=epoch,
            epochs=cfg.epochs,
            train_loss=train_loss,
            test_loss=ev["test_loss"],
            uar=ev["uar"],
            war=ev["war"],
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - t0,
            confusion=ev["confusion"],
            predictions=ev["predictions"],
            resumed_from_epoch=resumed_from,
        )
        checkpoint_dir = tempfile.mkdtemp(prefix="mmder-ckpt-")
        try:
            engine.save_checkpoint(checkpoint_dir, tag=CHECKPOINT_TAG, client_state={"epoch": epoch})
            report(result, checkpoint_dir)
        finally:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    if result is None:
        # The checkpoint already holds the last epoch (the run was cut off after saving it): only the
        # final evaluation is missing, so redo that rather than train again.
        ev = evaluate(engine, test_set, cfg, num_classes)
        result = EpochResult(
            epoch=cfg.epochs - 1,
            epochs=cfg.epochs,
            train_loss=float("nan"),
            test_loss=ev["test_loss"],
            uar=ev["uar"],
            war=ev["war"],
            lr=optimizer.param_groups[0]["lr"],
            seconds=0.0,
            confusion=ev["confusion"],
            predictions=ev["predictions"],
            resumed_from_epoch=resumed_from,
        )
        report(result, None)
    return result


def _schedule(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    min_ratio = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0

    def factor(step: int) -> float:
        return lr_factor(step, total_steps=total, warmup_steps=warmup, min_ratio=min_ratio)

    return factor


def _mean_across_ranks(total: float, count: int) -> float:
    t = torch.tensor([total, float(count)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0] / max(1.0, float(t[1])))
