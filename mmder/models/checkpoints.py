"""Load VideoMAE checkpoints of any common layout into our models, and convert them to ours.

Layouts understood (VideoMAE's released checkpoints, which the MultiMAE-DER paper builds on):

* ``official-finetuned``: MCG-NJU fine-tuned names (``patch_embed.proj``, ``blocks.N.attn.qkv`` with
  ``q_bias``/``v_bias``, ``fc_norm``, ``head``). Our classifier uses exactly these names.
* ``official-pretrained``: the same encoder names under ``encoder.`` plus ``encoder.norm`` and a decoder
  (``encoder_to_decoder``, ``mask_token``, ``decoder.*``). Our
  :class:`mmder.models.mae.VideoMAEPretrainer` uses exactly these names.
* ``huggingface``: transformers' ``VideoMAE*`` names (``videomae.`` prefix, split query/key/value, biases as
  ``query.bias``/``value.bias`` in transformers 5.x or ``q_bias``/``v_bias`` before).
* ``ours``: a file written by :func:`convert_checkpoint` (``{"model": <official-finetuned names>, "mmder":
  <metadata>}``). A bare state dict of our classifier is detected as ``official-finetuned``, which is the
  same naming.

Every layout is first renamed to a canonical naming (classifier names for the encoder, official pre-trained
names for the decoder). Nothing is mapped by guesswork: the pre-trained encoder's final ``norm`` has no
counterpart in the mean-pooling classifier (whose ``fc_norm`` is a different, freshly trained LayerNorm), so
it is reported as unused. Position tables in a checkpoint are ignored: ours are fixed sin-cos buffers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmder.models.classifier import MODEL_SIZES

__all__ = [
    "LAYOUTS",
    "LoadReport",
    "convert_checkpoint",
    "detect_layout",
    "extract_state_dict",
    "infer_config",
    "load_pretrained",
    "read_checkpoint",
    "to_canonical",
]

LAYOUTS = ("ours", "official-finetuned", "official-pretrained", "huggingface")
META_KEY = "mmder"
_WRAPPER_KEYS = ("model", "module", "state_dict", "model_state", "model_state_dict")
_KEY_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class LoadReport:
    """What a load did: tensors loaded, model tensors left at init, checkpoint tensors not used."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    layout: str
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few plain sentences for logs and the CLI."""

        def names(keys: list[str], limit: int = 6) -> str:
            shown = ", ".join(keys[:limit])
            return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")

        lines = [f"Loaded {len(self.loaded)} tensors from a {self.layout} checkpoint."]
        if self.skipped:
            lines.append(f"Kept {len(self.skipped)} tensors at their initial values: {names(self.skipped)}.")
        if self.missing:
            lines.append(
                f"The checkpoint has no value for {len(self.missing)} tensors (left at init): "
                f"{names(self.missing)}."
            )
        if self.unexpected:
            lines.append(
                f"Ignored {len(self.unexpected)} checkpoint tensors the model has no place for: "
                f"{names(self.unexpected)}."
            )
        lines.extend(self.notes)
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- reading


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a .pt/.pth/.bin (torch.load, weights_only) or .safetensors file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(f"reading {p} needs the 'safetensors' package") from err
        return load_file(str(p), device="cpu")
    return torch.load(p, map_location="cpu", weights_only=True)


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: under model/module/state_dict or bare; wrapper key prefixes dropped."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ValueError(f"a checkpoint must be a dict of tensors, got {type(obj).__name__}")
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise ValueError(
            "no tensors found in the checkpoint (looked at the top level and under "
            f"{', '.join(_WRAPPER_KEYS)})"
        )
    # DDP ("module."), torch.compile ("_orig_mod.") and Lightning-style ("model.") prefixes on every key.
    changed = True
    while changed:
        changed = False
        for prefix in _KEY_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd


def detect_layout(state_dict: Mapping[str, Any]) -> str:
    """One of LAYOUTS, from the key names (accepts a bare state dict or a whole checkpoint dict)."""
    if isinstance(state_dict, Mapping) and isinstance(state_dict.get(META_KEY), Mapping):
        return "ours"
    keys = list(extract_state_dict(state_dict))
    if any(
        k.startswith("videomae.")
        or k.startswith("embeddings.patch_embeddings.")
        or re.match(r"encoder\.layer\.\d+\.", k)
        for k in keys
    ):
        return "huggingface"
    if any(k.startswith("encoder.blocks.") or k.startswith("encoder.patch_embed.") for k in keys):
        return "official-pretrained"
    if any(k.startswith("blocks.") or k.startswith("patch_embed.") for k in keys):
        return "official-finetuned"
    raise ValueError(f"unrecognised checkpoint layout; first keys: {keys[:5]}")


# ------------------------------------------------------------------------------------------------- renaming

_HF_LAYER = re.compile(r"^(?:videomae\.)?encoder\.layer\.(\d+)\.(.+)$")
_HF_DEC_LAYER = re.compile(r"^decoder\.decoder_layers\.(\d+)\.(.+)$")
_HF_BLOCK_RENAMES = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_TOP_RENAMES = {
    "embeddings.patch_embeddings.projection": "patch_embed.proj",
    "layernorm": "norm",
    "fc_norm": "fc_norm",
    "classifier": "head",
}


def _is_pos_table(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in ("pos_embed", "position_embeddings", "position_embedding")


def _hf_block(
    prefix: str,
    rest: str,
    out: dict[str, torch.Tensor],
    qkv: dict[str, dict[str, torch.Tensor]],
    value: torch.Tensor,
    unused: list[str],
    full_key: str,
) -> None:
    """Rename one HF layer tensor into ``out``; query/key/value pieces are gathered in ``qkv``."""
    m = re.match(r"^attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
    if m:
        qkv.setdefault(prefix, {})[f"{m.group(1)}.{m.group(2)}"] = value
        return
    m = re.match(r"^attention\.attention\.(q_bias|v_bias)$", rest)
    if m:
        qkv.setdefault(prefix, {})[{"q_bias": "query.bias", "v_bias": "value.bias"}[m.group(1)]] = value
        return
    for src, dst in _HF_BLOCK_RENAMES.items():
        if rest.startswith(src + "."):
            out[f"{prefix}.{dst}{rest[len(src) :]}"] = value
            return
    unused.append(full_key)


def _hf_to_canonical(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    notes: list[str] = []
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if (m := _HF_LAYER.match(key)) is not None:
            _hf_block(f"blocks.{m.group(1)}", m.group(2), out, qkv, value, unused, key)
            continue
        if (m := _HF_DEC_LAYER.match(key)) is not None:
            _hf_block(f"decoder.blocks.{m.group(1)}", m.group(2), out, qkv, value, unused, key)
            continue
        bare = key[len("videomae.") :] if key.startswith("videomae.") else key
        for src, dst in _HF_TOP_RENAMES.items():
            if bare.startswith(src + "."):
                out[dst + bare[len(src) :]] = value
                break
        else:
            if (
                key in ("encoder_to_decoder.weight", "mask_token")
                or key.startswith("decoder.norm.")
                or key.startswith("decoder.head.")
            ):
                out[key] = value
            else:
                unused.append(key)
    for prefix, parts in qkv.items():
        names = ("query.weight", "key.weight", "value.weight")
        if not all(n in parts for n in names):
            unused.extend(f"{prefix}.attention.attention.{n}" for n in parts)
            notes.append(f"{prefix}: incomplete query/key/value weights in the checkpoint; not loaded.")
            continue
        out[f"{prefix}.attn.qkv.weight"] = torch.cat([parts[n] for n in names], dim=0)
        if "key.bias" in parts and bool(parts["key.bias"].detach().abs().max() > 0):
            raise ValueError(
                f"{prefix}: the checkpoint has a non-zero key bias, which VideoMAE's attention "
                "cannot represent (its k bias is fixed at zero)"
            )
        if "query.bias" in parts:
            out[f"{prefix}.attn.q_bias"] = parts["query.bias"]
        if "value.bias" in parts:
            out[f"{prefix}.attn.v_bias"] = parts["value.bias"]
    return out, unused, notes


def to_canonical(
    state_dict: Mapping[str, torch.Tensor], layout: str | None = None
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Rename a state dict to canonical names: (tensors, unused source keys, notes).

    Canonical names are the classifier's for the encoder (``patch_embed.*``, ``blocks.*``, ``fc_norm.*``,
    ``head.*``, plus ``norm.*`` for a pre-trained encoder's final norm) and the official pre-trained ones
    for the decoder (``encoder_to_decoder.*``, ``mask_token``, ``decoder.*``).
    """
    sd = extract_state_dict(state_dict)
    layout = layout or detect_layout(state_dict)
    notes: list[str] = []
    pos = sorted(k for k in sd if _is_pos_table(k))
    if pos:
        notes.append(f"Ignored position table(s) {', '.join(pos)}: positions are fixed sin-cos tables here.")
    sd = {k: v for k, v in sd.items() if not _is_pos_table(k)}
    if layout == "huggingface":
        out, unused, more = _hf_to_canonical(sd)
        return out, unused, notes + more
    if layout == "official-pretrained":
        out = {}
        for k, v in sd.items():
            out[k[len("encoder.") :] if k.startswith("encoder.") else k] = v
        return out, [], notes
    if layout in ("official-finetuned", "ours"):
        return dict(sd), [], notes
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def _target_names(model: nn.Module) -> tuple[dict[str, str], str]:
    """Map canonical name -> model state-dict name; and the model kind ('classifier' or 'pretrainer')."""
    own = model.state_dict().keys()
    if any(k.startswith("encoder.") for k in own) and any(k.startswith("decoder.") for k in own):
        mapping = {}
        for k in own:
            canon = k[len("encoder.") :] if k.startswith("encoder.") else k
            mapping[canon] = k
        return mapping, "pretrainer"
    return {k: k for k in own}, "classifier"


