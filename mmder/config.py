"""The typed sections of an experiment that the science reads: model, training, pre-training.

These pydantic models are the single source of truth for their fields, defaults and bounds: the
harness embeds them unchanged in its experiment model (``harness/experiment/config.py``), a cell
carries them to the worker as their exact JSON, and ``mmder.train.loop.fit`` /
``mmder.train.pretrain.pretrain`` read them. There
is no second set of defaults anywhere, and an unknown key is an error, never silently dropped.

Fields marked ``operational`` (see :func:`operational`) cannot change a result (how many loader
processes, the evaluation batch, activation checkpointing): they stay out of a cell's key, so changing
them re-runs nothing. Every other field is result-bearing.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Strict",
    "operational",
    "is_operational",
    "result_fields",
    "ModelConfig",
    "TrainingConfig",
    "PretrainConfig",
    "VIDEOMAE_PRETRAIN_BASE_LR",
    "resolve_precision",
]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
ZeroStage = Literal[0, 1, 2, 3]
VIDEOMAE_PRETRAIN_BASE_LR = 1.5e-4  # VideoMAE pre-training lr per 256 clips of global batch
_RECIPE = re.compile(r"finetune|linear_probe|partial:[1-9][0-9]*")


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def operational(default: Any, description: str, **bounds: Any) -> Any:
    """A field that cannot change a result: left out of cell keys (and so never forces a rerun)."""
    return Field(default, description=description, json_schema_extra={"operational": True}, **bounds)


def added(default: Any, description: str, **bounds: Any) -> Any:
    """A result-bearing field added after cells existed: in a key only when it differs from ``default``,
    so the cells of every experiment that does not use it keep their keys (and their finished runs)."""
    return Field(default, description=description, json_schema_extra={"omit_default": True}, **bounds)


def _omit_default(model: type[BaseModel], name: str, value: Any) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return (
        isinstance(extra, dict)
        and bool(extra.get("omit_default"))
        and value == model.model_fields[name].default
    )


def is_operational(model: type[BaseModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("operational"))


def result_fields(section: BaseModel) -> dict[str, Any]:
    """The section's result-bearing values (JSON-able, nested sections included): what a key hashes."""
    out: dict[str, Any] = {}
    for name in type(section).model_fields:
        if is_operational(type(section), name):
            continue
        value = getattr(section, name)
        if _omit_default(type(section), name, value):
            continue
        out[name] = result_fields(value) if isinstance(value, BaseModel) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def resolve_precision(precision: str, use_gpu: bool | None = None) -> str:
    """``auto`` -> bf16 on a GPU, fp32 on a CPU; anything else as given."""
    if precision != "auto":
        return precision
    if use_gpu is None:
        import torch  # here, not at the top: planning and `mmder status` must not pay for torch

        use_gpu = torch.cuda.is_available()
    gpu = use_gpu
    return "bf16" if gpu else "fp32"


class ModelConfig(Strict):
    """The encoder and its classification head."""

    size: str = Field("base", description="encoder size: micro, tiny, mini, small, base, large or huge")
    pretrained: str | None = Field(
        None,
        description="checkpoint to start from (official VideoMAE, HuggingFace or ours; relative to the "
        "experiment file), or `mae`: each cell starts from `mmder pretrain`'s encoder of its setting",
    )
    drop_path: float = Field(0.0, ge=0.0, le=1.0, description="stochastic depth rate of the last block")
    head_dropout: float = Field(0.0, ge=0.0, le=1.0, description="dropout before the classification head")
    patch_size: int = added(
        16,
        "side in pixels of a token's patch (VideoMAE: 16); the image size must be a multiple of it. A "
        "patch as large as the image makes every token one whole spectrogram window pair",
        ge=1,
    )
    tubelet_size: int = added(2, "frames per token (VideoMAE: 2); must divide 16", ge=1)
    grad_checkpointing: bool = operational(
        False, "recompute each block's activations in the backward pass: less memory, ~30 % slower"
    )

    @field_validator("size")
    @classmethod
    def _known_size(cls, value: str) -> str:
        from mmder.registry import MODEL_SIZES

        if value not in MODEL_SIZES:
            raise ValueError(f"{value!r} is not allowed; allowed: {', '.join(MODEL_SIZES)}")
        return value


