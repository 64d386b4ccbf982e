"""Turning decoded media into the model's image sequences: frame sampling and spectrogram images.

Follows the authors' preprocessing (MultiMAE-DER, ``Preprocessing_*.py``) where it is well defined:

* audio is normalised by ``max |x|``; the clip is split into ``n + 1`` equal parts and window ``i``
  covers parts ``i`` and ``i + 1`` (16 windows of 2/17 of the clip, or 8 of 2/9), see
  :func:`window_bounds`;
* each window gives MFCCs: pre-emphasis 0.97, 25 ms Hamming frames, 512-point FFT power spectrum,
  40 triangular HTK-mel filters, ``20 log10``, orthonormal DCT-II keeping coefficients 1..13 (c0,
  the loudness, is dropped) and a sine lifter of 22;
* the matrix is drawn like ``matshow(mfcc.T, origin='lower')``: time on x, coefficients on y with the
  low ones at the bottom, min-max scaled per image and coloured with viridis.

Where the code is odd we choose the plain reading and say so: the hop is 10 ms (the authors' 0.1 ms
stride gives ~2,800 near-identical frames per window), and the image is the matrix itself resized
with OpenCV, without matplotlib's white figure margins.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
import torchaudio

__all__ = [
    "sample_frame_indices",
    "window_bounds",
    "min_window_seconds",
    "spectrogram_matrix",
    "spectrogram_image",
    "spectrogram_images",
    "deltas",
    "resize_frames",
    "resize_image",
]

SpectrogramKind = Literal["mfcc", "logmel"]
Colormap = Literal["viridis", "gray"]
SpectrogramNorm = Literal["image", "clip", "clip_band"]
SpectrogramChannels = Literal["colormap", "deltas"]
LOGMEL_RANGE_DB = 160.0  # log-mel floor below the clip's peak (20 log10 of power: 80 dB of power)
Z_RANGE = 3.0  # standardised values in [-Z_RANGE, Z_RANGE] map onto 0..255


def sample_frame_indices(n_frames: int, k: int) -> np.ndarray:
    """``k`` frame indices spread uniformly over a clip of ``n_frames`` frames (int64, sorted).

    Index ``i`` is the centre of the ``i``-th of ``k`` equal segments, so the first and last frames
    (often neutral or a fade) are not over-weighted; a clip shorter than ``k`` repeats frames.
    """
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    idx = np.floor((np.arange(k) + 0.5) * n_frames / k).astype(np.int64)
    return np.clip(idx, 0, n_frames - 1)


def window_bounds(n_samples: int, n_windows: int) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of the paper's overlapping audio windows.

    The signal is split into ``n_windows + 1`` equal parts; window ``i`` covers parts ``i`` and
    ``i + 1`` (2/17 of the clip for 16 windows, 2/9 for 8), so neighbours overlap by half.
    """
    if n_windows <= 0:
        raise ValueError(f"n_windows must be positive, got {n_windows}")
    if n_samples < n_windows + 1:
        raise ValueError(f"{n_samples} samples cannot be split into {n_windows + 1} parts")
    edges = [round(j * n_samples / (n_windows + 1)) for j in range(n_windows + 2)]
    return [(edges[i], edges[i + 2]) for i in range(n_windows)]


def min_window_seconds(n_windows: int = 16, frame_ms: float = 25.0) -> float:
    """The shortest clip whose every window holds one full analysis frame.

    A window is ``2 / (n_windows + 1)`` of the clip, so a clip shorter than
    ``frame_ms * (n_windows + 1) / 2`` would give windows shorter than one 25 ms MFCC frame, i.e.
    zero-padded single-column images that carry no time structure (0.2125 s for 16 windows).
    """
    if n_windows <= 0:
        raise ValueError(f"n_windows must be positive, got {n_windows}")
    return frame_ms / 1000.0 * (n_windows + 1) / 2.0


@lru_cache(maxsize=16)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_freqs, n_mels) triangular HTK-mel filters without area normalisation, as the authors'."""
    fb = torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1,
        f_min=0.0,
        f_max=sample_rate / 2,
        n_mels=n_mels,
        sample_rate=sample_rate,
        norm=None,
        mel_scale="htk",
    )
    return fb.numpy().astype(np.float32)


