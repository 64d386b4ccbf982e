"""Named training presets and the lr scaling rule, importable without torch.

``training.preset`` is expanded while an experiment file is validated, and ``mmder validate`` prints
how the lr came about: both must answer without importing torch (:mod:`mmder.registry`'s promise).
The recipes' torch parts (the probe's head and cached features) are in :mod:`mmder.train.recipes`.
"""

from __future__ import annotations

import copy
from typing import Any

from mmder.registry import parse_recipe

__all__ = [
    "PRESETS",
    "TRAINING_PRESETS",
    "expand_model_preset",
    "expand_training_preset",
    "lr_rule",
    "preset",
    "scaled_lr",
]


def scaled_lr(base_lr: float, total_batch: int) -> float:
    """VideoMAE's linear scaling rule: the configured lr is per 256 clips of global batch."""
    return base_lr * total_batch / 256


# The MultiMAE-DER paper's training set-up (Xiang et al., ICPRS 2024, arXiv:2404.18327) and the
# authors' code. "training" maps onto TrainConfig fields, "model" onto build_model options.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "linear_probe": {  # the authors' code: AdamW 1e-2, wd 0.05, 100 epochs, batch 16, constant lr
        "training": {
            "recipe": "linear_probe",
            "epochs": 100,
            "batch_size": 16,
            "lr": 1e-2,
            "weight_decay": 0.05,
            "warmup_epochs": 0.0,
            "layer_decay": 1.0,
            "label_smoothing": 0.0,
            "mixup": 0.0,
            "cutmix": 0.0,
            "grad_clip": None,
        },
        "model": {"drop_path": 0.0, "head_dropout": 0.0},
    },
    "finetune": {  # VideoMAE on small data (UCF101); lr is per 256 clips, see scaled_lr
        "training": {
            "recipe": "finetune",
            "epochs": 100,
            "lr": 5e-4,
            "min_lr": 1e-6,
            "weight_decay": 0.05,
            "warmup_epochs": 5.0,
            "layer_decay": 0.7,
            "label_smoothing": 0.1,
            "mixup": 0.8,
            "cutmix": 1.0,
            "mixup_prob": 1.0,
            "mixup_switch_prob": 0.5,
        },
        "model": {"drop_path": 0.2, "head_dropout": 0.5},
    },
}


def preset(name: str, *, total_batch: int | None = None) -> dict[str, dict[str, Any]]:
    """A copy of ``PRESETS[name]`` (``partial:K`` gets finetune's), finetune lr scaled to ``total_batch``."""
    recipe = parse_recipe(name)
    out = copy.deepcopy(PRESETS["linear_probe" if recipe.frozen_encoder else "finetune"])
    out["training"]["recipe"] = name
    if total_batch is not None and not recipe.frozen_encoder:
        out["training"]["lr"] = scaled_lr(out["training"]["lr"], total_batch)
    return out


# the CPU recipe of docs/ablation-ravdess-audio.md, shared by the two small presets
_SMALL_TRAINING: dict[str, Any] = {
    "recipe": "finetune",
    "epochs": 80,
    "batch_size": 16,
    "min_lr": 1e-5,
    "weight_decay": 0.05,
    "warmup_epochs": 3.0,
    "layer_decay": 1.0,
    "label_smoothing": 0.1,
    "mixup": 0.8,
    "cutmix": 0.0,
    "spec_freq_mask": 0.15,
    "spec_time_mask": 0.2,
    "spec_masks": 2,
    "time_shift": 2,
    "freq_warp": 0.12,
}


