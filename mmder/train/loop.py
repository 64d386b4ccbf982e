"""One worker's training loop around a DeepSpeed engine.

``fit`` knows nothing of Ray or MLflow: it trains, evaluates the held-out fold every epoch, saves a
DeepSpeed checkpoint (on every rank, as ZeRO needs) and hands both to a ``report`` callback. Under Ray
Train the callback forwards them to ``ray.train.report``; without Ray (benchmarks, tests) it can copy
the checkpoint anywhere. Resuming is ``fit(..., resume_from=dir)``.

``TrainingConfig.recipe`` picks what trains (see :mod:`mmder.train.recipes`): ``finetune`` (default,
everything),
``partial:K`` (last K blocks + head) or ``linear_probe`` (frozen encoder, cached features).

The linear probe's cached-feature path is in :mod:`mmder.train.probe`; engine, optimiser, schedule and
checkpoint set-up in :mod:`mmder.train.engine`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mmder.config import TrainingConfig
from mmder.eval.metrics import classification_metrics
from mmder.timing import mark
from mmder.train.augment import SpecAugment, VideoMixup, shift_windows, soft_target_cross_entropy
from mmder.train.engine import (
    build_engine,
    ensure_process_group,
    epoch_checkpoint,
    peak_memory_mb,
    resume_engine,
    set_epoch,
    shard,
    silence_deepspeed_cpu_build,
    sum_across_ranks,
)
from mmder.train.optim import trainable_parameters
from mmder.train.probe import ProbeInputs, prepare_probe
from mmder.train.recipes import Recipe, parse_recipe


@dataclass
class EpochResult:
    """What one epoch produced; ``predictions`` holds (dataset index, true, predicted) of the test fold,
    sorted by index, and ``probabilities`` each of those clips' class probabilities (softmax of the logits).

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
    probabilities: list[list[float]] = field(default_factory=list, repr=False)
    resumed_from_epoch: int | None = None
    train_clips_per_s: float = 0.0  # clips of all ranks per second of the training half of the epoch
    peak_memory_mb: float = 0.0  # this process's peak (device memory on a GPU, resident set on a CPU)
    group_lrs: dict[str, float] = field(default_factory=dict, repr=False)
    # with a validation set (TrainingConfig.validation_speakers): this epoch's validation metrics, and
    # in the result fit returns, the epoch chosen on them (whose test metrics the fields above hold)
    val_loss: float | None = None
    val_uar: float | None = None
    val_war: float | None = None
    selected_epoch: int | None = None

    @property
    def is_last(self) -> bool:
        return self.epoch >= self.epochs - 1

    def scalars(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k in _SCALARS and v is not None}


_SCALARS = (
    "train_loss",
    "test_loss",
    "uar",
    "war",
    "lr",
    "seconds",
    "train_clips_per_s",
    "peak_memory_mb",
    "val_loss",
    "val_uar",
    "val_war",
)

Reporter = Callable[[EpochResult, str | None], None]
Inputs = Callable[[Tensor], Tensor]


def evaluate(
    engine: Any,
    test_set: Dataset,
    cfg: TrainingConfig,
    num_classes: int,
    *,
    inputs: Inputs | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Loss, UAR, WAR, predictions and class probabilities over the whole test fold, gathered from all
    ranks (each rank evaluates a disjoint shard; every clip is counted once).

    ``inputs`` turns a loaded batch into the engine's input (default: move and cast it).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    loader = DataLoader(
        shard(test_set, rank, world),
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        num_workers=cfg.data_workers if workers is None else workers,
    )
    dtype = next(engine.module.parameters()).dtype
    if inputs is None:

        def inputs(x: Tensor) -> Tensor:
            return x.to(engine.device, dtype=dtype)

    shifts = range(-cfg.tta_shifts, cfg.tta_shifts + 1)
    engine.eval()
    loss_sum, rows = 0.0, []
    with torch.no_grad():
        for x, y, idx in loader:
            if cfg.tta_shifts:  # the log of the mean probability over shifted copies of each clip
                probs = [engine(inputs(shift_windows(x, s))).float().softmax(dim=1) for s in shifts]
                logits = torch.stack(probs).mean(dim=0).clamp_min(1e-12).log()
            else:
                logits = engine(inputs(x)).float()
            y = y.to(logits.device)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            pred = logits.argmax(dim=1)
            probs = logits.softmax(dim=1).tolist()
            rows += list(zip(idx.tolist(), y.tolist(), pred.tolist(), probs, strict=True))
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (loss_sum, rows))
    total_loss = sum(g[0] for g in gathered)
    everything = sorted((r for g in gathered for r in g[1]), key=lambda r: r[0])
    predictions = [(i, t, p) for i, t, p, _ in everything]
    y_true = [r[1] for r in predictions]
    y_pred = [r[2] for r in predictions]
    metrics = classification_metrics(y_true, y_pred, num_classes)
    return {
        "test_loss": total_loss / max(1, len(predictions)),
        "predictions": predictions,
        "probabilities": [r[3] for r in everything],
        **metrics,
    }


