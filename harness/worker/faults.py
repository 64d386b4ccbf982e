"""Fault injection for the recovery drills, switched on by environment variables only."""

from __future__ import annotations

import os
from pathlib import Path

FAIL_ENV = "MMDER_CHAOS_FAIL_CELL"
CHAOS_ENV = "MMDER_CHAOS_EXIT_AFTER_EPOCH"


def maybe_fail(key: str) -> None:
    """With $MMDER_CHAOS_FAIL_CELL=TEXT, a cell whose key contains TEXT raises."""
    target = os.environ.get(FAIL_ENV)
    if target and target in key:
        raise RuntimeError(f"{FAIL_ENV}={target}: injected failure of cell {key}")


def maybe_crash(storage_path: str, key: str, epoch: int) -> None:
    """With $MMDER_CHAOS_EXIT_AFTER_EPOCH=N the last rank of every cell dies (os._exit) once, right
    after epoch N was checkpointed; Ray Train must restart the worker group from that checkpoint
    (resources.max_failures) and lose nothing but the dying process."""
    import ray.train

    target = os.environ.get(CHAOS_ENV)
    ctx = ray.train.get_context()
    if target is None or int(target) != epoch or ctx.get_world_rank() != ctx.get_world_size() - 1:
        return
    marker = Path(storage_path) / key / "chaos-done"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(f"[{key}] {CHAOS_ENV}={target}: rank {ctx.get_world_rank()} exits after epoch {epoch}", flush=True)
    os._exit(1)