@lru_cache(maxsize=16)
def _dct_matrix(n_coeffs: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_coeffs) orthonormal DCT-II."""
    return torchaudio.functional.create_dct(n_coeffs, n_mels, norm="ortho").numpy().astype(np.float32)


def spectrogram_matrix(
    signal: np.ndarray,
    sample_rate: int,
    *,
    kind: SpectrogramKind = "mfcc",
    n_mfcc: int = 13,
    n_mels: int = 40,
    frame_ms: float = 25.0,
    hop_ms: float = 10.0,
    preemphasis: float = 0.97,
    lifter: int = 22,
) -> np.ndarray:
    """The (frames, coefficients) matrix of one window: MFCC 1..n_mfcc or log-mel energies (dB).

    A window shorter than one frame is zero-padded to one frame. Digital silence gives a constant
    matrix (the power floor is ``finfo(float32).eps``, as the authors floor at eps).
    """
    x = np.asarray(signal, dtype=np.float32).reshape(-1)
    if x.size == 0:
        raise ValueError("empty signal")
    if preemphasis:
        x = np.concatenate([x[:1], x[1:] - preemphasis * x[:-1]])
    win = max(1, int(round(frame_ms * sample_rate / 1000)))
    hop = max(1, int(round(hop_ms * sample_rate / 1000)))
    n_fft = 1 << max(0, (win - 1).bit_length())
    if x.size < win:
        x = np.pad(x, (0, win - x.size))
    n_frames = 1 + (x.size - win) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n_frames]
    frames = frames * np.hamming(win).astype(np.float32)
    # NumPy rather than torch: these matrices are tiny and torch's thread pool only adds contention.
    power = (np.abs(np.fft.rfft(frames, n=n_fft)) ** 2 / n_fft).astype(np.float32)  # (T, n_fft/2+1)
    mel = power @ _mel_filterbank(sample_rate, n_fft, n_mels)  # (T, n_mels)
    mel_db = 20.0 * np.log10(np.maximum(mel, np.finfo(np.float32).eps))
    if kind == "logmel":
        return mel_db
    if kind != "mfcc":
        raise ValueError(f"kind must be 'mfcc' or 'logmel', got {kind!r}")
    ceps = (mel_db @ _dct_matrix(n_mfcc + 1, n_mels))[:, 1:]  # drop c0 (loudness)
    if lifter:
        n = np.arange(n_mfcc, dtype=np.float32)
        ceps = ceps * (1.0 + lifter / 2.0 * np.sin(np.pi * n / lifter)).astype(np.float32)
    return ceps


def _colorize(matrix: np.ndarray, colormap: Colormap) -> np.ndarray:
    """Min-max scale one matrix to 0..255 (as ``imshow`` does) and colour it; RGB uint8."""
    m = np.asarray(matrix, dtype=np.float64)
    lo, hi = float(m.min()), float(m.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        scaled = np.zeros(m.shape, dtype=np.uint8)
    else:
        scaled = np.round((m - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if colormap == "gray":
        return np.repeat(scaled[:, :, None], 3, axis=2)
    if colormap == "viridis":
        bgr = cv2.applyColorMap(scaled, cv2.COLORMAP_VIRIDIS)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raise ValueError(f"colormap must be 'viridis' or 'gray', got {colormap!r}")


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize one image to ``size`` (square int or (height, width)); INTER_AREA when shrinking."""
    h, w = (size, size) if isinstance(size, int) else size
    if image.shape[0] == h and image.shape[1] == w:
        return image
    shrink = image.shape[0] > h or image.shape[1] > w
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def spectrogram_image(
    signal: np.ndarray,
    sample_rate: int,
    *,
    kind: SpectrogramKind = "mfcc",
    size: int = 224,
    colormap: Colormap = "viridis",
    n_mfcc: int = 13,
    n_mels: int = 40,
    frame_ms: float = 25.0,
    hop_ms: float = 10.0,
    preemphasis: float = 0.97,
    normalize: bool = True,
) -> np.ndarray:
    """One window of audio as a ``(size, size, 3)`` RGB uint8 image.

    Time runs along x, coefficients (or mel bands) along y with the lowest at the bottom. The signal
    is divided by its own ``max |x|`` when ``normalize`` (callers that already normalised the whole
    clip, as the authors do, pass ``normalize=False``); the per-image min-max scaling makes the image
    independent of loudness either way.
    """
    x = np.asarray(signal, dtype=np.float32).reshape(-1)
    if normalize and x.size:
        peak = float(np.max(np.abs(x)))
        if peak > 0:
            x = x / peak
    mat = spectrogram_matrix(
        x,
        sample_rate,
        kind=kind,
        n_mfcc=n_mfcc,
        n_mels=n_mels,
        frame_ms=frame_ms,
        hop_ms=hop_ms,
        preemphasis=preemphasis,
    )
    img = _colorize(mat.T[::-1], colormap)  # rows = coefficients, low ones at the bottom
    return np.ascontiguousarray(resize_image(img, size))


