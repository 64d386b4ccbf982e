"""preprocess.speaker_norm: each speaker's spectrogram images standardised with its own statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmder.data.cache import ClipCache
from mmder.data.dataset import AUTHORS_STD, IMAGENET_MEAN, FusedClipDataset
from mmder.data.preprocess import PreprocessConfig
from mmder.data.speaker_norm import speaker_statistics, standardise


def _two_speakers(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """8 clips (T=4, H=6, W=5, C=3): speaker b is speaker a's clips, 40 steps brighter and flatter."""
    rng = np.random.default_rng(seed)
    a = rng.integers(60, 140, size=(4, 4, 6, 5, 1)).repeat(3, axis=4)
    b = 40 + (a - 60) // 2
    return np.concatenate([a, b]).astype(np.uint8), ["a"] * 4 + ["b"] * 4


@pytest.mark.parametrize("mode", ["band", "window_band"])
def test_a_speakers_offset_and_scale_are_removed(mode: str) -> None:
    images, speakers = _two_speakers()
    stats = speaker_statistics(images, range(8), speakers, mode)
    out = np.stack([standardise(images[i], stats[speakers[i]]) for i in range(8)])
    # b is an affine copy of a: once each is standardised on its own they look alike
    np.testing.assert_allclose(out[:4], out[4:], atol=6.0)  # rounding of b's // 2 only
    axes = (0, 2, 3, 4) if mode == "window_band" else (0, 1, 2, 3, 4)
    for rows in (slice(0, 4), slice(4, 8)):  # each speaker centred on the middle of the 0..255 scale
        np.testing.assert_allclose(out[rows].mean(axis=axes), 127.5, atol=0.01)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255


def test_statistics_are_per_speaker_and_only_from_the_rows_given() -> None:
    images, speakers = _two_speakers()
    only_a = speaker_statistics(images, [0, 1, 2, 3], speakers, "window_band")
    both = speaker_statistics(images, range(8), speakers, "window_band")
    assert set(only_a) == {"a"} and set(both) == {"a", "b"}
    np.testing.assert_array_equal(only_a["a"].mean, both["a"].mean)  # b's clips do not move a's scale
    assert both["a"].mean.shape == (4, 6, 1, 1)
    assert speaker_statistics(images, range(8), speakers, "band")["a"].mean.shape == (1, 6, 1, 1)
    with pytest.raises(ValueError, match="speaker_norm"):
        speaker_statistics(images, range(8), speakers, "pixel")  # type: ignore[arg-type]


def test_a_constant_band_is_shifted_not_blown_up() -> None:
    images = np.full((2, 2, 3, 4, 3), 90, dtype=np.uint8)
    stats = speaker_statistics(images, [0, 1], ["s", "s"], "band")
    np.testing.assert_allclose(standardise(images[0], stats["s"]), 127.5)


def _speaker_rows(cache: ClipCache) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for i, s in enumerate(cache.speakers):
        rows.setdefault(s, []).append(i)
    return rows


def test_dataset_standardises_each_speaker_on_its_own_clips(synthetic_cache: ClipCache) -> None:
    rows = _speaker_rows(synthetic_cache)
    first, second = sorted(rows)[:2]
    test_rows = rows[first]
    alone = FusedClipDataset(synthetic_cache, test_rows, "audio", speaker_norm="window_band")
    mixed = FusedClipDataset(synthetic_cache, test_rows + rows[second], "audio", speaker_norm="window_band")
    # a speaker's items depend on that speaker's clips only, never on who else is in the set
    for i in range(len(test_rows)):
        torch.testing.assert_close(alone[i][0], mixed[i][0])
    plain = FusedClipDataset(synthetic_cache, test_rows, "audio")
    assert not torch.allclose(alone[0][0], plain[0][0])
    # every speaker's (window, band) mean sits at the middle of the 0..255 scale, after the usual affine
    middle = float(np.mean([(0.5 - m) / AUTHORS_STD[0] for m in IMAGENET_MEAN]))  # averaged over channels
    x = torch.stack([mixed[i][0] for i in range(len(mixed))])  # (N, C, T, H, W)
    for part in (x[: len(test_rows)], x[len(test_rows) :]):
        per_window_band = part.mean(dim=(0, 1, 4))  # (T, H), over clips, channels and time
        off = (per_window_band - middle).abs().max()
        assert off < 0.02, off  # not exactly 0: values beyond 3 std are clipped
    # the uint8 output is the float one before the affine, rounded
    u8 = FusedClipDataset(synthetic_cache, test_rows, "audio", speaker_norm="window_band", output="uint8")
    back = (u8[0][0].float() / 255.0 - IMAGENET_MEAN[0]) / AUTHORS_STD[0]
    assert (back[0] - alone[0][0][0]).abs().max() <= 0.5 / 255 / AUTHORS_STD[0] + 1e-5


def test_fusion_with_faces_takes_the_float_path(synthetic_cache: ClipCache) -> None:
    rows = list(range(8))
    for setting in ("SFAS", "CFAS", "FFLS"):
        x = FusedClipDataset(synthetic_cache, rows, setting, speaker_norm="band")[0][0]
        plain = FusedClipDataset(synthetic_cache, rows, setting)[0][0]
        assert x.shape == plain.shape and torch.isfinite(x).all() and not torch.allclose(x, plain)
    video = FusedClipDataset(synthetic_cache, rows, "video", speaker_norm="band")[0][0]
    # no spectrogram in the input: nothing to standardise
    torch.testing.assert_close(video, FusedClipDataset(synthetic_cache, rows, "video")[0][0])


def test_speaker_norm_keeps_the_cache_and_enters_keys_only_when_set() -> None:
    base = PreprocessConfig(image_size=32, spectrogram="logmel")
    normed = PreprocessConfig(image_size=32, spectrogram="logmel", speaker_norm="window_band")
    assert base.fingerprint() == normed.fingerprint()  # the cached arrays are the same
    assert "speaker_norm" not in normed.content_settings()
    from mmder.config import result_fields

    assert "speaker_norm" not in result_fields(base)  # keys of every earlier cell unchanged
    assert result_fields(normed)["speaker_norm"] == "window_band"
    with pytest.raises(ValueError, match="speaker_norm"):
        PreprocessConfig(speaker_norm="per_clip")
