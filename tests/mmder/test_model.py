"""VideoMAE classifier: shapes, official parameter names, attention, positions, grad checkpointing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmder.models.classifier import (
    ModelSize,
    build_model,
    get_sinusoid_encoding_table,
)
from mmder.models.mae import build_pretrainer


def _official_keys(depth: int) -> set[str]:
    keys = {
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "fc_norm.weight",
        "fc_norm.bias",
        "head.weight",
        "head.bias",
    }
    for i in range(depth):
        keys |= {
            f"blocks.{i}.{n}"
            for n in (
                "norm1.weight",
                "norm1.bias",
                "attn.qkv.weight",
                "attn.q_bias",
                "attn.v_bias",
                "attn.proj.weight",
                "attn.proj.bias",
                "norm2.weight",
                "norm2.bias",
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias",
            )
        }
    return keys


@pytest.mark.parametrize(
    ("num_frames", "image_size", "patch_size", "tubelet_size"),
    [(4, 32, 16, 2), (16, 64, 16, 2), (8, 48, 16, 2), (2, 32, 8, 1), (6, 32, 16, 3)],
)
def test_shapes(num_frames: int, image_size: int, patch_size: int, tubelet_size: int) -> None:
    torch.manual_seed(0)
    model = build_model(
        "micro",
        6,
        image_size=image_size,
        num_frames=num_frames,
        patch_size=patch_size,
        tubelet_size=tubelet_size,
    ).eval()
    tokens = (num_frames // tubelet_size) * (image_size // patch_size) ** 2
    assert model.num_tokens == tokens
    assert model.embed_dim == 32 and model.depth == 2
    x = torch.randn(3, 3, num_frames, image_size, image_size)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (3, 32)
    assert logits.shape == (3, 6)
    assert torch.allclose(logits, model.forward_head(feats))


# Parameter counts of the VideoMAE paper's Kinetics-400 classifiers (ViT-S 22M, ViT-B 87M, ViT-L 305M,
# ViT-H 633M): one block more or less, another width or MLP ratio is off by far more than 1%.
@pytest.mark.parametrize(("size", "millions"), [("small", 22), ("base", 87), ("large", 305), ("huge", 633)])
def test_named_sizes_have_the_videomae_parameter_counts(size: str, millions: int) -> None:
    with torch.device("meta"):  # no memory, no init cost
        model = build_model(size, 400)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(millions * 1e6, rel=0.01)


# The MAE pre-trainers of the official checkpoints (MCG-NJU/videomae-base, -large), counted on
# transformers' VideoMAEForPreTraining with their configs: the decoders must match for them to load.
@pytest.mark.parametrize(("size", "count"), [("base", 94_210_944), ("large", 317_782_016)])
def test_pretrainer_sizes_match_the_official_checkpoints(size: str, count: int) -> None:
    with torch.device("meta"):
        pretrainer = build_pretrainer(size)
    assert sum(p.numel() for p in pretrainer.parameters()) == count


def test_unknown_size_names_the_allowed_ones() -> None:
    with pytest.raises(KeyError, match="allowed sizes: micro, tiny"):
        build_model("gigantic", 3)


def test_parameter_names_match_official_layout() -> None:
    model = build_model("micro", 4, image_size=32, num_frames=4)
    sd = model.state_dict()
    assert set(sd) == _official_keys(2)  # no pos_embed: it is a non-persistent buffer
    assert sd["patch_embed.proj.weight"].shape == (32, 3, 2, 16, 16)
    assert sd["blocks.0.attn.qkv.weight"].shape == (96, 32)
    assert sd["blocks.0.attn.q_bias"].shape == (32,)
    assert model.blocks[0].attn.qkv.bias is None
    assert model.blocks[0].norm1.eps == 1e-6 and model.fc_norm.eps == 1e-6
    assert model.head.weight.abs().max() < 1e-3  # shrunk by init_scale


def test_sinusoid_table_matches_official_numpy() -> None:
    n, d = 40, 24

    def angle(pos: int) -> list[float]:
        return [pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)]

    ref = np.array([angle(p) for p in range(n)])
    ref[:, 0::2] = np.sin(ref[:, 0::2])
    ref[:, 1::2] = np.cos(ref[:, 1::2])
    ours = get_sinusoid_encoding_table(n, d)
    assert ours.shape == (1, n, d)
    assert torch.allclose(ours[0], torch.from_numpy(ref).float(), atol=1e-6)


def test_other_input_shape_uses_its_own_position_table() -> None:
    torch.manual_seed(0)
    small = build_model("micro", 3, image_size=32, num_frames=4).eval()
    big = build_model("micro", 3, image_size=48, num_frames=8).eval()
    big.load_state_dict(small.state_dict())
    x = torch.randn(2, 3, 8, 48, 48)
    with torch.no_grad():
        assert torch.allclose(small(x), big(x), atol=1e-6)
    assert small.pos_embed.shape == (1, 8, 32)  # the stored table is untouched
    with pytest.raises(ValueError, match="not a multiple"):
        small(torch.randn(1, 3, 5, 32, 32))
    with pytest.raises(ValueError, match="expected input"):
        small(torch.randn(1, 4, 4, 32, 32))


def test_sdpa_equals_naive_attention() -> None:
    torch.manual_seed(0)
    model = build_model("micro", 3, image_size=32, num_frames=4)
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, 8, 32)
    q, k, v = attn.split_heads(x)
    # naive: separate q/k/v projections with a zero k bias
    w_q, w_k, w_v = attn.qkv.weight.chunk(3)
    q_ref = (x @ w_q.T + attn.q_bias).reshape(2, 8, 2, 16).transpose(1, 2)
    k_ref = (x @ w_k.T).reshape(2, 8, 2, 16).transpose(1, 2)
    v_ref = (x @ w_v.T + attn.v_bias).reshape(2, 8, 2, 16).transpose(1, 2)
    assert torch.allclose(q, q_ref, atol=1e-6) and torch.allclose(k, k_ref, atol=1e-6)
    weights = torch.softmax(q_ref @ k_ref.transpose(-2, -1) / math.sqrt(16), dim=-1)
    ref = attn.proj((weights @ v_ref).transpose(1, 2).reshape(2, 8, 32))
    assert torch.allclose(attn(x), ref, atol=1e-5)


def test_grad_checkpointing_same_output_and_grads() -> None:
    torch.manual_seed(0)
    model = build_model("micro", 3, image_size=32, num_frames=4, drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 4, 32, 32)

    def run(enable: bool) -> tuple[torch.Tensor, torch.Tensor]:
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(123)
        out = model(x)
        out.square().sum().backward()
        return out.detach(), model.blocks[0].attn.qkv.weight.grad.clone()

    out_a, grad_a = run(False)
    out_b, grad_b = run(True)
    assert torch.allclose(out_a, out_b, atol=1e-6)
    assert torch.allclose(grad_a, grad_b, atol=1e-6)


def test_drop_path_rates_increase_linearly() -> None:
    size = ModelSize(embed_dim=16, depth=5, num_heads=2, decoder_dim=8, decoder_depth=1, decoder_heads=1)
    model = build_model(size, 2, image_size=16, num_frames=2, drop_path_rate=0.4)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