def deltas(matrix: np.ndarray, width: int = 2) -> np.ndarray:
    """The regression delta of a ``(frames, coefficients)`` matrix along time (HTK, edges repeated)."""
    m = np.asarray(matrix, dtype=np.float32)
    n = m.shape[0]
    padded = np.pad(m, ((width, width), (0, 0)), mode="edge")
    num = sum(
        k * (padded[width + k : width + k + n] - padded[width - k : width - k + n])
        for k in range(1, width + 1)
    )
    return (num / (2.0 * sum(k * k for k in range(1, width + 1)))).astype(np.float32)


def _standardise(mats: list[np.ndarray], per_band: bool) -> list[np.ndarray]:
    """0..255 uint8 of ``(x - mean) / std`` with the statistics of all the clip's windows together."""
    allm = np.concatenate(mats, axis=0).astype(np.float64)
    mean = allm.mean(axis=0 if per_band else None)
    std = allm.std(axis=0 if per_band else None)
    std = np.where(std > 1e-8, std, 1.0)
    out = []
    for m in mats:
        z = np.clip((m - mean) / std, -Z_RANGE, Z_RANGE)
        out.append(np.round((z + Z_RANGE) * (255.0 / (2 * Z_RANGE))).astype(np.uint8))
    return out


def _minmax(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros(m.shape, dtype=np.uint8)
    return np.round((m - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def spectrogram_images(
    signal: np.ndarray,
    sample_rate: int,
    bounds: list[tuple[int, int]],
    *,
    kind: SpectrogramKind = "logmel",
    size: int = 224,
    colormap: Colormap = "gray",
    n_mfcc: int = 13,
    n_mels: int = 40,
    norm: SpectrogramNorm = "clip",
    channels: SpectrogramChannels = "colormap",
) -> np.ndarray:
    """All windows of one clip as ``(len(bounds), size, size, 3)`` RGB uint8, scaled together.

    ``norm='image'`` min-max scales every image on its own (as :func:`spectrogram_image`);
    ``'clip'`` standardises with the mean and std of all the clip's windows, so a loud window stays
    brighter than a quiet one; ``'clip_band'`` does so per coefficient / mel band (per-utterance
    mean and variance normalisation, which removes a speaker's fixed spectral tilt). Log-mel values
    are floored at ``LOGMEL_RANGE_DB`` below the clip's peak first, so silence does not set the scale.
    ``channels='deltas'`` puts the matrix, its delta and delta-delta in R, G, B (``colormap`` unused);
    ``'colormap'`` draws the matrix alone with ``colormap``.
    """
    x = np.asarray(signal, dtype=np.float32).reshape(-1)
    mats = [
        spectrogram_matrix(x[a:b], sample_rate, kind=kind, n_mfcc=n_mfcc, n_mels=n_mels) for a, b in bounds
    ]
    if kind == "logmel":
        floor = max(float(m.max()) for m in mats) - LOGMEL_RANGE_DB
        mats = [np.maximum(m, floor) for m in mats]
    planes = [mats]
    if channels == "deltas":
        d1 = [deltas(m) for m in mats]
        planes += [d1, [deltas(m) for m in d1]]
    elif channels != "colormap":
        raise ValueError(f"channels must be 'colormap' or 'deltas', got {channels!r}")
    scaled = []
    for plane in planes:
        if norm == "image":
            scaled.append([_minmax(m) for m in plane])
        elif norm in ("clip", "clip_band"):
            scaled.append(_standardise(plane, per_band=norm == "clip_band"))
        else:
            raise ValueError(f"norm must be 'image', 'clip' or 'clip_band', got {norm!r}")
    out = []
    for i in range(len(bounds)):
        if channels == "deltas":
            img = np.stack([p[i].T[::-1] for p in scaled], axis=2)
        else:
            u8 = np.ascontiguousarray(scaled[0][i].T[::-1])
            if colormap == "gray":
                img = np.repeat(u8[:, :, None], 3, axis=2)
            elif colormap == "viridis":
                img = cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
            else:
                raise ValueError(f"colormap must be 'viridis' or 'gray', got {colormap!r}")
        out.append(resize_image(np.ascontiguousarray(img), size))
    return np.stack(out)


def resize_frames(frames: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize every frame of ``(N, H, W, 3)`` to a square ``size`` (or (h, w)), whole frame, no crop.

    The authors resize whole frames to 224x224 whatever their aspect ratio; so do we.
    """
    frames = np.asarray(frames)
    h, w = (size, size) if isinstance(size, int) else size
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), dtype=frames.dtype)
    for i, f in enumerate(frames):
        out[i] = resize_image(f, (h, w))
    return out