class TrainingConfig(Strict):
    """How a cell trains (fine-tuning, partial fine-tuning or a linear probe) and evaluates.

    The recipe fields' defaults (``finetune``, no mixup/cutmix) train plainly. ``linear_probe`` keeps a
    constant lr (it ignores ``warmup_epochs``/``min_lr``) and has no augmentation, which is what makes its
    features cacheable.
    """

    epochs: int = Field(10, ge=1, description="training epochs")
    batch_size: int = Field(16, ge=1, description="clips per worker and step")
    eval_batch_size: int = operational(32, "clips per worker and step when evaluating", ge=1)
    lr: float = Field(5e-4, ge=0.0, description="peak learning rate (of the head's group)")
    min_lr: float = Field(1e-6, ge=0.0, description="lr at the end of the cosine decay")
    weight_decay: float = Field(0.05, ge=0.0, description="AdamW weight decay (none on biases and norms)")
    warmup_epochs: float = Field(1.0, ge=0.0, description="linear warm-up length in epochs")
    label_smoothing: float = Field(0.0, ge=0.0, le=1.0, description="label smoothing of the loss")
    grad_clip: float | None = Field(1.0, ge=0.0, description="gradient norm clip; null for none")
    recipe: str = Field(
        "finetune",
        description="finetune (everything trains), linear_probe (frozen encoder, LayerNorm + Linear, "
        "the authors' code) or partial:K (the last K blocks train too)",
    )
    layer_decay: float = Field(1.0, gt=0.0, le=1.0, description="layer-wise lr decay (VideoMAE: 0.75)")
    mixup: float = Field(0.0, ge=0.0, description="Beta alpha of mixup; 0 = off (VideoMAE: 0.8)")
    cutmix: float = Field(0.0, ge=0.0, description="Beta alpha of cutmix; 0 = off (VideoMAE: 1.0)")
    mixup_prob: float = Field(1.0, ge=0.0, le=1.0, description="chance that a batch is mixed at all")
    mixup_switch_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="chance of cutmix rather than mixup when both are on"
    )
    zero_stage: ZeroStage = Field(2, description="DeepSpeed ZeRO stage")
    precision: Precision = Field("auto", description="auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16")
    spec_freq_mask: float = added(
        0.0,
        "SpecAugment: largest share of the image height (frequency) one mask hides; 0 = off",
        ge=0.0,
        le=1.0,
    )
    spec_time_mask: float = added(
        0.0,
        "SpecAugment: largest share of one window's width (time) one mask hides, drawn per window; 0 = off",
        ge=0.0,
        le=1.0,
    )
    spec_masks: int = added(2, "SpecAugment: masks of each kind per clip", ge=1)
    time_shift: int = added(
        0, "largest shift of the sequence of windows, in windows (edges repeated); 0 = off", ge=0
    )
    gain: float = added(
        0.0,
        "largest offset added to a clip's normalised pixels (a loudness change on log images); 0 = off",
        ge=0.0,
    )
    freq_warp: float = added(
        0.0,
        "vocal tract length perturbation: largest relative stretch of the frequency axis per clip; 0 = off",
        ge=0.0,
        lt=1.0,
    )
    tta_shifts: int = added(
        0,
        "evaluation averages the class probabilities of the clip shifted by -k..k windows (edges "
        "repeated, like time_shift in training): 2k+1 passes per clip; 0 = one pass",
        ge=0,
    )
    validation_speakers: int = added(
        0,
        "speakers of the training fold held out (speaker-disjoint) to pick the epoch whose test metrics "
        "are reported; 0 = off: train on all of them and report the last epoch",
        ge=0,
    )
    preset: str | None = operational(
        None,
        "named recipe whose values fill the fields not set (mmder.presets.TRAINING_PRESETS): "
        "authors-probe, videomae-finetune, small-from-scratch, small-mae-finetune; its expanded values "
        "are what keys hash",
    )
    data_workers: int = operational(0, "DataLoader worker processes (0: read in the training process)", ge=0)
    cache_features: bool = operational(
        True, "linear_probe: run the frozen encoder once per clip, not every epoch (bit-identical)"
    )

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, value: str) -> str:
        if not _RECIPE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not allowed; allowed: finetune, linear_probe, partial:K "
                "(K = the number of last blocks to train, at least 1)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            from mmder.presets import expand_training_preset

            return expand_training_preset(data)
        return data

    @property
    def augments_spectrograms(self) -> bool:
        return bool(
            self.spec_freq_mask or self.spec_time_mask or self.time_shift or self.gain or self.freq_warp
        )

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if self.recipe == "linear_probe" and (self.mixup or self.cutmix):
            raise ValueError("mixup/cutmix: linear_probe has no augmentation (its features are cached)")
        if self.recipe == "linear_probe" and self.augments_spectrograms:
            raise ValueError(
                "spec_freq_mask/spec_time_mask/time_shift/gain: linear_probe has no augmentation "
                "(its features are cached)"
            )
        if self.recipe == "linear_probe" and self.tta_shifts:
            raise ValueError("tta_shifts: linear_probe evaluates cached features, not clips it could shift")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self

    def resolved_precision(self) -> str:
        return resolve_precision(self.precision)


