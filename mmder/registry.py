"""The registries an experiment file is validated against, by name, importable without torch.

Planning a sweep, ``mmder validate`` and ``mmder status`` must answer in a second or two, so they cannot
import torch (seconds on its own). The facts they need live here: the model sizes, the classical
baselines (their pipeline is in :mod:`mmder.eval.baseline`) and what a recipe name implies. The input
settings are declared with their functions in :mod:`mmder.fusion` (importable without torch too), the
corpora with their adapters in :mod:`mmder.data.corpora`. Each fact has one home.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MODEL_SIZES",
    "ModelSize",
    "BASELINES",
    "BASELINE_VERSION",
    "Baseline",
    "RECIPES",
    "Recipe",
    "parse_recipe",
]


@dataclass(frozen=True, kw_only=True)
class ModelSize:
    """Width/depth of an encoder and of the MAE decoder that goes with it."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int


MODEL_SIZES: dict[str, ModelSize] = {
    # unit tests only: a forward pass costs microseconds.
    "micro": ModelSize(embed_dim=32, depth=2, num_heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=2),
    # CPU quickstart: 16x64x64 clips train in seconds per epoch on one core.
    "tiny": ModelSize(embed_dim=96, depth=4, num_heads=4, decoder_dim=48, decoder_depth=2, decoder_heads=2),
    # between tiny (0.45 M parameters) and small (21 M): 2.7 M, for CPU ablations that want more width.
    "mini": ModelSize(embed_dim=192, depth=6, num_heads=3, decoder_dim=96, decoder_depth=2, decoder_heads=3),
    # the VideoMAE family (decoders as in the official pre-training configs).
    "small": ModelSize(
        embed_dim=384, depth=12, num_heads=6, decoder_dim=192, decoder_depth=4, decoder_heads=3
    ),
    "base": ModelSize(
        embed_dim=768, depth=12, num_heads=12, decoder_dim=384, decoder_depth=4, decoder_heads=6
    ),
    "large": ModelSize(
        embed_dim=1024, depth=24, num_heads=16, decoder_dim=512, decoder_depth=4, decoder_heads=8
    ),
    "huge": ModelSize(
        embed_dim=1280, depth=32, num_heads=16, decoder_dim=640, decoder_depth=4, decoder_heads=8
    ),
}


@dataclass(frozen=True)
class Baseline:
    """A classical pipeline that runs as a grid setting (``grid.settings: [audio, audio-egemaps-svm]``)."""

    feature_set: str
    kernel: str
    C: float = 1.0  # noqa: N815 - the SVM's conventional name


BASELINE_VERSION = 1  # bump when what a baseline cell computes changes (part of its key)

# eGeMAPS (88 features) with an RBF kernel; ComParE 2016 (6373 features) with a linear one, as the
# ComParE challenges' own baselines use it.
BASELINES: dict[str, Baseline] = {
    "audio-egemaps-svm": Baseline("egemaps", "rbf"),
    "audio-compare-svm": Baseline("compare", "linear"),
}


RECIPES = ("finetune", "linear_probe", "partial:K")


@dataclass(frozen=True)
class Recipe:
    """What a recipe name implies for the trainer."""

    name: str
    mode: str  # mmder.train.optim.trainable_parameters mode
    frozen_encoder: bool  # encoder never trains: features can be computed once
    constant_lr: bool  # no warm-up / cosine
    augment: bool  # mixup / cutmix allowed
    trained_blocks: int | None  # blocks that train: K for partial:K, 0 for linear_probe, None: all


def parse_recipe(name: str) -> Recipe:
    """``finetune``, ``linear_probe`` or ``partial:K`` (K >= 0; the trainer checks K <= depth)."""
    if name == "finetune":
        return Recipe(name, "finetune", False, False, True, None)
    if name == "linear_probe":
        return Recipe(name, "linear_probe", True, True, False, 0)
    if name.startswith("partial:"):
        try:
            k = int(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad recipe {name!r}: expected partial:K with an integer K") from None
        if k < 0:
            raise ValueError(f"bad recipe {name!r}: K must be >= 0")
        return Recipe(name, name, False, False, True, k)
    raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
