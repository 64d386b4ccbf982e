"""Whether a cell's Train workers can be placed on the cluster's alive nodes, and a watchdog that says
so instead of waiting silently.

Ray Train V2 retries a worker group that cannot get its resources forever
(``FailureConfig.controller_failure_limit=-1``), and a shorter limit cannot tell "infeasible" from
"busy": a cell waiting for other cells to finish hits the same start-up timeout. What is infeasible
is visible in the nodes' *total* resources: if ``num_workers`` bundles of the cell's per-worker
resources do not fit the alive nodes (the trial driver's own share taken out), no amount of waiting
helps unless a node joins. The watchdog runs the Train job in a thread and checks that every few
seconds; after ``$MMDER_UNPLACEABLE_AFTER_S`` seconds (default 45; 0 waits forever, for autoscaling
clusters whose nodes take minutes to come) of continuous infeasibility it fails the cell with the
resources missing. The failed trial's actor is removed by Tune, and its Train controller with it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
UNPLACEABLE_ENV = "MMDER_UNPLACEABLE_AFTER_S"
DEFAULT_UNPLACEABLE_AFTER_S = 45.0
_EPS = 1e-9


class CellUnplaceable(RuntimeError):
    """The cluster's alive nodes cannot hold the cell's worker group."""


def _fmt(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def shortfall(
    need: Mapping[str, float],
    count: int,
    nodes: list[dict[str, Any]],
    held: Mapping[str, float] | None = None,
    held_on: str | None = None,
) -> str | None:
    """None when ``count`` bundles of ``need`` fit the alive nodes' total resources (``held`` taken out
    of node ``held_on``: the trial driver's share); else a sentence naming what is missing."""
    alive = [n for n in nodes if n.get("Alive", n.get("alive", False))]
    fits, totals, shown = 0, dict.fromkeys(need, 0.0), []
    for node in alive:
        cap = {k: float(v) for k, v in (node.get("Resources") or {}).items()}
        if held and node.get("NodeID") == held_on:
            for k, v in held.items():
                cap[k] = cap.get(k, 0.0) - float(v)
        per = [math.floor(cap.get(k, 0.0) / v + _EPS) for k, v in need.items() if v > 0]
        fits += max(0, min(per, default=count))
        for k in need:
            totals[k] += max(0.0, cap.get(k, 0.0))
        shown.append(
            f"{node.get('NodeManagerAddress', '?')} {str(node.get('NodeID', ''))[:8]} "
            + _fmt({k: cap.get(k, 0.0) for k in need})
        )
    if fits >= count:
        return None
    short = {k: count * v - totals[k] for k, v in need.items() if count * v - totals[k] > _EPS}
    if short:
        missing = "missing in total " + ", ".join(f"{k} {v:g}" for k, v in sorted(short.items()))
    else:
        missing = f"enough in total, but every node is missing part of a whole worker's {_fmt(need)}"
    return (
        f"needs {count} workers x {_fmt(need)}; the {len(alive)} alive nodes hold {fits} "
        f"({'; '.join(shown) or 'none'}): {missing}"
    )


def unplaceable_after_s() -> float:
    return float(os.environ.get(UNPLACEABLE_ENV, DEFAULT_UNPLACEABLE_AFTER_S))


def cluster_shortfall(need: Mapping[str, float], count: int) -> str | None:
    """:func:`shortfall` against the connected Ray cluster, this trial's own resources taken out."""
    import ray

    ctx = ray.get_runtime_context()
    try:
        held = ctx.get_assigned_resources()
    except Exception:  # noqa: BLE001 - outside an actor or task: nothing held
        held = {}
    return shortfall(need, count, ray.nodes(), held, ctx.get_node_id())


def fit_watched(
    fit: Callable[[], T],
    key: str,
    count: int,
    need: Mapping[str, float],
    *,
    after_s: float | None = None,
    poll_s: float = 2.0,
    check: Callable[[Mapping[str, float], int], str | None] = cluster_shortfall,
    watch: Callable[[], None] | None = None,
) -> T:
    """``fit()`` in a thread; raises :class:`CellUnplaceable` when the cell has not fit the alive nodes
    for ``after_s`` seconds in a row (it says so at once, on the first look that finds it). ``watch``
    is called on every look too (the stall watch, :mod:`harness.worker.stall`)."""
    after_s = unplaceable_after_s() if after_s is None else after_s
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fit()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name=f"fit-{key}", daemon=True)
    thread.start()
    since: float | None = None
    while True:
        thread.join(poll_s)
        if not thread.is_alive():
            break
        if watch is not None:
            watch()
        if after_s <= 0:
            continue
        missing = check(need, count)
        if missing is None:
            since = None
            continue
        now = time.monotonic()
        if since is None:
            since = now
            print(f"[{key}] cannot be placed now: {missing}; waiting {after_s:g} s for nodes", flush=True)
        if now - since >= after_s:
            raise CellUnplaceable(
                f"cell {key} cannot be placed on the cluster: {missing} (for {after_s:g} s; add nodes or "
                f"lower resources.num_workers / cpus_per_worker; ${UNPLACEABLE_ENV}=0 waits forever)"
            )
    if "error" in box:
        raise box["error"]
    return box["result"]
