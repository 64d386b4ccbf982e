"""Layer-wise lr decay groups and the trainable subsets of the recipes."""

from __future__ import annotations

import pytest
import torch

from mmder.models.classifier import build_model
from mmder.train.optim import count_trainable, layer_id, param_groups_layer_decay, trainable_parameters


def _micro() -> torch.nn.Module:
    return build_model("micro", 7, image_size=32, num_frames=4)


def test_layer_decay_scales_follow_videomae_rule() -> None:
    model = _micro()
    depth = model.depth  # 2
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75)
    # by hand for depth 2 and decay 0.75: the head trains at the full lr, each layer below at 3/4 of
    # the one above, down to the patch embedding at 0.75 ** 3
    by_hand = {"head": 1.0, "fc_norm": 1.0, "blocks.1": 0.75, "blocks.0": 0.5625, "patch_embed": 0.421875}
    seen = set()
    for g in groups:
        assert set(g) >= {"params", "weight_decay", "lr_scale", "group_name"}
        for n in g["param_names"]:
            (prefix,) = [p for p in by_hand if n.startswith(f"{p}.")]
            assert g["lr_scale"] == pytest.approx(by_hand[prefix]), n
        seen.update(g["param_names"])
    assert seen == {n for n, _ in model.named_parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    names = {n: g for g in groups for n in g["param_names"]}
    assert layer_id("patch_embed.proj.weight", depth) == 0
    assert layer_id("blocks.0.attn.qkv.weight", depth) == 1
    assert layer_id("blocks.1.mlp.fc2.weight", depth) == 2
    assert layer_id("fc_norm.weight", depth) == 3 and layer_id("head.weight", depth) == 3
    assert names["head.weight"]["lr_scale"] == 1.0
    assert names["patch_embed.proj.weight"]["lr_scale"] == pytest.approx(0.75**3)


def test_no_weight_decay_on_biases_and_norms() -> None:
    model = _micro()
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.7)
    for g in groups:
        for name, p in zip(g["param_names"], g["params"], strict=True):
            no_decay = p.ndim <= 1 or name.endswith(".bias")
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert wd["blocks.0.attn.q_bias"] == 0.0 and wd["blocks.0.attn.v_bias"] == 0.0
    assert wd["blocks.0.norm1.weight"] == 0.0 and wd["fc_norm.weight"] == 0.0
    assert wd["blocks.0.attn.qkv.weight"] == 0.05 and wd["head.weight"] == 0.05
    assert wd["patch_embed.proj.weight"] == 0.05


def test_linear_probe_count_for_large_with_7_classes() -> None:
    with torch.device("meta"):
        model = build_model("large", 7)
    params = trainable_parameters(model, "linear_probe")
    assert sum(p.numel() for p in params) == 9_223 == 2 * 1024 + 1024 * 7 + 7
    assert count_trainable(model) == 9_223
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75)
    assert {n for g in groups for n in g["param_names"]} == {
        "fc_norm.weight",
        "fc_norm.bias",
        "head.weight",
        "head.bias",
    }


def test_partial_and_finetune_modes() -> None:
    model = _micro()
    total = sum(p.numel() for p in model.parameters())
    probe = sum(p.numel() for p in trainable_parameters(model, "linear_probe"))
    block = sum(p.numel() for p in model.blocks[1].parameters())
    assert sum(p.numel() for p in trainable_parameters(model, "partial:1")) == probe + block
    assert all(not p.requires_grad for p in model.blocks[0].parameters())
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    assert sum(p.numel() for p in trainable_parameters(model, "partial:0")) == probe
    assert sum(p.numel() for p in trainable_parameters(model, "finetune")) == total
    for bad in ("partial:3", "partial:x", "frozen"):
        with pytest.raises(ValueError):
            trainable_parameters(model, bad)
