"""Frame sampling, the paper's audio windows and the spectrogram images."""

from __future__ import annotations

import numpy as np
import pytest

from mmder.data.features import (
    resize_frames,
    sample_frame_indices,
    spectrogram_image,
    spectrogram_matrix,
    window_bounds,
)

SR = 16000


def _tone(freq: float, seconds: float = 0.3, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    return (amp * np.sin(2 * np.pi * freq * t) + 1e-3 * rng.normal(size=t.size)).astype(np.float32)


def test_window_bounds_follow_the_paper() -> None:
    n = 17 * 1000
    b16 = window_bounds(n, 16)
    assert len(b16) == 16 and b16[0] == (0, 2000) and b16[-1] == (15000, 17000)
    assert all(e - s == 2000 for s, e in b16)  # 2/17 of the clip
    assert all(b16[i + 1][0] == b16[i][0] + 1000 for i in range(15))  # 50 % overlap
    b8 = window_bounds(9 * 100, 8)
    assert b8[0] == (0, 200) and b8[-1] == (700, 900) and len(b8) == 8  # 2/9 of the clip
    odd = window_bounds(38401, 16)
    assert odd[0][0] == 0 and odd[-1][1] == 38401
    with pytest.raises(ValueError):
        window_bounds(10, 16)


def test_sample_frame_indices_are_uniform() -> None:
    idx = sample_frame_indices(90, 16)
    assert idx.dtype == np.int64 and len(idx) == 16 and np.all(np.diff(idx) > 0)
    assert idx[0] < 90 / 16 and idx[-1] > 90 - 90 / 16
    assert np.ptp(np.diff(idx)) <= 1
    assert list(sample_frame_indices(8, 8)) == list(range(8))
    short = sample_frame_indices(5, 16)
    assert short.min() == 0 and short.max() == 4 and np.all(np.diff(short) >= 0)
    with pytest.raises(ValueError):
        sample_frame_indices(0, 16)


def test_spectrogram_image_shape_and_dtype() -> None:
    x = _tone(300)
    for kind in ("mfcc", "logmel"):
        for cmap in ("viridis", "gray"):
            img = spectrogram_image(x, SR, kind=kind, size=64, colormap=cmap)
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8
            assert img.min() < img.max()
    gray = spectrogram_image(x, SR, size=32, colormap="gray")
    assert np.array_equal(gray[..., 0], gray[..., 1])
    assert spectrogram_matrix(x, SR).shape == (1 + (x.size - 400) // 160, 13)
    assert spectrogram_matrix(x, SR, kind="logmel").shape[1] == 40


def test_different_audio_different_images_and_loudness_does_not_matter() -> None:
    low, high = _tone(250), _tone(3000)
    a = spectrogram_image(low, SR, size=64).astype(int)
    b = spectrogram_image(high, SR, size=64).astype(int)
    assert np.abs(a - b).mean() > 10
    quiet = spectrogram_image(low * 0.05, SR, size=64).astype(int)
    assert np.abs(a - quiet).mean() < 2  # normalised by max |x|, and c0 is dropped


def test_low_bands_at_the_bottom() -> None:
    def brightest_row(freq: float) -> int:
        img = spectrogram_image(_tone(freq), SR, kind="logmel", size=40, colormap="gray")
        return int(img[..., 0].mean(axis=1).argmax())

    assert brightest_row(200) >= 30  # a low tone lights a row near the bottom
    assert brightest_row(4000) <= 15  # a high one near the top


def test_silence_and_short_windows() -> None:
    assert spectrogram_image(np.zeros(4000, np.float32), SR, size=16).shape == (16, 16, 3)
    assert spectrogram_image(_tone(300, seconds=0.01), SR, size=16).shape == (16, 16, 3)


def test_resize_frames() -> None:
    frames = np.random.default_rng(0).integers(0, 255, (3, 48, 80, 3), dtype=np.uint8)
    out = resize_frames(frames, 32)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    assert resize_frames(frames, (20, 10)).shape == (3, 20, 10, 3)
