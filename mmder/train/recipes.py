"""The training recipes ``TrainConfig.recipe`` names and the linear probe's pieces (presets:
:mod:`mmder.presets`).

* ``finetune``: every parameter trains (VideoMAE's small-data fine-tuning: layer-wise lr decay, drop
  path, head dropout, mixup/cutmix, label smoothing, warm-up then cosine).
* ``partial:K``: as ``finetune``, but only the last K blocks + ``fc_norm`` + ``head`` train; the frozen
  blocks run in eval mode (no drop path on weights that never change).
* ``linear_probe``: the authors' code. The encoder is frozen and in eval mode; ``fc_norm`` + ``head``
  train with a constant lr and no augmentation. Since the encoder is a fixed function then, the
  trainer runs it once per clip and trains :class:`ProbeHead` on the cached mean-pooled tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mmder.registry import RECIPES, Recipe, parse_recipe

__all__ = ["HEAD_MODULES", "RECIPES", "FeatureSet", "ProbeHead", "Recipe", "parse_recipe", "pooled_tokens"]

# Children of VideoMAEClassifier that the linear probe trains (head_drop has no weights).
HEAD_MODULES = ("fc_norm", "head_drop", "head")


class ProbeHead(nn.Module):
    """``fc_norm`` -> head dropout -> ``head`` of a classifier, sharing (not copying) its modules.

    Trained on cached pooled tokens, it updates the caller's model in place, and its state dict uses the
    classifier's names (``fc_norm.*``, ``head.*``). ``depth`` gives these the layer id of the classifier's
    head, so layer-wise lr decay leaves them at scale 1.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.depth = int(model.depth)
        self.fc_norm = model.fc_norm
        self.head_drop = model.head_drop
        self.head = model.head

    def forward(self, pooled: Tensor) -> Tensor:
        return self.head(self.head_drop(self.fc_norm(pooled)))


def pooled_tokens(model: nn.Module, x: Tensor) -> Tensor:
    """Mean-pooled last-block tokens (B, D) BEFORE ``fc_norm`` (which the probe trains), without grad."""
    with torch.no_grad():
        return model.forward_tokens(x).mean(1)


class FeatureSet(Dataset):
    """Cached features standing in for a clip dataset: item i is (feature, label, index) of clip i."""

    def __init__(self, features: Tensor, labels: Tensor, indices: Tensor) -> None:
        if not len(features) == len(labels) == len(indices):
            raise ValueError("features, labels and indices must have the same length")
        self.features, self.labels, self.indices = features, labels, indices

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        return self.features[i], int(self.labels[i]), int(self.indices[i])
