"""The eight input settings of MultiMAE-DER: how face frames and spectrogram images become one clip.

Every setting turns a visual sequence ``V`` (face frames) and an audio sequence ``A`` (spectrogram
images), both float32 tensors of shape ``(T, C, H, W)`` with values in ``[0, 1]``, into one
``(T_out, C, H, W)`` float32 tensor in ``[0, 1]`` that a VideoMAE encoder reads as a video.

Two families, told apart by :attr:`FusionSetting.steps`:

* 16-step settings (``video``, ``audio``, ``CFAS``, ``SFAS``, ``SFAS-raw``) consume the 16 face frames
  and the 16 spectrogram images of the 2/17-of-the-clip windows and fuse them frame by frame, so
  ``T_out = T``.
* 8-step settings (``FFLS``, ``FSLF``, ``OFOS``, ``RFAS``) consume 8 face frames sampled over the whole
  clip and the 8 spectrogram images of the 2/9 windows and lay them out along time, so
  ``T_out = 2 * T8``.

At the paper's sizes every setting gives 16 frames, so the encoder and its position table never change.
Use :func:`fuse` (one entry point) or :data:`SETTINGS` / :func:`get_setting` (one registry by name).

A setting is declared once, where its function is, with :func:`register_setting` (its steps, the inputs
it reads, whether it only lays frames out). Validating an experiment reads :data:`SETTINGS`, so this
module imports torch only inside the functions that fuse a clip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "FusionFn",
    "FusionSetting",
    "SETTINGS",
    "get_setting",
    "fuse",
    "rfas_permutation",
    "video_only",
    "audio_only",
    "cfas",
    "sfas",
    "sfas_raw",
    "ffls",
    "fslf",
    "ofos",
    "rfas",
]


class FusionFn(Protocol):
    """Signature shared by every strategy so the registry can call them alike.

    Only RFAS uses ``clip_id``, ``seed``, ``epoch`` and ``redraw_each_epoch``; the others ignore them.
    """

    def __call__(
        self,
        visual: Tensor | None,
        audio: Tensor | None,
        *,
        clip_id: str = "",
        seed: int = 0,
        epoch: int | None = None,
        redraw_each_epoch: bool = False,
    ) -> Tensor: ...


@dataclass(frozen=True)
class FusionSetting:
    """One named input setting.

    ``steps`` says which sequences the data pipeline must build for it: 16 (16 face frames + 16
    spectrograms of 2/17 windows) or 8 (8 face frames over the whole clip + 8 spectrograms of 2/9
    windows). ``modalities`` lists the inputs ``fn`` actually reads.
    """

    name: str
    steps: int
    modalities: tuple[str, ...]
    fn: FusionFn
    doc: str
    layout: bool = False  # only places whole frames: the uint8 fast path can copy them (data.dataset)
    paper: bool = True  # one of the paper's eight settings (the default grid); False: a variant


SETTINGS: dict[str, FusionSetting] = {}  # the registry, in declaration order
_V: tuple[str, ...] = ("visual",)
_A: tuple[str, ...] = ("audio",)
_VA: tuple[str, ...] = ("visual", "audio")


def register_setting(
    name: str, *, steps: int, inputs: tuple[str, ...], doc: str, layout: bool = False, paper: bool = True
) -> Callable[[FusionFn], FusionFn]:
    """Decorator: declare the input setting ``name`` with the function that builds it."""

    def deco(fn: FusionFn) -> FusionFn:
        if name in SETTINGS and SETTINGS[name].fn is not fn:
            raise ValueError(f"fusion setting {name!r} is already registered")
        SETTINGS[name] = FusionSetting(name, steps, inputs, fn, doc, layout, paper)
        return fn

    return deco


# --------------------------------------------------------------------------------------------------
# strategies (pure: no state, no in-place change of the inputs)
# --------------------------------------------------------------------------------------------------


@register_setting("video", steps=16, inputs=_V, doc="visual only: the 16 face frames", layout=True)
def video_only(
    visual: Tensor | None,
    audio: Tensor | None = None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
) -> Tensor:
    """Visual-only baseline: the face frames unchanged (audio is ignored)."""
    import torch

    assert visual is not None
    return visual.to(torch.float32)


@register_setting("audio", steps=16, inputs=_A, doc="audio only: the 16 spectrogram images", layout=True)
def audio_only(
    visual: Tensor | None,
    audio: Tensor | None = None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
) -> Tensor:
    """Audio-only baseline: the spectrogram images unchanged (visual is ignored)."""
    import torch

    assert audio is not None
    return audio.to(torch.float32)


@register_setting("CFAS", steps=16, inputs=_VA, doc="face over spectrogram per step, resized to one frame")
def cfas(
    visual: Tensor | None,
    audio: Tensor | None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
) -> Tensor:
    """CFAS: X_i = Concat(V_i, A_i), face on top and spectrogram below, as in the authors' code.

    The (C, 2H, W) stack is resized back to (H, W) with antialiased bilinear interpolation so the
    encoder input size does not change; each image is squeezed to half its height.
    """
    import torch
    import torch.nn.functional as F

    assert visual is not None and audio is not None
    h, w = visual.shape[-2:]
    stacked = torch.cat([visual, audio], dim=-2).to(torch.float32)  # (T, C, 2H, W)
    out = F.interpolate(stacked, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    # The triangle filter is a convex combination; the clamp only removes float round-off.
    return out.clamp_(0.0, 1.0)


@register_setting(
    "SFAS", steps=16, inputs=_VA, doc="per-step mean of face and spectrogram (slides' equation)"
)
def sfas(
    visual: Tensor | None,
    audio: Tensor | None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
) -> Tensor:
    """SFAS as the slides write it: X_i = Add(Norm(V_i), Norm(A_i)).

    The inputs are already normalised to [0, 1]; the sum is taken as the mean (V_i + A_i) / 2 so the
    result stays in [0, 1] and the encoder's pixel normalisation applies unchanged. (A plain sum would
    only rescale by 2, which the later mean/std normalisation would not undo.)
    """
    import torch

    assert visual is not None and audio is not None
    return (visual.to(torch.float32) + audio.to(torch.float32)) * 0.5


@register_setting(
    "SFAS-raw", steps=16, inputs=_VA, doc="per-step uint8 sum with wrap-around (authors' code)", paper=False
)
def sfas_raw(
    visual: Tensor | None,
    audio: Tensor | None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
) -> Tensor:
    """SFAS as the authors' code does it: raw uint8 images added with uint8 wrap-around (modulo 256).

    Each input is rounded to uint8 (x * 255), the two are added in uint8 so bright pixels wrap to dark
    ones (200 + 100 -> 44), and the result is divided by 255. Kept to reproduce the published number.
    """
    import torch

    assert visual is not None and audio is not None

    def to_u8(x: Tensor) -> Tensor:
        return torch.round(x.to(torch.float32) * 255.0).clamp_(0.0, 255.0).to(torch.uint8)

    summed = to_u8(visual) + to_u8(audio)  # uint8 + uint8 stays uint8 and wraps modulo 256
    return summed.to(torch.float32) / 255.0


@register_setting("FFLS", steps=8, inputs=_VA, doc="8 face frames then 8 spectrograms", layout=True)
def ffls(
    visual: Tensor | None,
    audio: Tensor | None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
) -> Tensor:
    """FFLS: V_1..V_8 then A_1..A_8 (visual first). With tubelet 2 no tubelet mixes modalities."""
    import torch

    assert visual is not None and audio is not None
    return torch.cat([visual, audio], dim=0).to(torch.float32)


@register_setting("FSLF", steps=8, inputs=_VA, doc="8 spectrograms then 8 face frames", layout=True)
def fslf(
    visual: Tensor | None,
    audio: Tensor | None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
) -> Tensor:
    """FSLF: A_1..A_8 then V_1..V_8 (audio first); the paper's best setting."""
    import torch

    assert visual is not None and audio is not None
    return torch.cat([audio, visual], dim=0).to(torch.float32)


