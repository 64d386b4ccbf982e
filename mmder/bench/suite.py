"""A whole step-benchmark plan in one process, for a short lease on a GPU machine (no Ray there).

For each (model size, ZeRO stage, activation checkpointing) the batch grows until the device's
memory is ``memory_fraction`` full: two measured batches give memory as a line in the batch size, the
third batch is where that line reaches the target. Compiled cases then run at the best batch of their
eager twin. Every result is appended to a JSON-lines file as soon as it is measured, so a run cut off
by its time limit keeps what it measured; cases that no longer fit the deadline are recorded as
skipped, not silently dropped.

Each measurement runs in a fresh (spawned) process. On an H200 the first version measured every case
in one process, and a compiled ViT-B measured after a compiled ViT-L came out 1.6x faster and at a
quarter of the memory of the same case in a process of its own (docs/benchmarks.md): state left by
the earlier engine and compiled graphs leaks into the next measurement. A process per measurement
costs the imports (seconds) and rules that out.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmder.bench.step import StepBenchmark, bench_step, release_memory

_GROUP_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Case:
    """One configuration: ``sweep`` grows its batch, else it runs at its eager ZeRO-2 twin's best batch."""

    size: str
    zero: int
    checkpointing: bool = False
    compile: bool = False
    sweep: bool = False
    start_batch: int = 8

    @property
    def name(self) -> str:
        extras = [x for x, on in (("ckpt", self.checkpointing), ("compile", self.compile)) if on]
        return "-".join([self.size, f"z{self.zero}", *extras])

    @property
    def key(self) -> tuple[str, int, bool]:
        return (self.size, self.zero, self.checkpointing)

    @property
    def twin(self) -> tuple[str, int, bool]:
        """The sweep whose best batch this case reuses, so that the two compare at one batch."""
        return (self.size, 2, self.checkpointing)


# In priority order, so that a lease that runs out keeps the figures that matter most. ZeRO-3 with
# torch.compile is left out: DeepSpeed's ZeRO-3 hooks break Dynamo's tracing (seen on a CPU: "size
# mismatch, got input (32x32), vec (0)" on a partitioned weight); DeepSpeed's route there is DeepCompile.
PLANS: dict[str, list[Case]] = {
    "gpu": [
        Case("large", 2, sweep=True, start_batch=8),
        Case("large", 2, compile=True),
        Case("large", 3),
        Case("large", 2, checkpointing=True, sweep=True, start_batch=32),
        Case("large", 2, checkpointing=True, compile=True),
        Case("base", 2, sweep=True, start_batch=16),
        Case("base", 2, compile=True),
        Case("base", 3),
        Case("base", 2, checkpointing=True, sweep=True, start_batch=64),
        Case("large", 3, checkpointing=True),
    ],
    # the same logic at a size a CPU finishes in a minute (the tests run it)
    "cpu": [
        Case("micro", 2, sweep=True, start_batch=2),
        Case("micro", 3),
        Case("micro", 2, checkpointing=True),
    ],
}


