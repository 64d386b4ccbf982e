"""The dataset's fast frame-layout path equals the reference fusion, uint8 output, and buffer reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmder import fusion
from mmder.data.cache import ClipCache
from mmder.data.dataset import AUTHORS_STD, IMAGENET_MEAN, LAYOUT_SETTINGS, FusedClipDataset, normalize_uint8


def _reference(ds: FusedClipDataset, i: int) -> torch.Tensor:
    """The plain definition: uint8 -> [0, 1] -> fusion.fuse -> normalise -> (C, T, H, W)."""
    row = int(ds.indices[i])
    clip = ds.cache.clips[row]

    def images(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(ds.cache.array(name)[row])).permute(0, 3, 1, 2).float() / 255

    v = images(f"video{ds.steps}") if "visual" in ds.modalities else None
    a = images(f"audio{ds.steps}") if "audio" in ds.modalities else None
    kw = {"redraw_each_epoch": True} if ds.redraw_each_epoch else {}
    x = fusion.fuse(ds.setting, v, a, clip_id=clip.clip_id, seed=ds.seed, epoch=ds.epoch, **kw)
    mean = torch.tensor(IMAGENET_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(AUTHORS_STD).view(1, -1, 1, 1)
    return ((x - mean) / std).permute(1, 0, 2, 3)


@pytest.mark.parametrize("setting", sorted(fusion.SETTINGS))
@pytest.mark.parametrize("redraw", [False, True])
def test_every_setting_equals_the_reference(synthetic_cache: ClipCache, setting: str, redraw: bool) -> None:
    ds = FusedClipDataset(synthetic_cache, [0, 5, 9], setting, seed=2, redraw_each_epoch=redraw)
    ds.set_epoch(3)
    for i in range(len(ds)):
        x, _, _ = ds[i]
        assert x.is_contiguous() and x.dtype == torch.float32
        assert torch.allclose(x, _reference(ds, i), atol=2e-6)


def test_uint8_output(synthetic_cache: ClipCache) -> None:
    for setting in sorted(LAYOUT_SETTINGS):
        u8 = FusedClipDataset(synthetic_cache, [1, 4], setting, seed=1, output="uint8")
        f32 = FusedClipDataset(synthetic_cache, [1, 4], setting, seed=1)
        x, y, row = u8[1]
        assert x.dtype == torch.uint8 and x.shape == (3, 16, 64, 64) and (y, row) == f32[1][1:]
        assert torch.allclose(normalize_uint8(x), f32[1][0], atol=2e-6)
        batch = next(iter(DataLoader(u8, batch_size=2)))[0]
        assert batch.dtype == torch.uint8 and torch.allclose(normalize_uint8(batch)[1], f32[1][0], atol=2e-6)
    with pytest.raises(ValueError, match="mixes pixels"):
        FusedClipDataset(synthetic_cache, [0], "CFAS", output="uint8")
    with pytest.raises(ValueError, match="output"):
        FusedClipDataset(synthetic_cache, [0], "video", output="float16")


def test_held_items_are_never_overwritten(synthetic_cache: ClipCache) -> None:
    ds = FusedClipDataset(synthetic_cache, range(6), "FSLF")
    held = [ds[i][0] for i in range(6)]  # all alive at once: each needs its own buffer
    copies = [h.clone() for h in held]
    for i in range(6):
        ds[i]
    assert all(torch.equal(h, c) for h, c in zip(held, copies, strict=True))
    view = held[0][:, :2]  # a view keeps its buffer alive too
    del held
    _ = [ds[i] for i in range(6)]
    assert torch.equal(view, copies[0][:, :2])
    import pickle

    clone = pickle.loads(pickle.dumps(ds))  # buffers stay in their process
    assert torch.equal(clone[0][0], copies[0])
