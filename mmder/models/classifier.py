"""VideoMAE ViT encoder with a mean-pooling classification head.

The module layout mirrors the official VideoMAE fine-tuning model (MCG-NJU, ``modeling_finetune.py``) name
for name, so an official fine-tuned checkpoint loads with ``load_state_dict`` directly and the converters in
:mod:`mmder.models.checkpoints` only have to rename keys of the other layouts.

Position embeddings are the fixed 1-D sin-cos table of VideoMAE, indexed by the flattened token index
(time-major, then rows, then columns). It is a non-persistent buffer: it is never stored in or read from a
checkpoint. Because it is a closed-form function of the token count, a model built (or fed) with another
frame count or image size simply uses the table for its own number of tokens. That is what the official
code does when it is built for another input size; there is no learned table to interpolate. Note that the
table is 1-D, so for another grid a token at (t, h, w) gets the code of its flat index, not of the
"same place" in the 16x224x224 grid.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmder.registry import MODEL_SIZES, ModelSize

__all__ = [
    "MODEL_SIZES",
    "Attention",
    "Block",
    "ModelSize",
    "PatchEmbed",
    "VideoMAEClassifier",
    "build_model",
    "get_sinusoid_encoding_table",
    "resolve_size",
]

LN_EPS = 1e-6


def resolve_size(size: str | ModelSize) -> ModelSize:
    """Look a size up by name (a ``ModelSize`` passes through), naming the allowed sizes on a miss."""
    if isinstance(size, ModelSize):
        return size
    try:
        return MODEL_SIZES[size]
    except KeyError:
        raise KeyError(f"unknown model size {size!r}; allowed sizes: {', '.join(MODEL_SIZES)}") from None


@lru_cache(maxsize=32)
def _sinusoid_table_cpu(n_position: int, d_hid: int) -> torch.Tensor:
    pos = torch.arange(n_position, dtype=torch.float64, device="cpu")[:, None]
    j = torch.arange(d_hid, dtype=torch.float64, device="cpu")
    angles = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / d_hid)
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float().unsqueeze(0)


def get_sinusoid_encoding_table(n_position: int, d_hid: int) -> torch.Tensor:
    """VideoMAE's fixed sin-cos table, shape (1, n_position, d_hid), float32 on the CPU.

    Computed in float64 like the official numpy code, so the values agree with it to float32 rounding.
    """
    return _sinusoid_table_cpu(int(n_position), int(d_hid)).clone()


class PatchEmbed(nn.Module):
    """Tubelet embedding: a Conv3d with kernel = stride = (tubelet, patch, patch) on (B, C, T, H, W)."""

    def __init__(self, *, patch_size: int, tubelet_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.in_chans = in_chans
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k)

    def grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid (T', H', W') for an input shape; refuses shapes the tubelets do not tile."""
        if num_frames % self.tubelet_size or height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"input {num_frames}x{height}x{width} (TxHxW) is not a multiple of the tubelet "
                f"{self.tubelet_size}x{self.patch_size}x{self.patch_size}"
            )
        return num_frames // self.tubelet_size, height // self.patch_size, width // self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input (B, {self.in_chans}, T, H, W), got {tuple(x.shape)}")
        self.grid(*x.shape[2:])
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with VideoMAE's bias layout.

    The qkv projection has no bias of its own; separate ``q_bias`` and ``v_bias`` are concatenated with a
    zero k bias (a key bias only shifts every logit of a query by the same amount, so it is redundant).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def qkv_bias(self) -> torch.Tensor | None:
        """The full (3D,) bias, k part zero (kept out of the graph so it is never trained)."""
        if self.q_bias is None or self.v_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, heads, N, head_dim); exposed so tests can check SDPA against naive attention."""
        b, n, _ = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.split_heads(x)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-LN transformer block: x + DropPath(MSA(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, *, grad_checkpointing: bool) -> torch.Tensor:
    """Apply blocks in order, recomputing activations in backward when checkpointing is on (saves memory)."""
    use_ckpt = grad_checkpointing and torch.is_grad_enabled()
    for blk in blocks:
        x = checkpoint(blk, x, use_reentrant=False) if use_ckpt else blk(x)
    return x


def make_blocks(
    dim: int, depth: int, num_heads: int, *, mlp_ratio: float, drop_path_rate: float, qkv_bias: bool = True
) -> nn.ModuleList:
    """``depth`` blocks with drop-path rates rising linearly from 0 to ``drop_path_rate`` (as VideoMAE)."""
    # plain Python (not torch.linspace) so a model can be built on the meta device
    dpr = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
    return nn.ModuleList(
        Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i]) for i in range(depth)
    )


def position_table(buffer: torch.Tensor, num_tokens: int, like: torch.Tensor) -> torch.Tensor:
    """The buffer when the token count matches, else a fresh table for ``num_tokens`` (other T or H, W)."""
    if buffer.shape[1] != num_tokens:
        buffer = _sinusoid_table_cpu(num_tokens, buffer.shape[2])
    return buffer.to(device=like.device, dtype=like.dtype)


class VideoMAEClassifier(nn.Module):
    """VideoMAE ViT + mean pooling + ``fc_norm`` + linear ``head``; parameter names as the official model.

    Input (B, C, T, H, W) float, output logits (B, num_classes). ``forward_features`` gives the pooled,
    normalised (B, D) features (cacheable for a frozen-encoder linear probe); ``forward_head`` maps them
    to logits.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        image_size: int = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        head_dropout: float = 0.0,
        init_scale: float = 0.001,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.image_size = image_size
        self.num_frames = num_frames
        self.patch_embed = PatchEmbed(
            patch_size=patch_size, tubelet_size=tubelet_size, in_chans=in_chans, embed_dim=embed_dim
        )
        t, h, w = self.patch_embed.grid(num_frames, image_size, image_size)
        self.num_tokens = t * h * w
        self.register_buffer(
            "pos_embed", get_sinusoid_encoding_table(self.num_tokens, embed_dim), persistent=False
        )
        self.blocks = make_blocks(
            embed_dim, depth, num_heads, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, qkv_bias=qkv_bias
        )
        self.fc_norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.head_drop = nn.Dropout(head_dropout) if head_dropout > 0 else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes)
        self.grad_checkpointing = False
        self._init_weights(init_scale)

    def _init_weights(self, init_scale: float) -> None:
        # official fine-tuning init: trunc-normal(0.02) Linear weights, zero biases, unit LayerNorms, and a
        # head shrunk by init_scale so the first logits are near zero.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.head.weight.mul_(init_scale)
            self.head.bias.mul_(init_scale)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in backward (torch.utils.checkpoint): less activation memory, ~30% slower."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Names kept out of weight decay besides 1-D tensors (position tables; none are parameters here)."""
        return {"pos_embed", "cls_token"}

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Token features (B, N, D) after the last block."""
        x = self.patch_embed(x)
        x = x + position_table(self.pos_embed, x.shape[1], x)
        return run_blocks(self.blocks, x, grad_checkpointing=self.grad_checkpointing)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D): mean over tokens, then ``fc_norm``."""
        return self.fc_norm(self.forward_tokens(x).mean(1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features (head dropout is active in train mode only)."""
        return self.head(self.head_drop(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(
    size: str | ModelSize,
    num_classes: int,
    *,
    image_size: int = 224,
    num_frames: int = 16,
    patch_size: int = 16,
    tubelet_size: int = 2,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
    head_dropout: float = 0.0,
    init_scale: float = 0.001,
) -> VideoMAEClassifier:
    """Build a classifier of a named size (``MODEL_SIZES``); unknown names raise KeyError listing them."""
    s = resolve_size(size)
    return VideoMAEClassifier(
        num_classes=num_classes,
        embed_dim=s.embed_dim,
        depth=s.depth,
        num_heads=s.num_heads,
        mlp_ratio=s.mlp_ratio,
        image_size=image_size,
        num_frames=num_frames,
        patch_size=patch_size,
        tubelet_size=tubelet_size,
        in_chans=in_chans,
        drop_path_rate=drop_path_rate,
        head_dropout=head_dropout,
        init_scale=init_scale,
    )
