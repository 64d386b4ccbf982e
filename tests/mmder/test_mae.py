"""VideoMAE pre-training: tube masks, normalised-pixel loss, learning, encoder hand-over, HF parity."""

from __future__ import annotations

import pytest
import torch

from mmder.models.checkpoints import detect_layout, load_pretrained
from mmder.models.classifier import build_model
from mmder.models.mae import build_pretrainer, patchify, tube_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def test_tube_mask_ratio_and_same_spatial_mask_per_slice() -> None:
    g = torch.Generator().manual_seed(0)
    mask = tube_mask(4, 8, 196, ratio=0.9, generator=g)
    assert mask.shape == (4, 8 * 196) and mask.dtype == torch.bool
    per_slice = mask.view(4, 8, 196)
    assert torch.equal(per_slice, per_slice[:, :1].expand(-1, 8, -1))
    assert (per_slice.sum(-1) == int(0.9 * 196)).all()
    assert not torch.equal(per_slice[0, 0], per_slice[1, 0])  # a fresh mask per sample
    again = tube_mask(4, 8, 196, ratio=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    with pytest.raises(ValueError):
        tube_mask(1, 2, 4, ratio=1.0)


def test_patchify_token_order_matches_patch_embedding() -> None:
    x = torch.randn(1, 3, 4, 32, 32)
    p = patchify(x, patch_size=16, tubelet_size=2)
    assert p.shape == (1, 2 * 2 * 2, 2 * 16 * 16, 3)
    # token 5 = (t=1, h=0, w=1); its pixels ordered (dt, dy, dx) with channels last
    t, h, w = 1, 0, 1
    ref = (
        x[0, :, 2 * t : 2 * t + 2, 16 * h : 16 * h + 16, 16 * w : 16 * w + 16]
        .permute(1, 2, 3, 0)
        .reshape(-1, 3)
    )
    assert torch.equal(p[0, 5], ref)


def test_loss_is_finite_and_decreases() -> None:
    torch.manual_seed(0)
    model = build_pretrainer("micro", image_size=32, num_frames=4)
    x = torch.randn(2, 3, 4, 32, 32)
    mask = model.make_mask(2, ratio=0.75, generator=torch.Generator().manual_seed(0))
    target = model.target(x)
    assert target.shape == (2, 8, 2 * 16 * 16 * 3)
    # per-patch normalised: zero mean, unit (unbiased) std per channel within each tubelet
    per_channel = target.view(2, 8, -1, 3)
    assert torch.allclose(per_channel.mean(-2), torch.zeros(2, 8, 3), atol=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(x, mask)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_state_dict_is_official_pretrained_layout_and_encoder_hands_over() -> None:
    torch.manual_seed(0)
    pre = build_pretrainer("micro", image_size=32, num_frames=4)
    sd = pre.state_dict()
    assert detect_layout(sd) == "official-pretrained"
    assert {
        "mask_token",
        "encoder_to_decoder.weight",
        "encoder.norm.weight",
        "decoder.norm.weight",
        "decoder.head.weight",
        "decoder.blocks.0.attn.qkv.weight",
        "encoder.blocks.1.attn.q_bias",
    } <= set(sd)
    assert not any("pos_embed" in k for k in sd)
    assert sd["decoder.head.weight"].shape == (2 * 16 * 16 * 3, 16)

    clf = build_model("micro", 6, image_size=32, num_frames=4)
    enc = pre.encoder_state_dict()
    result = clf.load_state_dict(enc, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    clf_sd = clf.state_dict()
    for k, v in enc.items():
        assert torch.equal(clf_sd[k], v)
    # the same encoder computes the same tokens when nothing is masked (before the pre-training norm)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        tokens = clf.eval().forward_tokens(x)
        pre.encoder.norm.weight.fill_(1.0)
        pre.encoder.norm.bias.zero_()
        full = pre.eval().encoder(x, torch.zeros(1, 8, dtype=torch.bool))
    assert torch.allclose(torch.nn.functional.layer_norm(tokens, (32,), eps=1e-6), full, atol=1e-5)

    # and load_pretrained reads the pre-trainer's own checkpoint into a classifier
    clf2 = build_model("micro", 6, image_size=32, num_frames=4)
    report = load_pretrained(clf2, sd)
    assert "encoder.norm.weight" in report.unexpected
    assert report.missing == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]


def test_matches_huggingface_pretraining_loss() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.VideoMAEConfig(
        image_size=32,
        patch_size=16,
        num_channels=3,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        use_mean_pooling=False,
        norm_pix_loss=True,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )
    torch.manual_seed(0)
    hf = transformers.VideoMAEForPreTraining(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.normal_(0.0, 0.1)
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    ours = build_pretrainer(
        "micro", image_size=32, num_frames=4, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD
    ).eval()
    report = load_pretrained(ours, hf.state_dict())
    assert report.layout == "huggingface" and report.missing == [] and report.unexpected == []
    x = torch.randn(2, 3, 4, 32, 32)
    mask = ours.make_mask(2, ratio=0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(pixel_values=x.permute(0, 2, 1, 3, 4), bool_masked_pos=mask)
        pred, _ = ours.reconstruct(x, mask)
        loss = ours(x, mask)
    assert torch.allclose(pred, ref.logits, atol=1e-4)
    assert loss.item() == pytest.approx(ref.loss.item(), rel=1e-4)