def fit(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    num_classes: int,
    cfg: TrainingConfig,
    *,
    report: Reporter,
    resume_from: str | None = None,
    seed: int = 0,
    val_set: Dataset | None = None,
) -> EpochResult:
    """Train ``cfg.epochs`` epochs (or the rest of them, when resuming) and return the last epoch's result.

    ``seed`` (the grid's seed axis) seeds the model's randomness, the sampler and the mixing streams.
    With ``val_set`` (speakers held out of the training fold, :func:`mmder.data.folds.validation_split`)
    every epoch is also evaluated on it, and the result returned is the epoch with the best validation
    UAR (ties: WAR, then the later epoch): its test metrics, with ``selected_epoch`` set. The test fold
    never influences the choice. (A resumed run chooses among the epochs it ran after resuming.)
    """
    recipe = parse_recipe(cfg.recipe)
    ensure_process_group()
    silence_deepspeed_cpu_build()
    torch.manual_seed(seed)
    if recipe.frozen_encoder:
        p = prepare_probe(model, train_set, test_set, cfg, seed=seed, resume_from=resume_from)
        return _run_epochs(_probe_loop(p, num_classes, cfg, report=report, seed=seed, val_set=val_set))
    loop = _finetune_loop(
        model,
        recipe,
        train_set,
        test_set,
        num_classes,
        cfg,
        report=report,
        resume_from=resume_from,
        seed=seed,
        val_set=val_set,
    )
    return _run_epochs(loop)


def _probe_loop(
    p: ProbeInputs,
    num_classes: int,
    cfg: TrainingConfig,
    *,
    report: Reporter,
    seed: int,
    val_set: Dataset | None,
) -> _EpochLoop:
    """The linear probe's loop: the head trains on cached encoder features (:mod:`mmder.train.probe`)."""
    return _EpochLoop(
        engine=p.engine,
        optimizer=p.optimizer,
        loader=p.loader,
        sampler=p.sampler,
        train_set=p.train_set,
        test_set=p.test_set,
        num_classes=num_classes,
        cfg=cfg,
        seed=seed,
        start_epoch=p.start_epoch,
        resumed_from=p.resumed_from,
        report=report,
        inputs=p.inputs,
        eval_inputs=p.eval_inputs,
        eval_workers=p.data_workers,
        val_set=val_set,
    )


def _finetune_loop(
    model: nn.Module,
    recipe: Recipe,
    train_set: Dataset,
    test_set: Dataset,
    num_classes: int,
    cfg: TrainingConfig,
    *,
    report: Reporter,
    resume_from: str | None,
    seed: int,
    val_set: Dataset | None,
) -> _EpochLoop:
    """The loop of ``finetune`` and ``partial:K``: the recipe's parameters trainable, an engine over the
    clips (resumed when asked), mixing and spectrogram augmentation as the config sets them."""
    rank, world = dist.get_rank(), dist.get_world_size()
    trainable_parameters(model, recipe.mode)

    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.data_workers, drop_last=False
    )
    engine, optimizer, _ = build_engine(model, cfg, max(1, len(loader)))
    start_epoch, resumed_from = resume_engine(engine, resume_from)
    mark("engine_ready")
    dtype = next(engine.module.parameters()).dtype

    def inputs(x: Tensor) -> Tensor:
        return x.to(engine.device, dtype=dtype)

    return _EpochLoop(
        engine=engine,
        optimizer=optimizer,
        loader=loader,
        sampler=sampler,
        train_set=train_set,
        test_set=test_set,
        num_classes=num_classes,
        cfg=cfg,
        seed=seed,
        start_epoch=start_epoch,
        resumed_from=resumed_from,
        report=report,
        inputs=inputs,
        eval_inputs=inputs,
        eval_workers=cfg.data_workers,
        mixer=_mixer(cfg, num_classes),
        frozen_modules=_frozen_modules(model, recipe),
        val_set=val_set,
        spec_augment=_spec_augment(cfg),
    )


