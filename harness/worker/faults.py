"""Fault injection for the recovery drills, switched on by environment variables only."""

from __future__ import annotations

import os
import time
from pathlib import Path

FAIL_ENV = "MMDER_CHAOS_FAIL_CELL"
CHAOS_ENV = "MMDER_CHAOS_EXIT_AFTER_EPOCH"
OOM_ENV = "MMDER_CHAOS_OOM_CELL"
PAUSE_DIR_ENV = "MMDER_CHAOS_PAUSE_DIR"  # test-only: hold a cell still at a known epoch
PAUSE_CELL_ENV = "MMDER_CHAOS_PAUSE_CELL"
PAUSE_EPOCH_ENV = "MMDER_CHAOS_PAUSE_AFTER_EPOCH"


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


def maybe_exhaust_memory(key: str, rank: int, world_size: int, limit_bytes: int | None) -> None:
    """With $MMDER_CHAOS_OOM_CELL=TEXT the last rank of a cell whose key contains TEXT allocates (and
    touches) memory until the kernel kills it at its limit, as a leak or a too-large batch would. It
    never runs without a limit it can hit (``limit_bytes`` below half what the machine has available):
    it raises instead of taking the machine down."""
    target = os.environ.get(OOM_ENV)
    if not target or target not in key or rank != world_size - 1:
        return
    import psutil

    # what could be had without swapping, page cache included: MemFree alone fell below 4 GiB on this
    # 24 GiB machine once a suite had filled the cache, and the drill refused a 2 GiB limit it could hit
    available = psutil.virtual_memory().available
    if limit_bytes is None or limit_bytes >= available // 2:
        raise RuntimeError(
            f"{OOM_ENV}={target}: no memory limit below half the available memory; not allocating"
        )
    print(f"[{key}] {OOM_ENV}={target}: rank {rank} allocates until it is stopped", flush=True)
    held = []
    while True:
        held.append(bytearray(64 << 20))  # zero-filled: every page is touched


def maybe_pause(key: str, epoch: int, rank: int) -> None:
    """With $MMDER_CHAOS_PAUSE_DIR=DIR, $MMDER_CHAOS_PAUSE_CELL=TEXT and $MMDER_CHAOS_PAUSE_AFTER_EPOCH=N,
    a cell whose key contains TEXT stops after epoch N was reported (its checkpoint registered): rank 0
    writes ``DIR/<key>.paused-N`` and every rank waits while ``DIR/hold`` exists.

    Why: a drill that kills or signals a sweep mid-cell waits for the marker instead of racing the
    clock with extra epochs, so it cuts the same place on a fast machine and a slow one.
    """
    folder, target = os.environ.get(PAUSE_DIR_ENV), os.environ.get(PAUSE_CELL_ENV, "")
    at = os.environ.get(PAUSE_EPOCH_ENV)
    if not folder or at is None or int(at) != epoch or target not in key:
        return
    hold = Path(folder) / "hold"
    if not hold.exists():
        return
    if rank == 0:
        (Path(folder) / f"{key}.paused-{epoch}").touch()
    print(f"[{key}] paused after epoch {epoch} while {hold} exists", flush=True)
    while hold.exists():
        time.sleep(0.1)
