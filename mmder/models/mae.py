"""VideoMAE self-supervised pre-training: tube masking, a narrow decoder, and the normalised-pixel loss.

:class:`VideoMAEPretrainer` has the official pre-training state-dict layout (``encoder.*``,
``encoder_to_decoder.weight``, ``mask_token``, ``decoder.*``), so official pre-trained checkpoints load into
it and its weights load into the official code. It is built from the same blocks as
:class:`mmder.models.classifier.VideoMAEClassifier`, and
:meth:`VideoMAEPretrainer.encoder_state_dict` hands the encoder over in the classifier's naming for
fine-tuning or a linear probe.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from mmder.models.classifier import (
    LN_EPS,
    ModelSize,
    PatchEmbed,
    get_sinusoid_encoding_table,
    make_blocks,
    position_table,
    resolve_size,
    run_blocks,
)

__all__ = [
    "PretrainDecoder",
    "PretrainEncoder",
    "VideoMAEPretrainer",
    "build_pretrainer",
    "patchify",
    "tube_mask",
    "random_mask",
]


def random_mask(
    batch: int,
    num_tokens: int,
    ratio: float = 0.75,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean mask (B, N), True = masked: ``int(ratio * N)`` tokens drawn anywhere (MAE's masking).

    For spectrogram clips, whose "frames" are successive time windows rather than near-identical video
    frames, masking each tubelet independently is the natural choice (tube masking would hide the same
    frequency band in every window).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    num_masked = int(ratio * num_tokens)
    order = torch.rand(batch, num_tokens, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, num_tokens, dtype=torch.bool)
    mask.scatter_(1, order[:, :num_masked], True)
    return mask.to(device) if device is not None else mask


def tube_mask(
    batch: int,
    num_frames_tokens: int,
    num_patches_per_frame: int,
    ratio: float = 0.9,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean mask (B, T'*P), True = masked, with one random spatial mask repeated over every time slice.

    Repeating the spatial mask over time stops the model from copying a patch from its neighbouring frame
    (VideoMAE's tube masking). Every sample masks exactly ``int(ratio * P)`` patches per slice, so visible
    tokens of a batch reshape to a dense (B, N_visible, D) tensor.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    num_masked = int(ratio * num_patches_per_frame)
    noise = torch.rand(batch, num_patches_per_frame, generator=generator)
    order = noise.argsort(dim=1)
    spatial = torch.zeros(batch, num_patches_per_frame, dtype=torch.bool)
    spatial.scatter_(1, order[:, :num_masked], True)
    mask = spatial.unsqueeze(1).expand(batch, num_frames_tokens, num_patches_per_frame).reshape(batch, -1)
    return mask.to(device) if device is not None else mask


def patchify(x: torch.Tensor, *, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet*patch*patch, C) in token order, pixels ordered (t, h, w)."""
    b, c, t, h, w = x.shape
    x = x.reshape(
        b, c, t // tubelet_size, tubelet_size, h // patch_size, patch_size, w // patch_size, patch_size
    )
    # b c T p0 H p1 W p2 -> b T H W p0 p1 p2 c
    # (VideoMAE's 'b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c')
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, -1, tubelet_size * patch_size * patch_size, c)


class PretrainEncoder(nn.Module):
    """Encoder that sees only the visible tokens; ends with ``norm`` (the official pre-training encoder)."""

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        num_tokens: int,
        patch_size: int,
        tubelet_size: int,
        in_chans: int,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(
            patch_size=patch_size, tubelet_size=tubelet_size, in_chans=in_chans, embed_dim=embed_dim
        )
        self.register_buffer(
            "pos_embed", get_sinusoid_encoding_table(num_tokens, embed_dim), persistent=False
        )
        self.blocks = make_blocks(
            embed_dim, depth, num_heads, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate
        )
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = x + position_table(self.pos_embed, x.shape[1], x)
        b, _, d = x.shape
        x = x[~mask].reshape(b, -1, d)
        x = run_blocks(self.blocks, x, grad_checkpointing=self.grad_checkpointing)
        return self.norm(x)


class PretrainDecoder(nn.Module):
    """Narrow transformer that predicts the pixels of the masked tokens (the last ``n`` of its input)."""

    def __init__(
        self, *, dim: int, depth: int, num_heads: int, mlp_ratio: float, out_dim: int, drop_path_rate: float
    ) -> None:
        super().__init__()
        self.blocks = make_blocks(dim, depth, num_heads, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, out_dim)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, return_token_num: int) -> torch.Tensor:
        x = run_blocks(self.blocks, x, grad_checkpointing=self.grad_checkpointing)
        return self.head(self.norm(x[:, -return_token_num:]))