def _mixer(cfg: TrainingConfig, num_classes: int) -> VideoMixup | None:
    mixer = VideoMixup(
        num_classes,
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        label_smoothing=cfg.label_smoothing,
    )
    return mixer if mixer.active else None


def _spec_augment(cfg: TrainingConfig) -> SpecAugment | None:
    aug = SpecAugment(
        freq_mask=cfg.spec_freq_mask,
        time_mask=cfg.spec_time_mask,
        masks=cfg.spec_masks,
        time_shift=cfg.time_shift,
        gain=cfg.gain,
        freq_warp=cfg.freq_warp,
    )
    return aug if aug.active else None


def _frozen_modules(model: nn.Module, recipe: Recipe) -> list[nn.Module]:
    """Modules kept in eval mode while training: the frozen blocks of ``partial:K`` (no drop path there)."""
    if recipe.trained_blocks is None:
        return []
    blocks = list(model.blocks)
    return [model.patch_embed, *blocks[: len(blocks) - recipe.trained_blocks]]


@dataclass
class _EpochLoop:
    """Everything the epoch loop runs on, built by :func:`fit` for the recipe at hand.

    The linear probe passes its cached-feature engine, loader and input functions and no mixer, spec
    augmentation or frozen modules; fine-tuning passes all of them.
    """

    engine: Any
    optimizer: Any
    loader: DataLoader
    sampler: DistributedSampler
    train_set: Dataset
    test_set: Dataset
    num_classes: int
    cfg: TrainingConfig
    seed: int
    start_epoch: int
    resumed_from: int | None
    report: Reporter
    inputs: Inputs  # a training batch to the engine's input
    eval_inputs: Inputs  # an evaluation batch to the engine's input
    eval_workers: int
    mixer: VideoMixup | None = None
    frozen_modules: Sequence[nn.Module] = ()
    val_set: Dataset | None = None
    spec_augment: SpecAugment | None = None
    first_step_pending: bool = True  # the timeline's first_step mark is still to be set


def _run_epochs(loop: _EpochLoop) -> EpochResult:
    """The epoch loop shared by all recipes: train, evaluate, checkpoint, report."""
    best: EpochResult | None = None
    rank = dist.get_rank()
    criterion = nn.CrossEntropyLoss(label_smoothing=loop.cfg.label_smoothing)
    result: EpochResult | None = None
    for epoch in range(loop.start_epoch, loop.cfg.epochs):
        mark("epoch_start")
        t0 = time.perf_counter()
        _start_epoch(loop, epoch, rank)
        loss_total, clips = sum_across_ranks(*_train_batches(loop, criterion))
        train_seconds = time.perf_counter() - t0
        set_epoch(loop.test_set, epoch)
        ev = _evaluate(loop, loop.test_set)
        result = _epoch_result(
            ev,
            loop.optimizer,
            loop.cfg,
            epoch=epoch,
            train_loss=loss_total / max(1.0, clips),
            seconds=time.perf_counter() - t0,
        )
        result.resumed_from_epoch = loop.resumed_from
        result.train_clips_per_s = clips / train_seconds if train_seconds > 0 else 0.0
        result.peak_memory_mb = peak_memory_mb(loop.engine.device)
        if loop.val_set is not None:
            _validate(loop, loop.val_set, result, epoch)
            if best is None or (result.val_uar, result.val_war) >= (best.val_uar, best.val_war):
                best = result
        with epoch_checkpoint(loop.engine, epoch) as checkpoint_dir:
            loop.report(result, checkpoint_dir)
        mark("epoch_end")

    if result is None:
        result = _evaluate_only(loop)
    return _selected(result, best, loop.cfg.epochs)