def next_batch(
    measured: list[tuple[int, float]], total_gib: float, fraction: float, multiple: int = 8
) -> int:
    """The batch at which peak memory reaches ``fraction`` of ``total_gib``, from two (batch, GiB) points.

    Memory is fixed state (weights, gradients, optimiser) plus activations in proportion to the batch, so
    the last two points give the line. Rounded down to ``multiple``; 0 when it is no larger than the
    largest batch measured (the target is already reached, or memory does not grow).
    """
    (b1, m1), (b2, m2) = measured[-2], measured[-1]
    slope = (m2 - m1) / (b2 - b1)
    if slope <= 0:
        return 0
    target = b2 + (fraction * total_gib - m2) / slope
    batch = int(target // multiple * multiple) if target >= multiple else int(target)
    return batch if batch > max(b for b, _ in measured) else 0


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float | None:
    """bf16 n x n x n matrix products per second on this GPU: the ceiling this machine really reaches."""
    if not torch.cuda.is_available():
        return None
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / repeats
    del a, b
    release_memory()
    return 2 * n**3 / seconds / 1e12


def in_fresh_process(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """``fn(**kwargs)`` in a new interpreter (spawned: no CUDA context, engine or graph of ours in it).

    Its exceptions (out of memory included) are raised here; a child that dies outright raises
    ``BrokenProcessPool``.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_alone, fn, kwargs).result()


def _alone(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    for name in _GROUP_ENV:  # a one-process group of its own, never the parent's rendezvous
        os.environ.pop(name, None)
    return fn(**kwargs)


@dataclass
class _SuiteRun:
    """One :func:`run_suite` call's settings and the records it has written so far."""

    image_size: int
    num_frames: int
    memory_fraction: float
    max_batch: int
    deadline_s: float
    warmup: int
    steps: int
    output: Path | None
    echo: Callable[[str], None]
    t_start: float = field(default_factory=time.perf_counter)
    records: list[dict[str, Any]] = field(default_factory=list)


def run_suite(
    plan: str | list[Case],
    *,
    image_size: int = 224,
    num_frames: int = 16,
    memory_fraction: float = 0.8,
    max_batch: int = 256,
    deadline_s: float = 420.0,
    warmup: int = 2,
    steps: int = 4,
    output: Path | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Measure every case of ``plan`` until ``deadline_s``; one record per measured or skipped batch."""
    cases = PLANS[plan] if isinstance(plan, str) else plan
    run = _SuiteRun(
        image_size=image_size,
        num_frames=num_frames,
        memory_fraction=memory_fraction,
        max_batch=max_batch,
        deadline_s=deadline_s,
        warmup=warmup,
        steps=steps,
        output=output,
        echo=echo,
    )
    best: dict[tuple[str, int, bool], int] = {}
    _measure_ceiling(run)
    for case in cases:
        if case.sweep:
            results = _sweep(run, case)
        else:
            r = _measure(run, case, best.get(case.twin, case.start_batch))
            results = [] if r is None else [r]
        if results:
            top = max(results, key=lambda r: r.clips_per_s)
            best.setdefault(case.key, top.batch_size)
    _emit(run, {"kind": "done", "seconds": time.perf_counter() - run.t_start})
    return run.records


def _emit(run: _SuiteRun, record: dict[str, Any]) -> None:
    """Keep ``record`` and append it to the output file at once, so a run cut off keeps what it measured."""
    run.records.append(record)
    if run.output is not None:
        with run.output.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _measure_ceiling(run: _SuiteRun) -> None:
    """Record the bf16 matmul rate this GPU really reaches (nothing on a CPU): the MFU's honest ceiling."""
    ceiling = in_fresh_process(matmul_tflops) if torch.cuda.is_available() else None
    if ceiling is not None:
        run.echo(f"bf16 8192^3 matmul: {ceiling:.0f} TFLOP/s measured")
        _emit(run, {"kind": "matmul", "tflops": ceiling})


def _measure(run: _SuiteRun, case: Case, batch: int) -> StepBenchmark | None:
    """One case at one batch in a fresh process, recorded; None when skipped, out of memory or failed."""
    elapsed = time.perf_counter() - run.t_start
    if elapsed > run.deadline_s:
        why = f"{elapsed:.0f} s past the start, deadline {run.deadline_s:.0f} s"
        _emit(run, {"kind": "skipped", "case": case.name, "batch": batch, "why": why})
        run.echo(f"{case.name} b{batch}: skipped ({why})")
        return None
    try:
        result = in_fresh_process(
            bench_step,
            size=case.size,
            batch_size=batch,
            num_frames=run.num_frames,
            image_size=run.image_size,
            zero_stage=case.zero,
            bf16=torch.cuda.is_available(),
            checkpointing=case.checkpointing,
            compile=case.compile,
            warmup=run.warmup,
            steps=run.steps if batch <= 64 else max(2, run.steps // 2),
        )
    except torch.OutOfMemoryError:
        _emit(run, {"kind": "oom", "case": case.name, "batch": batch})
        run.echo(f"{case.name} b{batch}: out of memory")
        return None
    except Exception as exc:  # a case that breaks (e.g. compile + ZeRO-3) must not end the plan
        _emit(run, {"kind": "error", "case": case.name, "batch": batch, "error": repr(exc)[:2000]})
        run.echo(f"{case.name} b{batch}: failed: {exc!r}\n{traceback.format_exc(limit=6)}")
        return None
    _emit(run, {"kind": "step", "case": case.name} | result.as_dict())
    run.echo("\n".join(result.lines()))
    return result


def _sweep(run: _SuiteRun, case: Case) -> list[StepBenchmark]:
    """The start batch, twice it, then the batch their memory line predicts fills the target fraction.

    A predicted batch that runs out of memory is retried once at 85 % of it (never below the second).
    """
    results: list[StepBenchmark] = []
    for batch in (case.start_batch, 2 * case.start_batch):
        if (r := _measure(run, case, batch)) is not None:
            results.append(r)
    total = results[0].memory_total_gib if len(results) == 2 else None
    if not total:
        return results
    target = _target_batch(run, case, [(r.batch_size, r.peak_memory_gib) for r in results], total)
    if target:
        r = _measure(run, case, target)
        if r is None and run.records[-1]["kind"] == "oom":
            r = _measure(run, case, max(2 * case.start_batch, int(target * 0.85) // 8 * 8))
        if r is not None:
            results.append(r)
    return results


def _target_batch(run: _SuiteRun, case: Case, points: list[tuple[int, float]], total: float) -> int:
    """The batch at which memory fills ``memory_fraction`` of ``total`` GiB, capped (and said so)."""
    target = next_batch(points, total, run.memory_fraction)
    if target > run.max_batch:
        run.echo(f"{case.name}: {run.memory_fraction:.0%} of memory at batch ~{target}; cap {run.max_batch}")
        _emit(run, {"kind": "cap", "case": case.name, "predicted_batch": target, "cap": run.max_batch})
        target = run.max_batch
    return target


def summary_table(records: list[dict[str, Any]]) -> str:
    """The measured steps as a markdown table (docs/benchmarks.md keeps these)."""
    head = (
        "| case | batch | clips/s | tokens/s | TFLOP/s | MFU | peak memory GiB (%) | attention "
        "| host syncs/step |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
    )
    rows = []
    for r in records:
        if r["kind"] == "step":
            mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
            frac = "" if r["memory_fraction"] is None else f" ({100 * r['memory_fraction']:.0f} %)"
            syncs = "n/a" if r["host_syncs_per_step"] is None else f"{r['host_syncs_per_step']:g}"
            rows.append(
                f"| {r['case']} | {r['batch_size']} | {r['clips_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
                f"{r['achieved_tflops']:.1f} | {mfu} | {r['peak_memory_gib']:.1f}{frac} | "
                f"{r['sdpa_kernel']} | {syncs} |"
            )
        elif r["kind"] in ("oom", "error", "skipped"):
            why = {"oom": "out of memory", "error": r.get("error", ""), "skipped": r.get("why", "")}
            why = why[r["kind"]]
            rows.append(f"| {r['case']} | {r['batch']} | {r['kind']}: {why[:80]} | | | | | | |")
    return "\n".join([head, *rows]) if rows else head


def best_mfu(records: list[dict[str, Any]], size: str) -> dict[str, Any] | None:
    steps = [r for r in records if r["kind"] == "step" and r["size"] == size and r["mfu"] is not None]
    return max(steps, key=lambda r: r["mfu"]) if steps else None
