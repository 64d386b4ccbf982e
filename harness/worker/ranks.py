"""What rank 0 decided, on every rank: a decision taken alone must be taken by all, or the ranks part ways
in their collectives and hang."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def agree(value: T) -> T:
    """Rank 0's ``value`` on every rank (itself where there is one rank or no process group)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