# ---------------------------------------------------------------------------------------------------- load


def load_pretrained(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    *,
    strict_shapes: bool = True,
    skip_head_mismatch: bool = True,
) -> LoadReport:
    """Load any known layout into a :class:`VideoMAEClassifier` (or a :class:`VideoMAEPretrainer`).

    Shapes must fit: with ``strict_shapes`` a mismatch raises ValueError naming the first such key and both
    shapes (without it, the tensor is kept at init and reported). A classification head with another number
    of classes is the usual exception: with ``skip_head_mismatch`` ``head.*`` stays at init and the report
    says so. Loading nothing at all is always an error.
    """
    raw = (
        read_checkpoint(path_or_state_dict)
        if isinstance(path_or_state_dict, (str, os.PathLike))
        else path_or_state_dict
    )
    layout = detect_layout(raw)
    canon, unused, notes = to_canonical(raw, layout)
    mapping, kind = _target_names(model)
    own = model.state_dict()
    matched = _match_tensors(
        canon,
        own,
        mapping,
        kind=kind,
        layout=layout,
        strict_shapes=strict_shapes,
        skip_head_mismatch=skip_head_mismatch,
    )
    notes += matched.notes
    unexpected = unused + matched.unexpected
    if any(k.startswith("head.") for k in matched.skipped) and kind == "classifier":
        notes.append(_head_note(canon, own))
    if not matched.to_load:
        raise ValueError(
            f"nothing in the {layout} checkpoint fits this model; unused keys start with {unexpected[:5]}"
        )
    if kind == "classifier":
        notes += _final_norm_notes(canon)
    result = model.load_state_dict(matched.to_load, strict=False)
    missing = sorted(set(result.missing_keys) - set(matched.skipped))
    return LoadReport(
        loaded=sorted(matched.to_load),
        missing=missing,
        unexpected=sorted(unexpected),
        layout=layout,
        skipped=sorted(matched.skipped),
        notes=notes,
    )