@register_setting("OFOS", steps=8, inputs=_VA, doc="face and spectrogram interleaved", layout=True)
def ofos(
    visual: Tensor | None,
    audio: Tensor | None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
) -> Tensor:
    """OFOS: V_1, A_1, V_2, A_2, ..., V_8, A_8 (interleaved).

    With VideoMAE's tubelet size 2 every tubelet holds one face and one spectrogram, so the patch
    embedding itself mixes the modalities, unlike FFLS/FSLF where each tubelet is single-modality.
    """
    import torch

    assert visual is not None and audio is not None
    t, c, h, w = visual.shape
    return torch.stack([visual, audio], dim=1).reshape(2 * t, c, h, w).to(torch.float32)


def _stable_seed(*parts: object) -> int:
    """A 63-bit seed from a SHA-256 of the parts: identical across processes and Python runs
    (Python's ``hash()`` of a str is salted per process, so it cannot be used)."""
    text = "\x1f".join(repr(p) for p in parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def rfas_permutation(clip_id: str, seed: int, n: int = 16, epoch: int | None = None) -> Tensor:
    """The RFAS frame order of one clip: a permutation of ``range(n)`` (int64).

    Drawn from a ``torch.Generator`` seeded by a stable hash of ``(seed, clip_id)``, so a clip keeps
    one order across epochs, workers and processes, like the authors' preprocessing (one permutation
    per clip, drawn once). Passing ``epoch`` mixes it into the hash and gives a new order per epoch.
    """
    import torch

    if n < 1:
        raise ValueError(f"rfas_permutation: n must be >= 1, got {n}")
    parts: tuple[object, ...] = ("rfas", int(seed), str(clip_id))
    if epoch is not None:
        parts = (*parts, "epoch", int(epoch))
    gen = torch.Generator(device="cpu")
    gen.manual_seed(_stable_seed(*parts))
    return torch.randperm(n, generator=gen)


@register_setting(
    "RFAS", steps=8, inputs=_VA, doc="8 faces + 8 spectrograms in a per-clip random order", layout=True
)
def rfas(
    visual: Tensor | None,
    audio: Tensor | None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
) -> Tensor:
    """RFAS: the 8 V + 8 A frames (concatenated V then A) in a random order fixed per clip.

    The order comes from :func:`rfas_permutation` keyed by ``(seed, clip_id)``. ``epoch`` is used only
    when ``redraw_each_epoch`` is true (then it is required), so a training loop can always pass it.
    """
    import torch

    assert visual is not None and audio is not None
    if redraw_each_epoch and epoch is None:
        raise ValueError("RFAS with redraw_each_epoch=True needs an epoch")
    frames = torch.cat([visual, audio], dim=0).to(torch.float32)
    perm = rfas_permutation(clip_id, seed, n=frames.shape[0], epoch=epoch if redraw_each_epoch else None)
    return frames[perm]


def get_setting(name: str) -> FusionSetting:
    """The setting called ``name`` (case-sensitive); ``KeyError`` listing the allowed names otherwise."""
    try:
        return SETTINGS[name]
    except KeyError:
        allowed = ", ".join(SETTINGS)
        raise KeyError(f"unknown fusion setting {name!r}; allowed: {allowed}") from None


def _check_seq(name: str, x: Tensor | None, setting: FusionSetting) -> Tensor:
    from torch import Tensor

    if x is None:
        raise ValueError(f"fusion setting {setting.name!r} needs the {name} sequence, got None")
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (T, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor with values in [0, 1], got dtype {x.dtype}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} has no frames: shape {tuple(x.shape)}")
    return x


def fuse(
    setting: str,
    visual: Tensor | None,
    audio: Tensor | None,
    *,
    clip_id: str = "",
    seed: int = 0,
    epoch: int | None = None,
    redraw_each_epoch: bool = False,
    strict: bool = False,
) -> Tensor:
    """Apply the setting called ``setting`` to one clip; returns ``(T_out, C, H, W)`` float32.

    ``visual`` and ``audio`` are ``(T, C, H, W)`` float tensors in [0, 1]. The single-modality
    settings accept ``None`` for the other input (and ignore it if given). Two-modality settings need
    the same ``(T, C, H, W)`` for both: the 16-step ones fuse frame ``i`` with frame ``i`` and the
    8-step ones take equal numbers of faces and spectrograms. With ``strict=True`` ``T`` must also
    equal ``setting.steps`` (16 or 8), which catches feeding 16-frame sequences to an 8-step
    setting (that would give 32 frames). ``clip_id``, ``seed``, ``epoch`` and ``redraw_each_epoch``
    only matter for RFAS. Raises ``KeyError`` for an unknown name and ``ValueError`` for bad shapes.
    """
    spec = get_setting(setting)
    seqs: dict[str, Tensor] = {}
    for mod in spec.modalities:
        seqs[mod] = _check_seq(mod, visual if mod == "visual" else audio, spec)
    if len(seqs) == 2:
        v, a = seqs["visual"], seqs["audio"]
        if v.shape[1:] != a.shape[1:]:
            raise ValueError(
                f"{spec.name}: visual and audio frames must have the same (C, H, W), got "
                f"{tuple(v.shape[1:])} and {tuple(a.shape[1:])}"
            )
        if v.shape[0] != a.shape[0]:
            raise ValueError(
                f"{spec.name} ({spec.steps}-step) needs as many visual as audio frames, got "
                f"{v.shape[0]} visual and {a.shape[0]} audio"
            )
    if strict:
        for mod, x in seqs.items():
            if x.shape[0] != spec.steps:
                raise ValueError(
                    f"{spec.name} is a {spec.steps}-step setting: {mod} must have {spec.steps} frames, "
                    f"got {x.shape[0]}"
                )
    return spec.fn(
        seqs.get("visual"),
        seqs.get("audio"),
        clip_id=clip_id,
        seed=seed,
        epoch=epoch,
        redraw_each_epoch=redraw_each_epoch,
    )
