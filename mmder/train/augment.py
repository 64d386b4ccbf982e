"""Mixup / CutMix for video batches (B, C, T, H, W), with soft, label-smoothed targets.

VideoMAE's fine-tuning recipe uses timm's ``Mixup``, but timm cuts its CutMix box with
``x[:, :, yl:yh, xl:xh]``, which on a 5-D clip indexes T and H, not H and W (and it asserts an even
batch). :class:`VideoMixup` follows timm's batch mode otherwise (one lambda per batch, partner = the
batch reversed, lambda corrected to the box area, ``mixup_target`` smoothing) and cuts the same
H x W box out of every frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SpecAugment", "VideoMixup", "smooth_one_hot", "soft_target_cross_entropy"]


def smooth_one_hot(y: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """One-hot targets with timm's smoothing: off = s / K, on = 1 - s + s / K (rows sum to 1)."""
    off = smoothing / num_classes
    out = torch.full((len(y), num_classes), off, dtype=torch.float32, device=y.device)
    return out.scatter_(1, y.long().view(-1, 1), 1.0 - smoothing + off)


def soft_target_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ``-sum_k target_k log softmax(logits)_k`` (timm's SoftTargetCrossEntropy)."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class VideoMixup:
    """Per batch: with probability ``prob`` mix (CutMix with probability ``switch_prob`` when both are on).

    ``mixup_alpha`` / ``cutmix_alpha`` are the Beta(alpha, alpha) parameters; 0 turns that kind off.
    Returns the mixed batch (a new tensor; the input is left alone) and soft targets (B, num_classes)
    in float32. A batch left unmixed still gets the smoothed one-hot targets, as in timm.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        seed: int | Sequence[int] = 0,
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup and cutmix alphas must be >= 0")
        if not 0.0 <= prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
            raise ValueError("prob and switch_prob must lie in [0, 1]")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.rng = np.random.default_rng(seed)

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Restart the random stream (the trainer does this per epoch and rank, so a resume replays it)."""
        self.rng = np.random.default_rng(seed)

    def draw(self) -> tuple[float, bool]:
        """(lambda, use_cutmix) for one batch; lambda 1.0 means leave the batch unmixed."""
        if not self.active or self.rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(self.rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(self.rng.beta(alpha, alpha)), use_cutmix

    def box(self, height: int, width: int, lam: float) -> tuple[int, int, int, int]:
        """A box of area about (1 - lam) * H * W, centred uniformly and clipped (timm's ``rand_bbox``)."""
        ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(self.rng.integers(0, height)), int(self.rng.integers(0, width))
        yl, yh = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        xl, xh = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        return yl, yh, xl, xh

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim != 5:
            raise ValueError(f"expected a clip batch (B, C, T, H, W), got {tuple(x.shape)}")
        lam, use_cutmix = self.draw()
        if lam < 1.0:
            partner = x.flip(0)
            if use_cutmix:
                h, w = x.shape[-2:]
                yl, yh, xl, xh = self.box(h, w, lam)
                x = x.clone()
                x[..., yl:yh, xl:xh] = partner[..., yl:yh, xl:xh]  # every channel and frame
                lam = 1.0 - (yh - yl) * (xh - xl) / float(h * w)
            else:
                x = x * lam + partner * (1.0 - lam)
        y1 = smooth_one_hot(y, self.num_classes, self.label_smoothing)
        return x, y1 * lam + y1.flip(0) * (1.0 - lam)


class SpecAugment:
    """Cheap augmentation of spectrogram clips (B, C, T, H, W): T windows, H frequency, W time.

    Per clip, independently: the window sequence shifted by up to ``time_shift`` windows (edges
    repeated: the clip starts later or ends earlier), a random offset in ``[-gain, gain]`` added to
    every pixel (on log images a loudness change), ``masks`` frequency bands of up to
    ``freq_mask * H`` rows hidden in every window, and ``masks`` time spans of up to
    ``time_mask * W`` columns hidden in each window separately (SpecAugment, Park et al. 2019).
    Hidden pixels are set to 0, the normalised inputs' mean. ``freq_warp`` stretches (or squeezes) the
    frequency axis of the whole clip by a factor drawn in ``[1 - freq_warp, 1 + freq_warp]``, anchored
    at the lowest band (the bottom row): vocal tract length perturbation, which makes one speaker sound
    like another (Jaitly and Hinton 2013). Returns a new tensor.
    """

    def __init__(
        self,
        *,
        freq_mask: float = 0.0,
        time_mask: float = 0.0,
        masks: int = 2,
        time_shift: int = 0,
        gain: float = 0.0,
        freq_warp: float = 0.0,
        seed: int | Sequence[int] = 0,
    ) -> None:
        if not (0.0 <= freq_mask <= 1.0 and 0.0 <= time_mask <= 1.0):
            raise ValueError("freq_mask and time_mask are shares of the image, in [0, 1]")
        if masks < 1 or time_shift < 0 or gain < 0:
            raise ValueError("masks must be >= 1, time_shift and gain >= 0")
        self.freq_mask, self.time_mask, self.masks = freq_mask, time_mask, masks
        self.time_shift, self.gain = time_shift, gain
        if not 0.0 <= freq_warp < 1.0:
            raise ValueError("freq_warp must lie in [0, 1)")
        self.freq_warp = freq_warp
        self.rng = np.random.default_rng(seed)

    @property
    def active(self) -> bool:
        return bool(self.freq_mask or self.time_mask or self.time_shift or self.gain or self.freq_warp)

    def reseed(self, seed: int | Sequence[int]) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected a clip batch (B, C, T, H, W), got {tuple(x.shape)}")
        x = x.clone()
        b, _, t, h, w = x.shape
        rng = self.rng
        for i in range(b):
            if self.freq_warp:
                x[i] = warp_frequency(x[i], float(rng.uniform(1 - self.freq_warp, 1 + self.freq_warp)))
            if self.time_shift:
                s = int(rng.integers(-self.time_shift, self.time_shift + 1))
                if s:
                    x[i] = shift_windows(x[i], s)
            if self.gain:
                x[i] += float(rng.uniform(-self.gain, self.gain))
            for _ in range(self.masks):
                if self.freq_mask:
                    f = int(rng.integers(0, int(self.freq_mask * h) + 1))
                    if f:
                        f0 = int(rng.integers(0, h - f + 1))
                        x[i, :, :, f0 : f0 + f, :] = 0.0
                if self.time_mask:
                    widths = rng.integers(0, int(self.time_mask * w) + 1, size=t)
                    for k in range(t):
                        c = int(widths[k])
                        if c:
                            c0 = int(rng.integers(0, w - c + 1))
                            x[i, :, k, :, c0 : c0 + c] = 0.0
        return x


def shift_windows(x: Tensor, shift: int) -> Tensor:
    """Clips (..., C, T, H, W) with the window sequence moved ``shift`` windows later (edges repeated).

    One function for training's random ``time_shift`` and evaluation's averaging over shifts, so the
    two see the same transform.
    """
    t = x.shape[-3]
    idx = torch.clamp(torch.arange(t, device=x.device) - shift, 0, t - 1)
    return x.index_select(x.ndim - 3, idx)


def warp_frequency(clip: Tensor, alpha: float) -> Tensor:
    """``clip`` (..., H, W) with its rows (frequency, lowest at the bottom) stretched by ``alpha``.

    Output row at height ``h`` above the bottom reads the input at height ``h / alpha`` (linear
    interpolation; the top row repeats past the edge): ``alpha > 1`` moves content up (a shorter
    vocal tract), ``alpha < 1`` down.
    """
    h = clip.shape[-2]
    height = torch.arange(h, dtype=torch.float32, device=clip.device)  # 0 = bottom row
    src = torch.clamp(height / alpha, 0, h - 1)
    lo = src.floor().long()
    hi = torch.clamp(lo + 1, max=h - 1)
    frac = (src - lo.float()).to(clip.dtype).view(-1, 1)
    flipped = clip.flip(-2)  # bottom row first
    out = flipped[..., lo, :] * (1 - frac) + flipped[..., hi, :] * frac
    return out.flip(-2)