def _start_epoch(loop: _EpochLoop, epoch: int, rank: int) -> None:
    """Train mode (frozen blocks stay in eval) and every per-epoch stream set to this epoch.

    The sampler, the dataset and the mixing streams are seeded per (seed, rank, epoch), so a resumed run
    replays the epochs it redoes.
    """
    loop.engine.train()
    for m in loop.frozen_modules:
        m.eval()
    loop.sampler.set_epoch(epoch)
    set_epoch(loop.train_set, epoch)
    if loop.mixer is not None:
        loop.mixer.reseed(_stream_seed(loop.seed, rank, epoch))
    if loop.spec_augment is not None:
        loop.spec_augment.reseed([*_stream_seed(loop.seed, rank, epoch), 1])


def _train_batches(loop: _EpochLoop, criterion: nn.Module) -> tuple[float, int]:
    """One pass over this rank's training batches: (sum of per-clip losses, clips seen)."""
    loss_sum, seen = 0.0, 0
    for x, y, _ in loop.loader:
        x = loop.inputs(x)
        y = y.to(x.device)
        if loop.spec_augment is not None:
            x = loop.spec_augment(x)
        if loop.mixer is not None:
            x, target = loop.mixer(x, y)
            loss = soft_target_cross_entropy(loop.engine(x), target)
        else:
            logits = loop.engine(x)
            loss = criterion(logits.float(), y.to(logits.device))
        loop.engine.backward(loss)
        loop.engine.step()
        if loop.first_step_pending:
            mark("first_step")
            loop.first_step_pending = False
        loss_sum += float(loss.detach()) * len(y)
        seen += len(y)
    return loss_sum, seen


def _evaluate(loop: _EpochLoop, dataset: Dataset) -> dict[str, Any]:
    """:func:`evaluate` with the loop's engine, input function and workers."""
    return evaluate(
        loop.engine, dataset, loop.cfg, loop.num_classes, inputs=loop.eval_inputs, workers=loop.eval_workers
    )


def _validate(loop: _EpochLoop, val_set: Dataset, result: EpochResult, epoch: int) -> None:
    """This epoch's validation loss, UAR and WAR into ``result``: fit chooses its epoch on them."""
    set_epoch(val_set, epoch)
    vev = _evaluate(loop, val_set)
    result.val_loss, result.val_uar, result.val_war = vev["test_loss"], vev["uar"], vev["war"]


def _evaluate_only(loop: _EpochLoop) -> EpochResult:
    """The last epoch's result when no epoch was left to train, reported without a checkpoint.

    The checkpoint already holds the last epoch (the run was cut off after saving it): only the final
    evaluation is missing, so redo that rather than train again.
    """
    cfg = loop.cfg
    ev = _evaluate(loop, loop.test_set)
    result = _epoch_result(
        ev, loop.optimizer, cfg, epoch=cfg.epochs - 1, train_loss=float("nan"), seconds=0.0
    )
    result.resumed_from_epoch = loop.resumed_from
    loop.report(result, None)
    return result


def _selected(result: EpochResult, best: EpochResult | None, epochs: int) -> EpochResult:
    """What fit returns: the last epoch, or with a validation set the epoch chosen on it, marked so."""
    if best is not None and best is not result:
        return replace(best, selected_epoch=best.epoch, epochs=epochs)
    if best is not None:
        result.selected_epoch = result.epoch
    return result


def _epoch_result(
    ev: dict[str, Any], optimizer: Any, cfg: TrainingConfig, *, epoch: int, train_loss: float, seconds: float
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
        probabilities=ev["probabilities"],
        group_lrs={str(g.get("group_name", i)): float(g["lr"]) for i, g in enumerate(groups)},
    )


def _stream_seed(seed: int, rank: int, epoch: int) -> list[int]:
    """Seed of a per-(run, rank, epoch) random stream: a resumed run replays the epochs it redoes."""
    return [seed, rank, epoch]
