"""DeepSpeed set-up shared by fine-tuning, pre-training and the step benchmark.

The process group (one made here when neither Ray Train nor torchrun made one), the engine's config, the
optimiser (AdamW with layer-wise lr decay) and its warm-up + cosine schedule, and the one way a training
loop saves and resumes an epoch checkpoint. Kept apart from the epoch loops so that ``train.py``,
``pretrain.py`` and ``bench_step.py`` build engines the same way through public names.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from mmder.config import TrainingConfig
from mmder.train.checkpoint_files import listing, write_manifest
from mmder.train.optim import param_groups_layer_decay

CHECKPOINT_TAG = "state"


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


def silence_deepspeed_cpu_build() -> None:
    """Skip compiling the shared-memory comm op on CPU: it serves only inference all-reduce (~40 s)."""
    import deepspeed.ops

    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def engine_config(
    *, batch_size: int, zero_stage: int, precision: str, grad_clip: float | None
) -> dict[str, Any]:
    """The DeepSpeed config shared by fine-tuning and pre-training."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        # DeepSpeed's throughput timer (on by default, output never read here) synchronises the device
        # at the start of every forward and end of every step; on an H200 the one in the forward also
        # broke torch.compile's graph (docs/benchmarks.md). Our epochs time themselves.
        "timers": {"throughput": {"enabled": False}},
    }
    if grad_clip:
        config["gradient_clipping"] = grad_clip
    return config


def deepspeed_config(cfg: TrainingConfig) -> dict[str, Any]:
    return engine_config(
        batch_size=cfg.batch_size,
        zero_stage=cfg.zero_stage,
        precision=cfg.resolved_precision(),
        grad_clip=cfg.grad_clip,
    )


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio`` of the peak (VideoMAE's schedule, per step)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    *, epochs: int, warmup_epochs: float, lr: float, min_lr: float, steps_per_epoch: int
) -> Callable[[int], float]:
    """The per-step factor of :func:`lr_factor` for a run of ``epochs`` (a LambdaLR lambda)."""
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    min_ratio = min_lr / lr if lr > 0 else 0.0

    def factor(step: int) -> float:
        return lr_factor(step, total_steps=total, warmup_steps=warmup, min_ratio=min_ratio)

    return factor


def adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, no decay on biases/norms/position tables, layer-wise lr.

    Each group starts at ``lr * lr_scale``; a LambdaLR on top multiplies that by the schedule, so a
    group's lr is always ``lr * schedule(step) * layer_decay ** (depth + 1 - layer_id)``.
    """
    groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)
    for g in groups:  # frozen parameters are already left out of the groups
        g["lr"] = lr * g["lr_scale"]
    fused = torch.cuda.is_available()
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def build_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, no decay on biases/norms/position tables, layer-wise lr."""
    return adamw(model, lr=cfg.lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)


def build_engine(
    model: nn.Module, cfg: TrainingConfig, steps_per_epoch: int, *, constant_lr: bool = False
) -> tuple[Any, Any, Any]:
    """(engine, optimizer, scheduler) as ``fit`` makes them: AdamW groups + per-step LambdaLR in DeepSpeed."""
    import deepspeed

    optimizer = build_optimizer(model, cfg)
    factor = (lambda step: 1.0) if constant_lr else schedule(cfg, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg)
    )
    return engine, optimizer, scheduler


def schedule(cfg: TrainingConfig, steps_per_epoch: int) -> Callable[[int], float]:
    return warmup_cosine(
        epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        steps_per_epoch=steps_per_epoch,
    )


def resume_engine(engine: Any, resume_from: str | None) -> tuple[int, int | None]:
    """(first epoch to train, epoch the checkpoint holds) after loading ``resume_from`` if given.

    The checkpoint is one that this module (or :mod:`mmder.train.pretrain`) saved: tag ``CHECKPOINT_TAG``
    and the finished epoch in its client state.
    """
    if not resume_from:
        return 0, None
    _, client_state = engine.load_checkpoint(resume_from, tag=CHECKPOINT_TAG)
    if client_state is None:
        raise RuntimeError(f"no DeepSpeed checkpoint with tag {CHECKPOINT_TAG!r} in {resume_from}")
    resumed_from = int(client_state["epoch"])
    return resumed_from + 1, resumed_from


@contextlib.contextmanager
def epoch_checkpoint(engine: Any, epoch: int, prefix: str = "mmder-ckpt-") -> Iterator[str]:
    """Save the engine after ``epoch`` into a temporary folder (every rank: ZeRO shards), yield it, clean up.

    The caller hands the folder to its reporter (Ray Train copies every rank's folder into one
    checkpoint in the run's storage). After DeepSpeed's files, each rank writes its manifest
    (:mod:`mmder.train.checkpoint_files`), so that a copy cut off by a kill is recognised as incomplete.
    """
    checkpoint_dir = tempfile.mkdtemp(prefix=prefix)
    try:
        before = listing(checkpoint_dir)
        engine.save_checkpoint(checkpoint_dir, tag=CHECKPOINT_TAG, client_state={"epoch": epoch})
        drop_helper_scripts(checkpoint_dir)
        write_epoch_manifest(engine, checkpoint_dir, epoch, before)
        yield checkpoint_dir
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)


# DeepSpeed copies its conversion scripts into every ZeRO checkpoint (41 kB a cell and epoch);
# nothing of ours runs them, and `python -m deepspeed.utils.zero_to_fp32` is the same script.
HELPER_SCRIPTS = ("zero_to_fp32.py", "zero_to_torch.py")


def drop_helper_scripts(checkpoint_dir: str) -> None:
    """A checkpoint keeps what a resume needs: not DeepSpeed's copies of its own scripts."""
    for name in HELPER_SCRIPTS:
        (Path(checkpoint_dir) / name).unlink(missing_ok=True)


def write_epoch_manifest(engine: Any, checkpoint_dir: str, epoch: int, before: dict[str, int]) -> None:
    """This rank's manifest of what ``save_checkpoint`` wrote; warns when DeepSpeed's names changed.

    A warning rather than silence: a DeepSpeed that names its shards differently would make every
    checkpoint look incomplete, and cells would quietly start over instead of resuming.
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    _, missing = write_manifest(
        checkpoint_dir,
        rank=rank,
        world_size=world,
        epoch=epoch,
        zero_stage=int(engine.zero_optimization_stage()),
        tag=CHECKPOINT_TAG,
        bf16=bool(engine.bfloat16_enabled()),
        before=before,
    )
    if missing:
        warnings.warn(
            f"rank {rank}: DeepSpeed did not write the expected {sorted(missing)}; "
            "this checkpoint will not count as complete",
            RuntimeWarning,
            stacklevel=2,
        )


def shard(dataset: Dataset, rank: int, world: int) -> Subset:
    """Every rank evaluates a disjoint slice; no padding, so no clip is counted twice."""
    return Subset(dataset, list(range(rank, len(dataset), world)))  # type: ignore[arg-type]


def set_epoch(dataset: Dataset, epoch: int) -> None:
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def collective_device() -> torch.device:
    """Where a small tensor must live for a collective: NCCL takes CUDA tensors only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_across_ranks(total: float, count: int) -> tuple[float, float]:
    """(sum of ``total``, sum of ``count``) over all ranks."""
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return float(t[0]), float(t[1])


def mean_across_ranks(total: float, count: int) -> float:
    total, count = sum_across_ranks(total, count)
    return total / max(1.0, count)


def peak_memory_mb(device: torch.device) -> float:
    """This process's peak memory: allocated device memory on a GPU, the resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
