"""A tiny two-class clip dataset for training-loop tests, shared by test_train and test_recipes."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class Blobs(Dataset):
    """Two classes told apart by brightness: learnable in a couple of epochs by any model."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 3, 4, 16, 16, generator=g) * 0.3 + (self.y.float() * 2 - 1).view(
            -1, 1, 1, 1, 1
        )

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), i
