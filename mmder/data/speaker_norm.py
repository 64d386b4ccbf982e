"""Speaker-level standardisation of spectrogram images (``preprocess.speaker_norm``).

Why: with a handful of training speakers, who speaks explains more of a spectrogram than how they
feel (vocal tract length, pitch range, microphone distance); a classifier then learns the training
speakers. Standardising every speaker's images with that speaker's own statistics removes what stays
constant over the speaker's clips and keeps what changes between them, the emotion. It is the
speaker normalisation of the speech-emotion literature, applied to the images the encoder reads.

It is transductive for test speakers: their statistics come from their own (unlabelled) clips of the
test fold, as a deployment would from earlier recordings of the same speaker. No label is read.

Statistics are taken over the clips a dataset holds, per speaker, per image row (a frequency band)
and, for ``window_band``, per window position too; standardised values are clipped to
``Z_RANGE`` standard deviations and mapped back to 0..255, the cache's own scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmder.data.features import Z_RANGE

__all__ = ["SpeakerNorm", "SpeakerStats", "speaker_statistics", "standardise"]

SpeakerNorm = Literal["none", "band", "window_band"]
MIN_STD = 1.0  # in uint8 steps: a speaker whose band never changes is shifted, not blown up


@dataclass(frozen=True)
class SpeakerStats:
    """Mean and std, broadcastable to one clip's ``(T, H, W, C)`` images."""

    mean: np.ndarray
    std: np.ndarray


def speaker_statistics(
    images: np.ndarray, rows: Sequence[int] | np.ndarray, speakers: Sequence[str], mode: SpeakerNorm
) -> dict[str, SpeakerStats]:
    """Per speaker of ``rows``: the statistics of ``images[rows]`` (``(N, T, H, W, C)`` uint8).

    Accumulated clip by clip in float64, so a large memory-mapped cache is read once and never
    held in memory as floats.
    """
    if mode not in ("band", "window_band"):
        raise ValueError(f"speaker_norm must be 'band' or 'window_band' here, got {mode!r}")
    axes = (2, 3) if mode == "window_band" else (0, 2, 3)  # of one clip's (T, H, W, C)
    sums: dict[str, list] = {}
    for row in np.asarray(rows, dtype=np.int64).reshape(-1):
        clip = np.asarray(images[row], dtype=np.float64)
        acc = sums.setdefault(speakers[row], [0, 0.0, 0.0])
        acc[0] += int(np.prod([clip.shape[a] for a in axes]))
        acc[1] = acc[1] + clip.sum(axis=axes)
        acc[2] = acc[2] + np.square(clip).sum(axis=axes)
    stats = {}
    for speaker, (n, s, s2) in sums.items():
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        shape = (*mean.shape, 1, 1) if mode == "window_band" else (1, -1, 1, 1)  # (T, H, 1, 1) / (1, H, 1, 1)
        stats[speaker] = SpeakerStats(
            mean=mean.reshape(shape).astype(np.float32),
            std=np.maximum(std, MIN_STD).reshape(shape).astype(np.float32),
        )
    return stats


def standardise(images: np.ndarray, stats: SpeakerStats) -> np.ndarray:
    """One clip's uint8 images ``(T, H, W, C)`` standardised with its speaker's statistics, as
    float32 on the 0..255 scale (mean -> 127.5, +-``Z_RANGE`` std -> 255 / 0)."""
    z = (np.asarray(images, dtype=np.float32) - stats.mean) / stats.std
    np.clip(z, -Z_RANGE, Z_RANGE, out=z)
    return (z + Z_RANGE) * np.float32(255.0 / (2 * Z_RANGE))
