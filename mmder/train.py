"""One worker's training loop around a DeepSpeed engine.

``fit`` knows nothing of Ray or MLflow: it trains, evaluates the held-out fold every epoch, saves a
DeepSpeed checkpoint (on every rank, as ZeRO needs) and hands both to a ``report`` callback. Under Ray
Train the callback forwards them to ``ray.train.report``; without Ray (benchmarks, tests) it can copy
the checkpoint anywhere. Resuming is ``fit(..., resume_from=dir)``.

``TrainConfig.recipe`` picks what trains (see :mod:`mmder.recipes`): ``finetune`` (default, everything),
``partial:K`` (last K blocks + head) or ``linear_probe`` (frozen encoder, cached features).

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
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from mmder.augment import VideoMixup, soft_target_cross_entropy
from mmder.metrics import classification_metrics
from mmder.optim import param_groups_layer_decay, trainable_parameters
from mmder.recipes import HEAD_MODULES, FeatureSet, ProbeHead, Recipe, parse_recipe, pooled_tokens

CHECKPOINT_TAG = "state"


@dataclass
class TrainConfig:
    """What changes how a cell trains; mirrors the experiment file's ``training`` section.

    The defaults of the recipe fields (``recipe`` finetune, no mixup/cutmix) train exactly as before
    they existed. ``linear_probe`` ignores ``warmup_epochs``/``min_lr`` (its lr is constant) and
    refuses mixup/cutmix (it has no augmentation, which is what makes its features cacheable).
    """

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
    recipe: str = "finetune"  # finetune | linear_probe | partial:K
    mixup: float = 0.0  # Beta alpha of mixup; 0 = off (VideoMAE: 0.8)
    cutmix: float = 0.0  # Beta alpha of cutmix; 0 = off (VideoMAE: 1.0)
    mixup_prob: float = 1.0  # chance that a batch is mixed at all
    mixup_switch_prob: float = 0.5  # chance of cutmix rather than mixup when both are on
    cache_features: bool = True  # linear_probe: run the frozen encoder once, not every epoch

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in {**data, **overrides}.items() if k in known})


@dataclass
class EpochResult:
    """What one epoch produced; ``predictions`` holds (dataset index, true, predicted) of the test fold.

    ``lr`` is the lr at the end of the epoch of the groups at layer-decay scale 1 (the head);
    ``group_lrs`` has every optimiser group's, by group name.
    """

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
    group_lrs: dict[str, float] = field(default_factory=dict, repr=False)

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
    }
    if grad_clip:
        config["gradient_clipping"] = grad_clip
    return config


def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    return engine_config(
        batch_size=cfg.batch_size, zero_stage=cfg.zero_stage, precision=cfg.precision, grad_clip=cfg.grad_clip
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


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, no decay on biases/norms/position tables, layer-wise lr."""
    return adamw(model, lr=cfg.lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)


def build_engine(
    model: nn.Module, cfg: TrainConfig, steps_per_epoch: int, *, constant_lr: bool = False
) -> tuple[Any, Any, Any]:
    """(engine, optimizer, scheduler) as ``fit`` makes them: AdamW groups + per-step LambdaLR in DeepSpeed."""
    import deepspeed

    optimizer = build_optimizer(model, cfg)
    factor = (lambda step: 1.0) if constant_lr else _schedule(cfg, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg)
    )
    return engine, optimizer, scheduler


def _shard(dataset: Dataset, rank: int, world: int) -> Subset:
    """Every rank evaluates a disjoint slice; no padding, so no clip is counted twice."""
    return Subset(dataset, list(range(rank, len(dataset), world)))  # type: ignore[arg-type]


def _set_epoch(dataset: Dataset, epoch: int) -> None:
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


Inputs = Callable[[Tensor], Tensor]


