"""FusedClipDataset: every fusion setting gives the encoder's (C, T, H, W) input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmder import fusion
from mmder.data.cache import ClipCache
from mmder.data.dataset import AUTHORS_STD, IMAGENET_MEAN, FusedClipDataset


@pytest.mark.parametrize("setting", sorted(fusion.SETTINGS))
def test_every_setting_shapes_and_dtypes(synthetic_cache: ClipCache, setting: str) -> None:
    ds = FusedClipDataset(synthetic_cache, [0, 5, 7], setting, seed=1)
    assert len(ds) == 3
    x, label, row = ds[1]
    assert x.shape == (3, 16, 64, 64) and x.dtype == torch.float32
    assert isinstance(label, int) and label == synthetic_cache.clips[5].label_index and row == 5
    assert torch.isfinite(x).all()
    lo = (0 - max(IMAGENET_MEAN)) / AUTHORS_STD[0]
    hi = (1 - min(IMAGENET_MEAN)) / AUTHORS_STD[0]
    assert lo - 1e-4 <= x.min() and x.max() <= hi + 1e-4


def test_values_match_the_cache(synthetic_cache: ClipCache) -> None:
    ds = FusedClipDataset(synthetic_cache, [3], "video")
    x, _, _ = ds[0]
    raw = torch.from_numpy(np.array(synthetic_cache.video16[3])).float() / 255  # (T, H, W, C)
    expected = (raw - torch.tensor(IMAGENET_MEAN)) / torch.tensor(AUTHORS_STD)
    assert torch.allclose(x, expected.permute(3, 0, 1, 2), atol=1e-5)
    fslf, _, _ = FusedClipDataset(synthetic_cache, [3], "FSLF")[0]
    video8 = torch.from_numpy(np.array(synthetic_cache.video8[3])).float() / 255
    expected8 = (video8 - torch.tensor(IMAGENET_MEAN)) / 0.225
    assert torch.allclose(fslf[:, 8:], expected8.permute(3, 0, 1, 2), atol=1e-5)


def test_set_epoch_and_dataloader(synthetic_cache: ClipCache) -> None:
    ds = FusedClipDataset(synthetic_cache, range(8), "RFAS", seed=3)
    first = ds[2][0]
    ds.set_epoch(5)
    assert ds.epoch == 5
    assert torch.equal(ds[2][0], first)  # RFAS order is fixed per clip unless redrawn each epoch
    x, y, idx = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert x.shape == (4, 3, 16, 64, 64) and y.dtype == torch.int64 and idx.tolist() == [0, 1, 2, 3]


def test_missing_modality_is_refused(synthetic_cache: ClipCache) -> None:
    clips = [dataclasses.replace(c, has_video=False) for c in synthetic_cache.clips]
    audio_only = ClipCache(synthetic_cache.path, synthetic_cache.classes, clips, synthetic_cache.meta)
    assert FusedClipDataset(audio_only, [0, 1], "audio")[0][0].shape == (3, 16, 64, 64)
    with pytest.raises(ValueError, match="visual"):
        FusedClipDataset(audio_only, [0, 1], "CFAS")
    with pytest.raises(IndexError):
        FusedClipDataset(synthetic_cache, [len(synthetic_cache)], "audio")
    with pytest.raises(KeyError):
        FusedClipDataset(synthetic_cache, [0], "no-such-setting")