@dataclass
class _Matched:
    """Canonical tensors sorted against a model: to load, kept at init, with no place; notes on shapes."""

    to_load: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _match_tensors(
    canon: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    mapping: Mapping[str, str],
    *,
    kind: str,
    layout: str,
    strict_shapes: bool,
    skip_head_mismatch: bool,
) -> _Matched:
    """Each canonical tensor to its model name, when the model has it at that shape.

    A head of another class count is skipped (``skip_head_mismatch``); any other shape mismatch raises
    with ``strict_shapes``, else it is kept at init with a note.
    """
    matched = _Matched()
    for cname, value in canon.items():
        target = mapping.get(cname)
        if target is None:
            src = f"encoder.{cname}" if layout == "official-pretrained" and not _is_decoder(cname) else cname
            matched.unexpected.append(src)
            continue
        want = tuple(own[target].shape)
        got = tuple(value.shape)
        if want == got:
            matched.to_load[target] = value
            continue
        if kind == "classifier" and target.startswith("head.") and skip_head_mismatch:
            matched.skipped.append(target)
            continue
        if strict_shapes:
            raise ValueError(
                f"checkpoint tensor {target!r} has shape {list(got)} but the model expects "
                f"{list(want)} ({layout} layout); the model size, patch/tubelet size or "
                "channel count does not match the checkpoint"
            )
        matched.skipped.append(target)
        matched.notes.append(
            f"{target}: shape {list(got)} in the checkpoint vs {list(want)} in the model; kept at init."
        )
    return matched


