"""A torch Dataset that reads cached clips and fuses them into the encoder's 16-frame input.

Fusion happens here, per item, rather than in the cache, so one cache serves all eight settings
(and RFAS can redraw its order per epoch if asked). The output is what a VideoMAE encoder reads:
``(C, T, H, W)`` float32, normalised with the authors' mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmder import fusion
from mmder.data.cache import ClipCache

__all__ = ["FusedClipDataset", "IMAGENET_MEAN", "AUTHORS_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
AUTHORS_STD = (0.225, 0.225, 0.225)  # the authors' code uses 0.225 on every channel


class FusedClipDataset(Dataset):
    """Items ``(x, label_index, cache_index)`` of the cache rows ``indices`` under fusion ``setting``.

    ``x`` is ``(C, T, H, W)`` float32: uint8 images -> [0, 1] -> :func:`mmder.fusion.fuse` ->
    ``(x - mean) / std`` -> channels first. 16-step settings read ``video16``/``audio16``, 8-step
    ones ``video8``/``audio8``; only the modalities the setting uses are read. Call
    :meth:`set_epoch` each epoch (it only matters for settings that depend on the epoch).
    """

    def __init__(
        self,
        cache: ClipCache,
        indices: Sequence[int] | np.ndarray,
        setting: str,
        *,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = AUTHORS_STD,
        redraw_each_epoch: bool = False,
    ) -> None:
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(cache)):
            lo, hi = self.indices.min(), self.indices.max()
            raise IndexError(f"indices must lie in [0, {len(cache)}), got {lo}..{hi}")
        self.setting = setting
        spec = fusion.get_setting(setting)
        self.steps = int(spec.steps)
        self.modalities = tuple(spec.modalities)
        for mod in self.modalities:
            flag = "has_video" if mod == "visual" else "has_audio"
            lacking = [cache.clips[i].clip_id for i in self.indices if not getattr(cache.clips[i], flag)]
            if lacking:
                raise ValueError(
                    f"setting {setting!r} needs {mod} input but {len(lacking)} clip(s) have none, "
                    f"e.g. {lacking[:3]}"
                )
        self.seed = seed
        self.redraw_each_epoch = redraw_each_epoch
        self.epoch: int | None = None
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Tell the dataset which epoch is running (passed to fusion, e.g. for RFAS redraws)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.indices.size)

    def _images(self, name: str, row: int) -> Tensor:
        arr = np.array(self.cache.array(name)[row])  # copy out of the read-only memmap
        return torch.from_numpy(arr).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        row = int(self.indices[i])
        clip = self.cache.clips[row]
        visual = self._images(f"video{self.steps}", row) if "visual" in self.modalities else None
        audio = self._images(f"audio{self.steps}", row) if "audio" in self.modalities else None
        kwargs = {"redraw_each_epoch": True} if self.redraw_each_epoch else {}
        x = fusion.fuse(
            self.setting, visual, audio, clip_id=clip.clip_id, seed=self.seed, epoch=self.epoch, **kwargs
        )
        x = (x - self.mean) / self.std
        return x.permute(1, 0, 2, 3).contiguous(), clip.label_index, row