class PretrainConfig(Strict):
    """VideoMAE's masked-autoencoder pre-training: AdamW betas 0.9/0.95, warm-up + cosine, tube masking.

    VideoMAE itself pre-trains 800 epochs with 40 of warm-up; the defaults here suit a small corpus.
    """

    epochs: int = Field(20, ge=1, description="pre-training epochs (VideoMAE: 800)")
    batch_size: int = Field(8, ge=1, description="clips per worker and step")
    lr: float | None = Field(
        None, ge=0.0, description="peak lr; null: VideoMAE's 1.5e-4 x global batch / 256"
    )
    min_lr: float = Field(1e-5, ge=0.0, description="lr at the end of the cosine decay")
    weight_decay: float = Field(0.05, ge=0.0, description="AdamW weight decay")
    warmup_epochs: float = Field(2.0, ge=0.0, description="linear warm-up length in epochs (VideoMAE: 40)")
    mask_ratio: float = Field(0.9, ge=0.0, le=0.99, description="share of tubes masked")
    masking: Literal["tube", "random"] = added(
        "tube",
        "tube (VideoMAE: one spatial mask repeated over time) or random (each tubelet on its own, MAE; "
        "suits spectrogram clips, whose frames are successive time windows)",
    )
    grad_clip: float | None = Field(None, ge=0.0, description="gradient norm clip; VideoMAE uses none")
    freq_warp: float = added(
        0.0,
        "vocal tract length perturbation of the clips the MAE reconstructs (as training.freq_warp): "
        "largest relative stretch of the frequency axis per clip; 0 = off",
        ge=0.0,
        lt=1.0,
    )
    time_shift: int = added(
        0, "largest shift of a pre-training clip's windows (as training.time_shift); 0 = off", ge=0
    )
    zero_stage: ZeroStage = Field(2, description="DeepSpeed ZeRO stage (0-2: stage 3 cannot export)")
    precision: Precision = Field("auto", description="auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16")
    data_workers: int = operational(0, "DataLoader worker processes", ge=0)

    @model_validator(mode="after")
    def _exportable(self) -> PretrainConfig:
        if self.zero_stage == 3:
            raise ValueError(
                "zero_stage: 3 shards the weights, and the encoder export needs them whole; allowed: 0, 1, 2"
            )
        return self

    def peak_lr(self, world_size: int) -> float:
        """``lr`` if set, else the linear scaling rule on the global batch."""
        if self.lr is not None:
            return self.lr
        return VIDEOMAE_PRETRAIN_BASE_LR * self.batch_size * world_size / 256

    def resolved_precision(self) -> str:
        return resolve_precision(self.precision)