class VideoMAEPretrainer(nn.Module):
    """Masked autoencoder over tubelets; ``forward(x, mask)`` returns the reconstruction loss.

    The target is each masked tubelet's pixels normalised by their own mean and std per channel
    (``normalize_target``, VideoMAE's default). That normalisation makes the target independent of any
    per-channel affine input normalisation (up to the 1e-6 in the denominator), so ``pixel_mean/std`` to
    undo it are optional; give them to match the official recipe bit for bit.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        image_size: int = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        normalize_target: bool = True,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.depth = depth
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.in_chans = in_chans
        self.normalize_target = normalize_target
        t = num_frames // tubelet_size
        self.num_patches_per_frame = (image_size // patch_size) ** 2
        self.num_frames_tokens = t
        self.num_tokens = t * self.num_patches_per_frame
        self.encoder = PretrainEncoder(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            num_tokens=self.num_tokens,
            patch_size=patch_size,
            tubelet_size=tubelet_size,
            in_chans=in_chans,
            drop_path_rate=drop_path_rate,
        )
        self.encoder.patch_embed.grid(num_frames, image_size, image_size)
        self.encoder_to_decoder = nn.Linear(embed_dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", get_sinusoid_encoding_table(self.num_tokens, decoder_dim), persistent=False
        )
        self.decoder = PretrainDecoder(
            dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_heads,
            mlp_ratio=mlp_ratio,
            out_dim=tubelet_size * patch_size * patch_size * in_chans,
            drop_path_rate=drop_path_rate,
        )
        if (pixel_mean is None) != (pixel_std is None):
            raise ValueError("give both pixel_mean and pixel_std, or neither")
        shape = (1, in_chans, 1, 1, 1)
        mean = torch.tensor(pixel_mean if pixel_mean is not None else [0.0] * in_chans).reshape(shape)
        std = torch.tensor(pixel_std if pixel_std is not None else [1.0] * in_chans).reshape(shape)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # official pre-training init: xavier-uniform Linear weights, zero biases, unit LayerNorms, and a
        # trunc-normal(0.02) mask token.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        trunc_normal_(self.mask_token, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute encoder and decoder blocks in backward to save activation memory."""
        self.encoder.grad_checkpointing = enable
        self.decoder.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Names kept out of weight decay besides 1-D tensors (the official pre-training list)."""
        return {"pos_embed", "cls_token", "mask_token"}

    def make_mask(
        self,
        batch: int,
        ratio: float = 0.9,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        kind: str = "tube",
    ) -> torch.Tensor:
        """A tube (default) or ``kind='random'`` mask for this model's token grid (:func:`tube_mask`,
        :func:`random_mask`)."""
        if kind == "random":
            n = self.num_frames_tokens * self.num_patches_per_frame
            return random_mask(batch, n, ratio, generator, device)
        if kind != "tube":
            raise ValueError(f"mask kind must be 'tube' or 'random', got {kind!r}")
        return tube_mask(batch, self.num_frames_tokens, self.num_patches_per_frame, ratio, generator, device)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token pixel targets (B, N, tubelet*patch*patch*C), normalised per tubelet if configured."""
        with torch.no_grad():
            x = x * self.pixel_std.to(x) + self.pixel_mean.to(x)
            patches = patchify(x, patch_size=self.patch_size, tubelet_size=self.tubelet_size)
            if self.normalize_target:
                mean = patches.mean(dim=-2, keepdim=True)
                std = patches.var(dim=-2, unbiased=True, keepdim=True).sqrt()
                patches = (patches - mean) / (std + 1e-6)
            return patches.flatten(2)

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, targets) for the masked tokens, both (B, N_masked, tubelet*patch*patch*C)."""
        mask = mask.to(device=x.device, dtype=torch.bool)
        vis = self.encoder_to_decoder(self.encoder(x, mask))
        b, _, d = vis.shape
        pos = position_table(self.decoder_pos_embed, mask.shape[1], vis).expand(b, -1, -1)
        pos_vis = pos[~mask].reshape(b, -1, d)
        pos_mask = pos[mask].reshape(b, -1, d)
        full = torch.cat([vis + pos_vis, self.mask_token + pos_mask], dim=1)
        pred = self.decoder(full, pos_mask.shape[1])
        target = self.target(x)
        labels = target[mask].reshape(b, -1, target.shape[-1])
        return pred, labels

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the masked tokens only."""
        pred, labels = self.reconstruct(x, mask)
        return F.mse_loss(pred, labels)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder weights in the classifier's naming (no ``encoder.`` prefix, final ``norm`` left out).

        The classifier's ``fc_norm`` and ``head`` are not part of pre-training and stay at their init.
        """
        return {
            k[len("encoder.") :]: v.detach().clone()
            for k, v in self.state_dict().items()
            if k.startswith("encoder.") and not k.startswith("encoder.norm.")
        }


def build_pretrainer(
    size: str | ModelSize,
    *,
    image_size: int = 224,
    num_frames: int = 16,
    patch_size: int = 16,
    tubelet_size: int = 2,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
    normalize_target: bool = True,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
) -> VideoMAEPretrainer:
    """A pre-trainer whose encoder matches ``build_model(size, ...)``; decoder from the size table."""
    s = resolve_size(size)
    return VideoMAEPretrainer(
        embed_dim=s.embed_dim,
        depth=s.depth,
        num_heads=s.num_heads,
        mlp_ratio=s.mlp_ratio,
        decoder_dim=s.decoder_dim,
        decoder_depth=s.decoder_depth,
        decoder_heads=s.decoder_heads,
        image_size=image_size,
        num_frames=num_frames,
        patch_size=patch_size,
        tubelet_size=tubelet_size,
        in_chans=in_chans,
        drop_path_rate=drop_path_rate,
        normalize_target=normalize_target,
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
    )