# Named recipes for ``training.preset`` (the paper's set-up, arXiv:2404.18327, and the CPU recipe of
# docs/ablation-ravdess-audio.md). ``training`` fills the TrainingConfig fields an experiment leaves
# unset; ``model`` the ModelConfig ones (filled by the experiment model, which sees both sections);
# ``base_lr`` is per 256 clips of global batch (VideoMAE's linear scaling rule,
# lr = base_lr x batch_size x workers / 256), None when ``training.lr`` is used as it is.
TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    "authors-probe": {  # the authors' code: frozen encoder, AdamW 1e-2 constant, 100 epochs, batch 16
        "doc": "the authors' code: frozen encoder, LayerNorm + Linear, AdamW lr 1e-2 (not scaled), "
        "wd 0.05, 100 epochs, batch 16, no schedule, no augmentation",
        "base_lr": None,
        "training": PRESETS["linear_probe"]["training"],
        "model": PRESETS["linear_probe"]["model"],
    },
    "videomae-finetune": {  # VideoMAE's small-data (UCF101) fine-tuning
        "doc": "VideoMAE fine-tuning on small data: base lr 5e-4 per 256 clips, layer decay 0.7, drop path "
        "0.2, head dropout 0.5, 5 warm-up epochs then cosine to 1e-6, mixup 0.8 / cutmix 1.0, label "
        "smoothing 0.1, 100 epochs",
        "base_lr": 5e-4,
        "training": {k: v for k, v in PRESETS["finetune"]["training"].items() if k != "lr"},
        "model": PRESETS["finetune"]["model"],
    },
    "small-from-scratch": {  # docs/ablation-ravdess-audio.md: a tiny ViT from scratch on a CPU
        "doc": "a tiny ViT from scratch on a few hundred spectrogram clips "
        "(docs/ablation-ravdess-audio.md): base lr 1.6e-2 per 256 clips (1e-3 at batch 16), 3 warm-up "
        "epochs then cosine to 1e-5, wd 0.05, 80 epochs, mixup 0.8, label smoothing 0.1, SpecAugment "
        "(bands of up to 15 %, spans of up to 20 %, 2 of each), window shift 2, frequency warp 12 %, "
        "drop path 0.1",
        "base_lr": 1.6e-2,
        "training": dict(_SMALL_TRAINING),
        "model": {"drop_path": 0.1, "head_dropout": 0.0},
    },
    "small-mae-finetune": {  # docs/ablation-ravdess-audio.md: the same, after `mmder pretrain`
        "doc": "small-from-scratch after MAE pre-training, with VideoMAE's layer-wise lr decay 0.75 "
        "(block k of the tiny encoder's 4 at 0.75^(5-k) of the lr, the head at 1): a pre-trained "
        "encoder's lower blocks move less (docs/ablation-ravdess-audio.md)",
        "base_lr": 1.6e-2,
        "training": {**_SMALL_TRAINING, "layer_decay": 0.75},
        "model": {"drop_path": 0.1, "head_dropout": 0.0},
    },
}


def _known_preset(name: str) -> dict[str, Any]:
    if name not in TRAINING_PRESETS:
        raise ValueError(f"preset {name!r} is not allowed; allowed: {', '.join(TRAINING_PRESETS)}")
    return TRAINING_PRESETS[name]


def expand_training_preset(data: dict[str, Any], *, world_size: int = 1) -> dict[str, Any]:
    """``data`` (a training section as a dict) with the preset's values in the fields it leaves unset.

    ``lr``, when unset and the preset has a ``base_lr``, becomes ``base_lr x batch_size x world_size
    / 256`` with the section's (or the preset's) batch size. Fields set explicitly always win.
    """
    entry = _known_preset(data["preset"])
    out = dict(data)
    for key, value in entry["training"].items():
        out.setdefault(key, copy.deepcopy(value))
    if "lr" not in out and entry["base_lr"] is not None:
        batch = int(out.get("batch_size", 16))
        out["lr"] = scaled_lr(entry["base_lr"], batch * world_size)
    return out


def expand_model_preset(model: dict[str, Any], preset_name: str) -> dict[str, Any]:
    """The model section with the preset's values (drop path, head dropout) in the fields it leaves unset."""
    out = dict(model)
    for key, value in _known_preset(preset_name)["model"].items():
        out.setdefault(key, value)
    return out


def lr_rule(training: Any, world_size: int) -> str:
    """How ``training.lr`` came about, for ``mmder validate``: the scaling rule with its numbers."""
    batch = training.batch_size * world_size
    name = getattr(training, "preset", None)
    if name is not None:
        entry = _known_preset(name)
        base = entry["base_lr"]
        if base is not None and abs(scaled_lr(base, batch) - training.lr) <= 1e-12 * max(1.0, training.lr):
            return (
                f"lr {training.lr:g} = base {base:g} x global batch {batch} / 256 "
                f"(VideoMAE linear scaling; preset {name})"
            )
        if base is None and training.lr == entry["training"].get("lr"):
            return f"lr {training.lr:g} as the preset {name} gives it (not scaled by batch)"
        return f"lr {training.lr:g} set explicitly (overrides preset {name}); global batch {batch}"
    return f"lr {training.lr:g} set explicitly, not scaled; global batch {batch} (no preset)"
