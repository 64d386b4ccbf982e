"""Checkpoint layouts: HuggingFace, official fine-tuned and pre-trained, ours; refusals; conversion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmder.models.checkpoints import convert_checkpoint, detect_layout, infer_config, load_pretrained
from mmder.models.classifier import build_model

transformers = pytest.importorskip("transformers")

NUM_CLASSES = 5


def _hf_classifier() -> torch.nn.Module:
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
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        use_mean_pooling=True,
        num_labels=NUM_CLASSES,
    )
    torch.manual_seed(0)
    model = transformers.VideoMAEForVideoClassification(cfg).eval()
    with torch.no_grad():  # random values everywhere, biases included, so every tensor is checked
        for p in model.parameters():
            p.normal_(0.0, 0.1)
        for name, p in model.named_parameters():
            if "layernorm" in name or "fc_norm" in name:
                p.add_(1.0 if name.endswith("weight") else 0.0)
    return model


def _ours() -> torch.nn.Module:
    return build_model("micro", NUM_CLASSES, image_size=32, num_frames=4).eval()


def _input() -> torch.Tensor:
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))


def _hf_logits(hf: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits  # HF wants (B, T, C, H, W)


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _hf_to_official(sd: dict[str, torch.Tensor], depth: int = 2) -> dict[str, torch.Tensor]:
    """Independent hand-written renaming HF -> official fine-tuned names."""
    out = {
        "patch_embed.proj.weight": sd["videomae.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["videomae.embeddings.patch_embeddings.projection.bias"],
        "fc_norm.weight": sd["fc_norm.weight"],
        "fc_norm.bias": sd["fc_norm.bias"],
        "head.weight": sd["classifier.weight"],
        "head.bias": sd["classifier.bias"],
    }
    for i in range(depth):
        h = f"videomae.encoder.layer.{i}."
        a = h + "attention.attention."
        o = f"blocks.{i}."
        out[o + "attn.qkv.weight"] = torch.cat(
            [sd[a + "query.weight"], sd[a + "key.weight"], sd[a + "value.weight"]]
        )
        out[o + "attn.q_bias"] = sd[a + "query.bias"]
        out[o + "attn.v_bias"] = sd[a + "value.bias"]
        for src, dst in (
            ("attention.output.dense", "attn.proj"),
            ("intermediate.dense", "mlp.fc1"),
            ("output.dense", "mlp.fc2"),
            ("layernorm_before", "norm1"),
            ("layernorm_after", "norm2"),
        ):
            for p in ("weight", "bias"):
                out[f"{o}{dst}.{p}"] = sd[f"{h}{src}.{p}"]
    return out


def test_huggingface_layout_gives_the_same_logits() -> None:
    hf = _hf_classifier()
    sd = hf.state_dict()
    assert "videomae.encoder.layer.0.attention.attention.query.bias" in sd  # transformers 5.x naming
    assert detect_layout(sd) == "huggingface"
    model = _ours()
    report = load_pretrained(model, sd)
    assert report.layout == "huggingface"
    assert report.missing == [] and report.unexpected == [] and report.skipped == []
    assert len(report.loaded) == len(model.state_dict())
    x = _input()
    assert torch.allclose(_logits(model, x), _hf_logits(hf, x), atol=1e-4)


def test_legacy_huggingface_q_bias_names() -> None:
    hf = _hf_classifier()
    legacy = {}
    for k, v in hf.state_dict().items():
        k = k.replace("attention.attention.query.bias", "attention.attention.q_bias")
        legacy[k.replace("attention.attention.value.bias", "attention.attention.v_bias")] = v
    model = _ours()
    report = load_pretrained(model, legacy)
    assert report.missing == [] and report.unexpected == []
    x = _input()
    assert torch.allclose(_logits(model, x), _hf_logits(hf, x), atol=1e-4)


def test_official_finetuned_layout_gives_the_same_logits() -> None:
    hf = _hf_classifier()
    official = _hf_to_official(hf.state_dict())
    assert detect_layout(official) == "official-finetuned"
    for wrapped in ({"model": official}, {"module": {f"module.{k}": v for k, v in official.items()}}):
        model = _ours()
        report = load_pretrained(model, wrapped)
        assert report.layout == "official-finetuned"
        assert report.missing == [] and report.unexpected == []
        x = _input()
        assert torch.allclose(_logits(model, x), _hf_logits(hf, x), atol=1e-4)


def test_official_pretrained_encoder_loads_exactly() -> None:
    hf = _hf_classifier()
    official = _hf_to_official(hf.state_dict())
    encoder = {f"encoder.{k}": v for k, v in official.items() if not k.startswith(("fc_norm.", "head."))}
    ckpt = {
        **encoder,
        "encoder.norm.weight": torch.full((32,), 2.0),
        "encoder.norm.bias": torch.ones(32),
        "encoder.pos_embed": torch.zeros(1, 8, 32),
        "encoder_to_decoder.weight": torch.randn(16, 32),
        "mask_token": torch.zeros(1, 1, 16),
        "decoder.blocks.0.norm1.weight": torch.ones(16),
        "decoder.norm.weight": torch.ones(16),
        "decoder.head.weight": torch.randn(1536, 16),
        "decoder.head.bias": torch.zeros(1536),
    }
    assert detect_layout(ckpt) == "official-pretrained"
    model = _ours()
    fresh_fc_norm = model.fc_norm.weight.detach().clone()
    report = load_pretrained(model, {"model": ckpt})
    assert report.layout == "official-pretrained"
    sd = model.state_dict()
    for key, value in encoder.items():
        assert torch.equal(sd[key[len("encoder.") :]], value), key
    assert torch.equal(model.fc_norm.weight, fresh_fc_norm)  # encoder.norm is NOT mapped to fc_norm
    assert report.missing == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert "encoder.norm.weight" in report.unexpected and "decoder.head.weight" in report.unexpected
    assert "mask_token" in report.unexpected
    summary = report.summary()
    assert "official-pretrained" in summary and "norm" in summary and "position table" in summary


def test_wrong_shape_is_refused_with_the_key_named() -> None:
    hf = _hf_classifier()
    patch8 = build_model("micro", NUM_CLASSES, image_size=32, num_frames=4, patch_size=8)
    with pytest.raises(
        ValueError, match=r"patch_embed\.proj\.weight.*\[32, 3, 2, 16, 16\].*\[32, 3, 2, 8, 8\]"
    ):
        load_pretrained(patch8, hf.state_dict())
    wider = build_model("tiny", NUM_CLASSES, image_size=32, num_frames=4)
    with pytest.raises(ValueError, match="patch_embed.proj.weight"):
        load_pretrained(wider, hf.state_dict())


def test_head_with_other_class_count() -> None:
    hf = _hf_classifier()
    model = build_model("micro", 7, image_size=32, num_frames=4)
    head_before = model.head.weight.detach().clone()
    report = load_pretrained(model, hf.state_dict())
    assert report.skipped == ["head.bias", "head.weight"]
    assert torch.equal(model.head.weight, head_before)
    assert "5 classes" in report.summary() and "7" in report.summary()
    with pytest.raises(ValueError, match="head.weight"):
        load_pretrained(
            build_model("micro", 7, image_size=32, num_frames=4), hf.state_dict(), skip_head_mismatch=False
        )
    lenient = build_model("micro", NUM_CLASSES, image_size=32, num_frames=4, patch_size=8)
    report = load_pretrained(lenient, hf.state_dict(), strict_shapes=False)
    assert "patch_embed.proj.weight" in report.skipped and report.loaded


def test_unrecognised_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="unrecognised"):
        detect_layout({"foo.weight": torch.zeros(2)})


def test_files_and_convert_round_trip(tmp_path: Path) -> None:
    hf = _hf_classifier()
    x = _input()
    expected = _hf_logits(hf, x)
    src = tmp_path / "hf.bin"
    torch.save(hf.state_dict(), src)
    dst = tmp_path / "ours.pt"
    report = convert_checkpoint(src, dst)
    assert report.layout == "huggingface" and report.missing == []
    written = torch.load(dst, weights_only=True)
    assert detect_layout(written) == "ours"
    assert written["mmder"]["size"] == "micro" and written["mmder"]["num_classes"] == NUM_CLASSES
    assert written["mmder"]["num_heads"] == 2 and written["mmder"]["patch_size"] == 16
    model = _ours()
    report = load_pretrained(model, dst)
    assert report.layout == "ours" and report.missing == [] and report.unexpected == []
    assert torch.allclose(_logits(model, x), expected, atol=1e-4)

    safetensors = pytest.importorskip("safetensors.torch")
    st = tmp_path / "hf.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(st))
    model = _ours()
    assert load_pretrained(model, st).layout == "huggingface"
    assert torch.allclose(_logits(model, x), expected, atol=1e-4)


def test_infer_config_needs_a_heads_hint_for_unknown_sizes() -> None:
    hf = _hf_classifier()
    cfg = infer_config(hf.state_dict())
    assert (cfg["size"], cfg["embed_dim"], cfg["depth"], cfg["num_heads"]) == ("micro", 32, 2, 2)
    assert cfg["mlp_ratio"] == 4.0 and cfg["tubelet_size"] == 2
    official = _hf_to_official(hf.state_dict(), depth=2)
    one_block = {k: v for k, v in official.items() if not k.startswith("blocks.1.")}
    assert infer_config(one_block)["num_heads"] is None
    assert infer_config(one_block, num_heads=4)["num_heads"] == 4