def _head_note(canon: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> str:
    """Why the classifier's head was not loaded: the two class counts."""
    head_w = canon.get("head.weight")
    n_ckpt = head_w.shape[0] if head_w is not None else "?"
    return (
        f"The checkpoint head has {n_ckpt} classes and the model {own['head.weight'].shape[0]}: "
        "head.weight/head.bias keep their fresh initialisation."
    )


def _final_norm_notes(canon: Mapping[str, torch.Tensor]) -> list[str]:
    """What a pre-trained encoder's final ``norm`` means for the mean-pooling classifier (unused, and
    a warning when the checkpoint's head was trained on it)."""
    if "norm.weight" not in canon:
        return []
    if "head.weight" in canon and "fc_norm.weight" not in canon:
        return [
            "Warning: this checkpoint's head was trained on a final-norm first-token feature, not on "
            "mean pooling + fc_norm as this model computes; fine-tune the head before trusting it."
        ]
    return [
        "The encoder's final 'norm' of a pre-trained checkpoint is not used: the mean-pooling "
        "classifier has a separate fc_norm, which starts fresh."
    ]


def _is_decoder(canonical_name: str) -> bool:
    return (
        canonical_name.startswith("decoder.")
        or canonical_name.startswith("encoder_to_decoder.")
        or canonical_name == "mask_token"
    )


# ----------------------------------------------------------------------------------------------- inference


def infer_config(state_dict: Mapping[str, Any], *, num_heads: int | None = None) -> dict[str, Any]:
    """Encoder shape from the tensors of any layout: embed_dim, depth, mlp_ratio, patch/tubelet, classes.

    The number of heads is not visible in the weights; it comes from ``num_heads`` or from the size in
    ``MODEL_SIZES`` with the same width and depth (None when neither is available).
    """
    canon, _, _ = to_canonical(state_dict)
    proj = canon.get("patch_embed.proj.weight")
    if proj is None:
        raise ValueError("the checkpoint has no patch embedding (patch_embed.proj.weight or equivalent)")
    embed_dim, in_chans, tubelet, patch, _ = proj.shape
    depth = 1 + max((int(k.split(".")[1]) for k in canon if k.startswith("blocks.")), default=-1)
    fc1 = canon.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / embed_dim if fc1 is not None else 4.0
    size = next(
        (
            name
            for name, s in MODEL_SIZES.items()
            if s.embed_dim == embed_dim and s.depth == depth and s.mlp_ratio == mlp_ratio
        ),
        None,
    )
    if num_heads is None and size is not None:
        num_heads = MODEL_SIZES[size].num_heads
    if size is not None and num_heads != MODEL_SIZES[size].num_heads:
        size = None
    head = canon.get("head.weight")
    return {
        "size": size,
        "embed_dim": int(embed_dim),
        "depth": depth,
        "num_heads": num_heads,
        "mlp_ratio": float(mlp_ratio),
        "patch_size": int(patch),
        "tubelet_size": int(tubelet),
        "in_chans": int(in_chans),
        "num_classes": int(head.shape[0]) if head is not None else None,
    }


# ------------------------------------------------------------------------------------------------- convert


_CLASSIFIER_PREFIXES = ("patch_embed.", "blocks.", "fc_norm.", "head.")


def convert_checkpoint(
    src: str | os.PathLike[str] | Mapping[str, Any],
    dst: str | os.PathLike[str],
    *,
    num_heads: int | None = None,
) -> LoadReport:
    """Rewrite a checkpoint of any known layout as ours: ``{"model": state_dict, "mmder": metadata}``.

    Only what the classifier uses is written (encoder, and ``fc_norm``/``head`` when present); decoder
    tensors and a pre-trained encoder's ``norm`` are dropped and listed as unexpected. The metadata records
    the inferred shape (see :func:`infer_config`) so a model can be built to receive it.
    """
    raw = read_checkpoint(src) if isinstance(src, (str, os.PathLike)) else src
    layout = detect_layout(raw)
    canon, unused, notes = to_canonical(raw, layout)
    cfg = infer_config(raw, num_heads=num_heads)
    out = {k: v.detach().clone().contiguous() for k, v in canon.items() if k.startswith(_CLASSIFIER_PREFIXES)}
    dropped = sorted(unused + [k for k in canon if not k.startswith(_CLASSIFIER_PREFIXES)])
    missing = [n for n in ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias") if n not in out]
    depth = cfg["depth"]
    expected_blocks = {
        f"blocks.{i}.{n}"
        for i in range(depth)
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
    missing += sorted(expected_blocks - set(out))
    if cfg["num_heads"] is None:
        notes.append(
            f"Width {cfg['embed_dim']} / depth {depth} is not a known size; pass num_heads to record it."
        )
    meta = {"format": 1, "source_layout": layout, **cfg}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": out, META_KEY: meta}, dst)
    notes.append(
        f"Wrote {len(out)} tensors to {dst} (size {cfg['size'] or 'custom'}, "
        f"{cfg['embed_dim']}d x {depth} blocks, heads {cfg['num_heads']})."
    )
    return LoadReport(loaded=sorted(out), missing=missing, unexpected=dropped, layout=layout, notes=notes)
