"""Optimiser parameter groups (VideoMAE's layer-wise lr decay) and the trainable subsets of the recipes."""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

__all__ = ["count_trainable", "layer_id", "param_groups_layer_decay", "trainable_parameters"]

DEFAULT_NO_WEIGHT_DECAY = ("pos_embed", "cls_token", "mask_token")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _model_depth(model: nn.Module) -> int:
    depth = getattr(model, "depth", None)
    if depth is None:
        blocks = getattr(model, "blocks", None)
        if blocks is None:
            raise ValueError("cannot tell the model's depth: it has neither a 'depth' attribute nor 'blocks'")
        depth = len(blocks)
    return int(depth)


def layer_id(name: str, depth: int) -> int:
    """VideoMAE's layer id: embeddings 0, block k -> k + 1, everything else (fc_norm, head) depth + 1.

    An ``encoder.`` prefix (pre-trainer) is looked through, so its encoder blocks get the same ids.
    """
    if name.startswith("encoder."):
        name = name[len("encoder.") :]
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    m = _BLOCK.match(name)
    if m is not None:
        return int(m.group(1)) + 1
    return depth + 1


def param_groups_layer_decay(
    model: nn.Module,
    *,
    weight_decay: float,
    layer_decay: float = 1.0,
    no_weight_decay: Iterable[str] = DEFAULT_NO_WEIGHT_DECAY,
) -> list[dict]:
    """AdamW groups with ``lr_scale = layer_decay ** (depth + 1 - layer_id)`` and decay split as VideoMAE.

    No weight decay on 1-D tensors (biases, norms, q_bias/v_bias), on names ending in ``.bias``, and on the
    names in ``no_weight_decay`` (plus the model's own ``no_weight_decay()``, if it has one). Frozen
    parameters are left out. The trainer multiplies each group's lr by ``lr_scale``. Each group has
    ``params``, ``weight_decay``, ``lr_scale``, ``group_name`` (and ``param_names`` for logging).
    """
    depth = _model_depth(model)
    skip = set(no_weight_decay)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        short = name.split(".")[-1]
        if param.ndim <= 1 or name.endswith(".bias") or name in skip or short in skip:
            kind, wd = "no_decay", 0.0
        else:
            kind, wd = "decay", weight_decay
        lid = layer_id(name, depth)
        group_name = f"layer_{lid}_{kind}"
        if group_name not in groups:
            groups[group_name] = {
                "params": [],
                "param_names": [],
                "weight_decay": wd,
                "lr_scale": float(layer_decay ** (depth + 1 - lid)),
                "group_name": group_name,
            }
        groups[group_name]["params"].append(param)
        groups[group_name]["param_names"].append(name)
    return list(groups.values())


def trainable_parameters(model: nn.Module, mode: str = "finetune") -> list[nn.Parameter]:
    """Set ``requires_grad`` for a recipe and return the trainable parameters.

    ``finetune``: everything. ``linear_probe``: only ``fc_norm`` and ``head`` (the MultiMAE-DER recipe:
    9,223 parameters for ViT-L and 7 classes). ``partial:K``: those plus the last K blocks. A frozen
    encoder should also run in eval mode (no drop path), which is the trainer's job.
    """
    depth = _model_depth(model)
    if mode == "finetune":
        first_trained_block = 0
    elif mode == "linear_probe":
        first_trained_block = depth
    elif mode.startswith("partial:"):
        try:
            k = int(mode.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad mode {mode!r}: expected partial:K with an integer K") from None
        if not 0 <= k <= depth:
            raise ValueError(f"bad mode {mode!r}: K must be between 0 and the depth {depth}")
        first_trained_block = depth - k
    else:
        raise ValueError(f"unknown mode {mode!r}; expected finetune, linear_probe or partial:K")
    trainable = []
    for name, param in model.named_parameters():
        if mode == "finetune":
            train = True
        elif name.startswith(("fc_norm.", "head.")):
            train = True
        else:
            m = _BLOCK.match(name)
            train = m is not None and int(m.group(1)) >= first_trained_block
        param.requires_grad_(train)
        if train:
            trainable.append(param)
    return trainable


def count_trainable(model: nn.Module) -> int:
    """Number of scalars with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