def evaluate(
    engine: Any, test_set: Dataset, cfg: TrainConfig, num_classes: int, *, inputs: Inputs | None = None
) -> dict[str, Any]:
    """Loss, UAR, WAR and predictions over the whole test fold, gathered from all ranks.

    ``inputs`` turns a loaded batch into the engine's input (default: move and cast it).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    loader = DataLoader(
        _shard(test_set, rank, world),
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        num_workers=cfg.data_workers,
    )
    dtype = next(engine.module.parameters()).dtype
    if inputs is None:

        def inputs(x: Tensor) -> Tensor:
            return x.to(engine.device, dtype=dtype)

    engine.eval()
    loss_sum, rows = 0.0, []
    with torch.no_grad():
        for x, y, idx in loader:
            logits = engine(inputs(x)).float()
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
    recipe = parse_recipe(cfg.recipe)
    if not recipe.augment and (cfg.mixup > 0 or cfg.cutmix > 0):
        raise ValueError(f"the {recipe.name} recipe has no augmentation: set mixup and cutmix to 0")
    ensure_process_group()
    _silence_deepspeed_cpu_build()
    torch.manual_seed(cfg.seed)
    if recipe.frozen_encoder:
        return _fit_linear_probe(
            model, train_set, test_set, num_classes, cfg, report=report, resume_from=resume_from
        )
    rank, world = dist.get_rank(), dist.get_world_size()
    trainable_parameters(model, recipe.mode)

    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.data_workers, drop_last=False
    )
    engine, optimizer, _ = build_engine(model, cfg, max(1, len(loader)))
    start_epoch, resumed_from = resume_engine(engine, resume_from)
    dtype = next(engine.module.parameters()).dtype

    def inputs(x: Tensor) -> Tensor:
        return x.to(engine.device, dtype=dtype)

    return _run_epochs(
        engine,
        optimizer,
        loader,
        sampler,
        train_set,
        test_set,
        num_classes,
        cfg,
        start_epoch=start_epoch,
        resumed_from=resumed_from,
        report=report,
        inputs=inputs,
        eval_inputs=inputs,
        mixer=_mixer(cfg, num_classes),
        frozen_modules=_frozen_modules(model, recipe),
    )


def resume_engine(engine: Any, resume_from: str | None) -> tuple[int, int | None]:
    """(first epoch to train, epoch the checkpoint holds) after loading ``resume_from`` if given.

    The checkpoint is one that this module (or :mod:`mmder.pretrain`) saved: tag ``CHECKPOINT_TAG``
    and the finished epoch in its client state.
    """
    if not resume_from:
        return 0, None
    _, client_state = engine.load_checkpoint(resume_from, tag=CHECKPOINT_TAG)
    if client_state is None:
        raise RuntimeError(f"no DeepSpeed checkpoint with tag {CHECKPOINT_TAG!r} in {resume_from}")
    resumed_from = int(client_state["epoch"])
    return resumed_from + 1, resumed_from


def _mixer(cfg: TrainConfig, num_classes: int) -> VideoMixup | None:
    mixer = VideoMixup(
        num_classes,
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        label_smoothing=cfg.label_smoothing,
    )
    return mixer if mixer.active else None


def _frozen_modules(model: nn.Module, recipe: Recipe) -> list[nn.Module]:
    """Modules kept in eval mode while training: the frozen blocks of ``partial:K`` (no drop path there)."""
    if recipe.trained_blocks is None:
        return []
    blocks = list(model.blocks)
    return [model.patch_embed, *blocks[: len(blocks) - recipe.trained_blocks]]


def _run_epochs(
    engine: Any,
    optimizer: Any,
    loader: DataLoader,
    sampler: DistributedSampler,
    train_set: Dataset,
    test_set: Dataset,
    num_classes: int,
    cfg: TrainConfig,
    *,
    start_epoch: int,
    resumed_from: int | None,
    report: Reporter,
    inputs: Inputs,
    eval_inputs: Inputs,
    mixer: VideoMixup | None = None,
    frozen_modules: Sequence[nn.Module] = (),
) -> EpochResult:
    """The epoch loop shared by all recipes: train, evaluate, checkpoint, report."""
    rank = dist.get_rank()
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    result: EpochResult | None = None
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        engine.train()
        for m in frozen_modules:
            m.eval()
        sampler.set_epoch(epoch)
        _set_epoch(train_set, epoch)
        if mixer is not None:
            mixer.reseed(_stream_seed(cfg.seed, rank, epoch))
        loss_sum, seen = 0.0, 0
        for x, y, _ in loader:
            x = inputs(x)
            y = y.to(x.device)
            if mixer is not None:
                x, target = mixer(x, y)
                loss = soft_target_cross_entropy(engine(x), target)
            else:
                logits = engine(x)
                loss = criterion(logits.float(), y.to(logits.device))
            engine.backward(loss)
            engine.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
        train_loss = _mean_across_ranks(loss_sum, seen)
        _set_epoch(test_set, epoch)
        ev = evaluate(engine, test_set, cfg, num_classes, inputs=eval_inputs)
        result = _epoch_result(
            ev, optimizer, cfg, epoch=epoch, train_loss=train_loss, seconds=time.perf_counter() - t0
        )
        result.resumed_from_epoch = resumed_from
        checkpoint_dir = tempfile.mkdtemp(prefix="mmder-ckpt-")
        try:
            engine.save_checkpoint(checkpoint_dir, tag=CHECKPOINT_TAG, client_state={"epoch": epoch})
            report(result, checkpoint_dir)
        finally:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    if result is None:
        # The checkpoint already holds the last epoch (the run was cut off after saving it): only the
        # final evaluation is missing, so redo that rather than train again.
        ev = evaluate(engine, test_set, cfg, num_classes, inputs=eval_inputs)
        result = _epoch_result(ev, optimizer, cfg, epoch=cfg.epochs - 1, train_loss=float("nan"), seconds=0.0)
        result.resumed_from_epoch = resumed_from
        report(result, None)
    return result


def _epoch_result(
    ev: dict[str, Any], optimizer: Any, cfg: TrainConfig, *, epoch: int, train_loss: float, seconds: float
) -> EpochResult:
    groups = optimizer.param_groups
    return EpochResult(
        epoch=epoch,
        epochs=cfg.epochs,
        train_loss=train_loss,
        test_loss=ev["test_loss"],
        uar=ev["uar"],
        war=ev["war"],
        lr=max(g["lr"] for g in groups),
        seconds=seconds,
        confusion=ev["confusion"],
        predictions=ev["predictions"],
        group_lrs={str(g.get("group_name", i)): float(g["lr"]) for i, g in enumerate(groups)},
    )


def _stream_seed(seed: int, rank: int, epoch: int) -> list[int]:
    """Seed of a per-(run, rank, epoch) random stream: a resumed run replays the epochs it redoes."""
    return [seed, rank, epoch]


# ------------------------------------------------------------------------------------------- linear probe


def _fit_linear_probe(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    num_classes: int,
    cfg: TrainConfig,
    *,
    report: Reporter,
    resume_from: str | None,
) -> EpochResult:
    """Frozen encoder, constant-lr AdamW on ``fc_norm`` + ``head`` (see the module docstring)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    trainable_parameters(model, "linear_probe")
    model.eval()  # the encoder stays in eval mode; engine.train() only flips the head's modules
    head = ProbeHead(model)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
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
        test_features = _extract(model, test_set, cfg, engine.device, dtype, epoch=start_epoch)
        if start_epoch < cfg.epochs:
            train_features = _extract(model, train_set, cfg, engine.device, dtype, epoch=start_epoch)
        else:
            train_features = FeatureSet(torch.empty(0, 0), torch.empty(0), torch.empty(0))
        train_set, test_set, inputs, eval_inputs, workers = train_features, test_features, to_head, to_head, 0
    else:
        inputs, eval_inputs, workers = encode, encode, cfg.data_workers
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers)
    return _run_epochs(
        engine,
        optimizer,
        loader,
        sampler,
        train_set,
        test_set,
        num_classes,
        replace(cfg, data_workers=0) if cache else cfg,
        start_epoch=start_epoch,
        resumed_from=resumed_from,
        report=report,
        inputs=inputs,
        eval_inputs=eval_inputs,
    )


def _redraws(dataset: Dataset) -> bool:
    """A dataset that changes its items per epoch (RFAS redraws) cannot be cached."""
    return bool(getattr(dataset, "redraw_each_epoch", False))


def _extract(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
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
        _set_epoch(dataset, epoch)
        loader = DataLoader(
            _shard(dataset, rank, world),
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
        positions = list(range(r, n, world))  # the rows _shard gave rank r
        features[positions], all_labels[positions], all_indices[positions] = f, y, i
    return FeatureSet(features, all_labels, all_indices)


def _schedule(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    return warmup_cosine(
        epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        steps_per_epoch=steps_per_epoch,
    )


def collective_device() -> torch.device:
    """Where a small tensor must live for a collective: NCCL takes CUDA tensors only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _mean_across_ranks(total: float, count: int) -> float:
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return float(t[0] / max(1.0, float(t[1])))
