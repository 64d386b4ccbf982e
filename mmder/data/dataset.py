"""A torch Dataset that reads cached clips and fuses them into the encoder's 16-frame input.

Fusion happens here, per item, rather than in the cache, so one cache serves all eight settings
(and RFAS can redraw its order per epoch if asked). The output is what a VideoMAE encoder reads:
``(C, T, H, W)`` float32, normalised with the authors' mean and std.

Speed: six of the settings (video, audio, FFLS, FSLF, OFOS, RFAS) only reorder frames. For those the
order is read off :func:`mmder.fusion.fuse` itself (applied to frame-number images, so fusion.py stays
the one definition) and the uint8 frames are copied straight from the memory map into the
channels-first float output, then scaled and shifted in place: one conversion pass and one affine
pass instead of a chain of float copies. SFAS, SFAS-raw and CFAS are computed on the uint8 frames in
integer arithmetic (sums; CFAS's 2:1 antialiased resize is a fixed 4-tap filter), checked against
:func:`mmder.fusion.fuse` by the tests; anything else goes through :func:`mmder.fusion.fuse` on floats.
Output buffers are reused once the consumer has dropped them (see :class:`_BufferPool`): at 224 px
first touches of fresh memory otherwise cost more than the copies.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# First touches of fresh memory cost more than the copies themselves here (a 224 px float clip is
# 9.6 MB, 2,352 small pages, and the batch collation faults in as much again): let PyTorch's CPU
# allocator ask for transparent huge pages. Only a hint, read when the process makes its first
# tensor, so it helps when this module is imported early (as DataLoader workers do); setting
# THP_MEM_ALLOC_ENABLE=1 in the job's environment always works.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from mmder import fusion  # noqa: E402
from mmder.data.cache import ClipCache  # noqa: E402
from mmder.data.speaker_norm import SpeakerNorm, speaker_statistics, standardise  # noqa: E402

__all__ = ["FusedClipDataset", "IMAGENET_MEAN", "AUTHORS_STD", "LAYOUT_SETTINGS", "normalize_uint8"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
AUTHORS_STD = (0.225, 0.225, 0.225)  # the authors' code uses 0.225 on every channel

# Settings whose output is a selection of input frames, no pixel arithmetic (declared with their
# functions in mmder.fusion): the uint8 path copies their frames.
LAYOUT_SETTINGS = frozenset(name for name, s in fusion.SETTINGS.items() if s.layout)


def normalize_uint8(
    x: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = AUTHORS_STD
) -> Tensor:
    """``(x / 255 - mean) / std`` in float32 for uint8 items or batches (channels at dim -4).

    For ``FusedClipDataset(..., output="uint8")``: move the 4x smaller uint8 batch to the device
    first, then normalise there; the result equals the float32 items of the default output.
    """
    shape = (-1, 1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(shape)
    return (x.to(torch.float32) / 255.0 - m) / s


class _BufferPool:
    """Reusable output buffers, so items do not fault in fresh memory for every clip.

    A buffer is handed out again only when nothing but the pool refers to it: ``torch.from_numpy``
    keeps a reference to the array for as long as any tensor (or view) of it lives, so a buffer whose
    tensor was collated and dropped is free and one still held by a caller never is.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self.buffers: dict[tuple, list[np.ndarray]] = {}
        # References an unused buffer has during the check below (the list, the loop variable and
        # getrefcount's argument: 3 on CPython 3.11), measured rather than assumed.
        probe = [np.empty(0, dtype=np.float32)]
        self._unused = min(sys.getrefcount(b) for b in probe)

    def get(self, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        free = self.buffers.setdefault((shape, np.dtype(dtype).str), [])
        for buf in free:
            if sys.getrefcount(buf) <= self._unused:
                return buf
        buf = np.empty(shape, dtype=dtype)
        if len(free) < self.limit:
            free.append(buf)
        return buf


class FusedClipDataset(Dataset):
    """Items ``(x, label_index, cache_index)`` of the cache rows ``indices`` under fusion ``setting``.

    ``x`` is ``(C, T, H, W)`` float32: uint8 images -> [0, 1] -> :func:`mmder.fusion.fuse` ->
    ``(x - mean) / std`` -> channels first. 16-step settings read ``video16``/``audio16``, 8-step
    ones ``video8``/``audio8``; only the modalities the setting uses are read. Call
    :meth:`set_epoch` each epoch (it only matters for settings that depend on the epoch).

    ``output="uint8"`` (frame-layout settings only, see ``LAYOUT_SETTINGS``) returns the fused
    frames as ``(C, T, H, W)`` uint8, unnormalised: a quarter of the bytes to collate and ship, to be
    normalised on the device with :func:`normalize_uint8`.

    ``targets`` reads each item's label through a table (the cache's label index -> the class index
    the model was trained with), for clips of another corpus whose classes are mapped onto the
    training corpus's; their rows must all map (``-1`` marks a class left out).

    ``speaker_norm`` (``band`` or ``window_band``, see :mod:`mmder.data.speaker_norm`) standardises
    the spectrogram images of every speaker with the statistics of that speaker's clips among
    ``indices``; the pixel-summing fast paths (SFAS, CFAS) then take the float path.
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
        output: str = "float32",
        speaker_norm: SpeakerNorm = "none",
        targets: Sequence[int] | None = None,
    ) -> None:
        if output not in ("float32", "uint8"):
            raise ValueError(f"output must be 'float32' or 'uint8', got {output!r}")
        if output == "uint8" and setting not in LAYOUT_SETTINGS:
            raise ValueError(
                f"output='uint8' needs a frame-layout setting ({', '.join(sorted(LAYOUT_SETTINGS))}); "
                f"{setting!r} mixes pixels, use float32"
            )
        self.output = output
        self.cache = cache
        # another corpus's classes (cross-corpus testing): cache label index -> the model's class index
        self.targets = None if targets is None else [int(t) for t in targets]
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
        # x_norm = u8 * scale + shift, per channel
        self._scale = [1.0 / (255.0 * float(s)) for s in std]
        self._shift = torch.tensor([-float(m) / float(s) for m, s in zip(mean, std, strict=True)]).view(
            -1, 1, 1, 1
        )
        self._layout = setting in LAYOUT_SETTINGS
        self._fixed_order: list[tuple[str, int]] | None = None
        if self._layout and setting != "RFAS":
            self._fixed_order = self._order("")
        self._pool = _BufferPool()
        self.speaker_norm = speaker_norm
        self._speaker_stats = None
        if speaker_norm != "none" and "audio" in self.modalities:
            self._speaker_stats = speaker_statistics(
                cache.array(f"audio{self.steps}"), self.indices, cache.speakers, speaker_norm
            )

    def _audio(self, row: int) -> np.ndarray:
        """One clip's spectrogram images ``(T, H, W, C)``: uint8 from the cache, or float32 on the
        same 0..255 scale when standardised per speaker."""
        src = self.cache.array(f"audio{self.steps}")[row]
        if self._speaker_stats is None:
            return src
        out = standardise(src, self._speaker_stats[self.cache.clips[row].speaker])
        return np.round(out).astype(np.uint8) if self.output == "uint8" else out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = _BufferPool()  # buffers stay in their process
        return state

    def set_epoch(self, epoch: int) -> None:
        """Tell the dataset which epoch is running (passed to fusion, e.g. for RFAS redraws)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.indices.size)

    def _fuse_kwargs(self) -> dict:
        return {"redraw_each_epoch": True} if self.redraw_each_epoch else {}

    def _order(self, clip_id: str) -> list[tuple[str, int]]:
        """The output frames of a layout setting as ``(array, frame)`` pairs, read off ``fusion.fuse``.

        Frame ``k`` of the visual input is the constant image ``k / 2T`` and frame ``k`` of the audio
        input ``(T + k) / 2T``; a setting that only reorders frames returns these values unchanged.
        """
        t = self.steps
        ids = torch.arange(2 * t, dtype=torch.float32).view(2 * t, 1, 1, 1) / (2 * t)
        visual = ids[:t] if "visual" in self.modalities else None
        audio = ids[t:] if "audio" in self.modalities else None
        out = fusion.fuse(
            self.setting,
            visual,
            audio,
            clip_id=clip_id,
            seed=self.seed,
            epoch=self.epoch,
            **self._fuse_kwargs(),
        )
        got = out.reshape(out.shape[0], -1)[:, 0] * (2 * t)
        k = torch.round(got).to(torch.int64)
        if not torch.allclose(got, k.to(torch.float32), atol=1e-3):
            raise AssertionError(f"setting {self.setting!r} is not a pure frame layout")
        return [("video" if int(v) < t else "audio", int(v) % t) for v in k]

    def _images(self, name: str, row: int) -> Tensor:
        """``(T, C, H, W)`` float32 in [0, 1], converted straight from the memory map."""
        src = self._audio(row) if name.startswith("audio") else self.cache.array(name)[row]
        out = torch.from_numpy(self._pool.get((src.shape[0], src.shape[3], src.shape[1], src.shape[2])))
        out.numpy().transpose(0, 2, 3, 1)[...] = src
        return out.mul_(1.0 / 255.0)

    def _sum_item(self, row: int) -> Tensor:
        """SFAS and SFAS-raw from the uint8 frames: one integer add, then the usual two passes.

        ``SFAS`` is ``(V + A) / 2`` of [0, 1] images, i.e. ``(v + a) / 510`` of the uint8 ones; the
        authors' ``SFAS-raw`` adds in uint8, wrapping modulo 256. Equal to :func:`mmder.fusion.fuse`
        (checked by the tests).
        """
        v = self.cache.array(f"video{self.steps}")[row]
        a = self.cache.array(f"audio{self.steps}")[row]
        raw = self.setting == "SFAS-raw"
        total = np.add(v, a, dtype=np.uint8 if raw else np.uint16)  # uint8 wraps like the authors' code
        t, h, w, c = total.shape
        out = torch.from_numpy(self._pool.get((c, t, h, w)))
        out.numpy().transpose(1, 2, 3, 0)[...] = total
        return self._normalize_(out, 255.0 if raw else 510.0)

    def _normalize_(self, x: Tensor, unit: float) -> Tensor:
        """In place on ``(C, T, H, W)`` holding values of ``unit`` (255 for uint8, 1 for [0, 1]):
        ``(x / 255 - mean) / std`` as one fused pass when the std is the same on every channel."""
        scale = [s * (255.0 / unit) for s in self._scale]
        if all(s == scale[0] for s in scale):
            return torch.add(self._shift, x, alpha=scale[0], out=x)
        return x.mul_(torch.tensor(scale).view(-1, 1, 1, 1)).add_(self._shift)

    def _layout_item(self, row: int, clip_id: str) -> Tensor:
        order = self._fixed_order if self._fixed_order is not None else self._order(clip_id)
        src = {
            "video": self.cache.array(f"video{self.steps}")[row] if "visual" in self.modalities else None,
            "audio": self._audio(row) if "audio" in self.modalities else None,
        }
        first = src["video"] if src["video"] is not None else src["audio"]
        h, w, c = first.shape[1:]
        dtype = np.uint8 if self.output == "uint8" else np.float32
        out = torch.from_numpy(self._pool.get((c, len(order), h, w), dtype))
        view = out.numpy().transpose(1, 2, 3, 0)  # (T, H, W, C) view of the channels-first output
        for t, (name, k) in enumerate(order):
            view[t] = src[name][k]  # (uint8 -> float32 in the copy) straight from the page cache
        return out if self.output == "uint8" else self._normalize_(out, 255.0)

    def _stack_item(self, row: int) -> Tensor:
        """CFAS from the uint8 frames: face over spectrogram, (2H, W) -> (H, W) in integer arithmetic.

        :func:`mmder.fusion.cfas` resizes with antialiased bilinear interpolation; for a factor of
        exactly 2 that is the filter ``[1, 3, 3, 1] / 8`` over rows ``2i-1 .. 2i+2`` (``[3, 3, 1] / 7``
        and ``[1, 3, 3] / 7`` at the two edges), which uint16 sums give exactly (the tests compare
        with :func:`mmder.fusion.fuse`).
        """
        v = self.cache.array(f"video{self.steps}")[row]
        a = self.cache.array(f"audio{self.steps}")[row]
        stacked = np.concatenate([v, a], axis=1)  # (T, 2H, W, C)
        even, odd = stacked[:, 0::2], stacked[:, 1::2]
        acc = np.add(even, odd, dtype=np.uint16)
        acc *= 3
        acc[:, 1:] += odd[:, :-1]
        acc[:, :-1] += even[:, 1:]
        t, h, w, c = acc.shape
        out = torch.from_numpy(self._pool.get((c, t, h, w)))
        out.numpy().transpose(1, 2, 3, 0)[...] = acc
        self._normalize_(out, 8 * 255.0)
        edges = torch.from_numpy(acc[:, [0, h - 1]].astype(np.float32)).permute(3, 0, 1, 2).contiguous()
        out[:, :, [0, h - 1]] = self._normalize_(edges, 7 * 255.0)
        return out

    def _label(self, label_index: int) -> int:
        if self.targets is None:
            return label_index
        target = self.targets[label_index]
        if target < 0:
            raise ValueError(f"class {self.cache.classes[label_index]!r} maps to no trained class")
        return target

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        row = int(self.indices[i])
        clip = self.cache.clips[row]
        label = self._label(clip.label_index)
        if self._layout:
            return self._layout_item(row, clip.clip_id), label, row
        fast = self._speaker_stats is None  # the integer fast paths read the cache's uint8 audio
        if fast and self.setting in ("SFAS", "SFAS-raw") and self.modalities == ("visual", "audio"):
            return self._sum_item(row), label, row
        if fast and self.setting == "CFAS" and self.cache.image_size >= 2:
            return self._stack_item(row), label, row
        visual = self._images(f"video{self.steps}", row) if "visual" in self.modalities else None
        audio = self._images(f"audio{self.steps}", row) if "audio" in self.modalities else None
        x = fusion.fuse(
            self.setting,
            visual,
            audio,
            clip_id=clip.clip_id,
            seed=self.seed,
            epoch=self.epoch,
            **self._fuse_kwargs(),
        )
        del visual, audio  # their buffers go back to the pool
        out = torch.from_numpy(self._pool.get((x.shape[1], x.shape[0], *x.shape[2:])))
        out.copy_(x.permute(1, 0, 2, 3))  # (C, T, H, W)
        return self._normalize_(out, 1.0), label, row
