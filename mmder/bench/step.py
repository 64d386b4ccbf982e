"""Fine-tuning step benchmark in one process: the model, a DeepSpeed engine, random clips; no Ray.

It prints what a GPU-hour costs: clips/s, tokens/s, peak memory and model FLOPs utilisation. FLOPs
are counted analytically (matmuls only, 2 per multiply-add) for one forward pass, and a training step
counts as 3 forward passes (backward = 2x forward), as the MFU convention of PaLM/torchtitan does;
recomputation under activation checkpointing is deliberately not counted, so MFU says how well the
useful work runs. It also says which attention kernel ``scaled_dot_product_attention`` dispatched to
(read off the profiler's operator names, so it holds for compiled models too) and, on a GPU, how
many times a step made the host wait for the device.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mmder.config import TrainingConfig
from mmder.models.classifier import ModelSize, build_model, resolve_size
from mmder.train.engine import (
    build_optimizer,
    deepspeed_config,
    ensure_process_group,
    silence_deepspeed_cpu_build,
)

# Dense bf16 tensor-core peaks (TFLOP/s) by device name fragment; used when --peak-tflops is not given.
GPU_PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}

# The profiler names of SDPA's forward kernels (PyTorch 2.x), and what we call them.
SDPA_KERNELS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "aten::_scaled_dot_product_efficient_attention": "memory-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cuDNN",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "fused (backend)",
}


@dataclass
class StepBenchmark:
    size: str
    device: str
    batch_size: int
    tokens_per_clip: int
    precision: str
    zero_stage: int
    checkpointing: bool
    compiled: bool
    step_ms: float
    clips_per_s: float
    tokens_per_s: float
    achieved_tflops: float
    peak_tflops: float | None
    mfu: float | None
    peak_memory_gib: float
    memory_total_gib: float | None = None
    sdpa_kernel: str = "not checked"
    host_syncs_per_step: float | None = None
    steps: int = 0
    build_s: float = 0.0
    first_steps_s: float = 0.0
    optimizer_ms: float | None = None  # engine.step() alone, on the device's timeline where there is one
    compile_stats: dict[str, int] | None = None  # Dynamo's frames, graphs and graph breaks, when compiled

    @property
    def memory_fraction(self) -> float | None:
        return self.peak_memory_gib / self.memory_total_gib if self.memory_total_gib else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"memory_fraction": self.memory_fraction}

    def lines(self) -> list[str]:
        mfu = (
            f"{100 * self.mfu:.1f} % of {self.peak_tflops:.0f} TFLOP/s"
            if self.mfu is not None
            else "n/a (peak unknown)"
        )
        on_off = {True: "on", False: "off"}
        memory = f"{self.peak_memory_gib:9.2f} GiB"
        if self.memory_fraction is not None:
            memory += f" ({100 * self.memory_fraction:.0f} % of {self.memory_total_gib:.0f} GiB)"
        syncs = "n/a (CPU)" if self.host_syncs_per_step is None else f"{self.host_syncs_per_step:g}"
        return [
            f"model {self.size} on {self.device}: batch {self.batch_size} x {self.tokens_per_clip} tokens, "
            f"{self.precision}, ZeRO-{self.zero_stage}, "
            f"checkpointing {on_off[self.checkpointing]}, compile {on_off[self.compiled]}",
            f"  step        {self.step_ms:9.1f} ms (mean of {self.steps})",
            f"  clips/s     {self.clips_per_s:9.2f}",
            f"  tokens/s    {self.tokens_per_s:9.0f}",
            f"  TFLOP/s     {self.achieved_tflops:9.3f}",
            f"  MFU         {mfu}",
            f"  peak memory {memory}",
            f"  attention   {self.sdpa_kernel}",
            f"  host syncs  {syncs} per step",
            f"  optimizer   {self.optimizer_ms or 0:9.1f} ms of the step (engine.step)",
            f"  set-up      {self.build_s:.1f} s build, {self.first_steps_s:.1f} s warm-up steps",
            *([f"  compiled    {self.compile_stats}"] if self.compile_stats else []),
        ]


def forward_flops(
    size: ModelSize,
    *,
    num_frames: int,
    image_size: int,
    patch_size: int = 16,
    tubelet_size: int = 2,
    in_chans: int = 3,
    num_classes: int = 7,
) -> float:
    """Matmul FLOPs of one clip's forward pass through the encoder, attention included."""
    d, n = size.embed_dim, (num_frames // tubelet_size) * (image_size // patch_size) ** 2
    hidden = int(d * size.mlp_ratio)
    patch = 2 * n * (in_chans * tubelet_size * patch_size**2) * d
    per_block = (
        2 * n * d * 3 * d  # qkv
        + 2 * 2 * n * n * d  # q k^T and attn v
        + 2 * n * d * d  # output projection
        + 2 * 2 * n * d * hidden  # mlp fc1 + fc2
    )
    return float(patch + size.depth * per_block + 2 * d * num_classes)


def detect_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_BF16_TFLOPS.items() if key in name), None)


def sdpa_kernels(run: Callable[[], Any]) -> str:
    """Which SDPA forward kernels ``run`` dispatched to, from the profiler's operator names.

    "none seen" means no SDPA operator ran (a compiler that decomposed attention into its own kernels).
    """
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the profiler's notes about its own cycles
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    seen = {SDPA_KERNELS[e.key] for e in prof.key_averages() if e.key in SDPA_KERNELS}
    return ", ".join(sorted(seen)) or "none seen"


def count_host_syncs(run: Callable[[], Any]) -> int | None:
    """How many times ``run`` blocked the host on the device (CUDA's sync debug mode); None on a CPU."""
    if not torch.cuda.is_available():
        return None
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(w.message) for w in caught)


def _stamp(on_gpu: bool) -> Any:
    """A point on the device's timeline (a recorded CUDA event), else the host clock."""
    if not on_gpu:
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _elapsed_ms(start: Any, end: Any) -> float:
    if isinstance(start, float):
        return 1e3 * (end - start)
    return float(start.elapsed_time(end))


def _compile_stats() -> dict[str, int]:
    """Dynamo's counters: more frames than one, or graph breaks, mean parts of the step ran eagerly."""
    counters = torch._dynamo.utils.counters
    return {
        "frames": int(counters["frames"].get("total", 0)),
        "frames_ok": int(counters["frames"].get("ok", 0)),
        "graphs": int(counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }


def release_memory() -> None:
    """Give back what a finished measurement held, so the next one starts from an empty device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


@contextlib.contextmanager
def bench_engine(
    size: str,
    *,
    batch_size: int,
    num_frames: int,
    image_size: int,
    zero_stage: int,
    bf16: bool,
    lr: float = 1e-4,
    drop_path: float = 0.0,
    checkpointing: bool = False,
    compile: bool = False,
    num_classes: int = 7,
) -> Iterator[Any]:
    """A DeepSpeed engine over a fresh model (seed 0) built on the device; destroyed and released after.

    The model is built on the device: initialising ViT-L's 300 M weights on the host takes seconds.
    ``torch.OutOfMemoryError`` reaches the caller after the engine is gone.
    """
    import deepspeed

    ensure_process_group()
    silence_deepspeed_cpu_build()
    engine = None
    try:
        torch.manual_seed(0)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = build_model(
                size, num_classes, image_size=image_size, num_frames=num_frames, drop_path_rate=drop_path
            )
        if checkpointing:
            model.set_grad_checkpointing(True)
        precision = "bf16" if bf16 else "fp32"
        cfg = TrainingConfig(batch_size=batch_size, zero_stage=zero_stage, precision=precision, lr=lr)
        optimizer = build_optimizer(model, cfg)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg))
        del model, optimizer
        if compile:
            torch._dynamo.utils.counters.clear()
            engine.compile()  # DeepSpeed's own wrapper: keeps its ZeRO hooks working under torch.compile
        yield engine
    finally:
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.destroy()  # ZeRO-3 removes its module hooks here
        engine = None
        release_memory()


def bench_step(
    size: str = "base",
    *,
    batch_size: int = 8,
    num_frames: int = 16,
    image_size: int = 224,
    zero_stage: int = 2,
    bf16: bool = True,
    checkpointing: bool = False,
    compile: bool = False,
    warmup: int = 3,
    steps: int = 10,
    num_classes: int = 7,
    peak_tflops: float | None = None,
    inspect: bool = True,
    drop_path: float = 0.1,
) -> StepBenchmark:
    """Time ``steps`` fine-tuning steps (after ``warmup``) of ``size`` on random clips.

    The engine is built and torn down here (:func:`bench_engine`); ``torch.OutOfMemoryError`` reaches
    the caller after the memory is released. ``inspect`` runs one extra, untimed step under the
    profiler (attention kernel) and one under CUDA's sync debug mode.
    """
    t_build = time.perf_counter()
    with bench_engine(
        size,
        batch_size=batch_size,
        num_frames=num_frames,
        image_size=image_size,
        zero_stage=zero_stage,
        bf16=bf16,
        drop_path=drop_path,
        checkpointing=checkpointing,
        compile=compile,
        num_classes=num_classes,
    ) as engine:
        shape = _BatchShape(batch_size, num_frames, image_size, num_classes)
        m = _measure(engine, shape, warmup=warmup, steps=steps, inspect=inspect, t_build=t_build)
        compile_stats = _compile_stats() if compile else None

    spec = resolve_size(size)
    flops = 3 * forward_flops(spec, num_frames=num_frames, image_size=image_size, num_classes=num_classes)
    achieved = flops * batch_size / m.seconds / 1e12
    peak = peak_tflops or detect_peak_tflops(m.device)
    return StepBenchmark(
        size=size,
        device=m.device_name,
        batch_size=batch_size,
        tokens_per_clip=m.tokens,
        precision="bf16" if bf16 else "fp32",
        zero_stage=zero_stage,
        checkpointing=checkpointing,
        compiled=compile,
        step_ms=1e3 * m.seconds,
        clips_per_s=batch_size / m.seconds,
        tokens_per_s=batch_size * m.tokens / m.seconds,
        achieved_tflops=achieved,
        peak_tflops=peak,
        mfu=achieved / peak if peak else None,
        peak_memory_gib=m.peak_memory_gib,
        memory_total_gib=m.memory_total_gib,
        sdpa_kernel=m.sdpa_kernel,
        host_syncs_per_step=m.host_syncs,
        steps=steps,
        build_s=m.build_s,
        first_steps_s=m.first_steps_s,
        optimizer_ms=m.optimizer_ms,
        compile_stats=compile_stats,
    )


@dataclass(frozen=True)
class _BatchShape:
    """The random batch a benchmark steps on: clips of ``num_frames`` x ``image_size``^2, random labels."""

    batch_size: int
    num_frames: int
    image_size: int
    num_classes: int


@dataclass
class _Measured:
    """What the steps of :func:`bench_step` gave, read off while its engine still exists."""

    device: torch.device
    device_name: str
    tokens: int
    seconds: float  # per timed step
    optimizer_ms: float  # engine.step() alone, per timed step
    peak_memory_gib: float
    memory_total_gib: float | None
    sdpa_kernel: str
    host_syncs: int | None
    build_s: float
    first_steps_s: float


def _measure(
    engine: Any, shape: _BatchShape, *, warmup: int, steps: int, inspect: bool, t_build: float
) -> _Measured:
    """Warm-up, inspection and timed steps on one random batch; ``t_build`` is when the build began.

    The batch is made before the build time is read, as it always was, so ``build_s`` includes it.
    """
    on_gpu = torch.cuda.is_available()
    dtype = next(engine.module.parameters()).dtype
    size = (shape.batch_size, 3, shape.num_frames, shape.image_size, shape.image_size)
    x = torch.randn(*size, device=engine.device, dtype=dtype)
    y = torch.randint(0, shape.num_classes, (shape.batch_size,), device=engine.device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward_backward() -> None:
        engine.backward(loss_fn(engine(x).float(), y))

    def step() -> None:
        forward_backward()
        engine.step()

    build_s = time.perf_counter() - t_build
    kernel, syncs, first_steps_s = _warm_up(step, warmup, inspect=inspect, on_gpu=on_gpu)
    seconds, optimizer_ms = _timed_steps(engine, forward_backward, steps, on_gpu=on_gpu)
    memory, total, device_name = _peak_memory(engine.device, on_gpu=on_gpu)
    return _Measured(
        device=engine.device,
        device_name=device_name,
        tokens=engine.module.num_tokens,
        seconds=seconds,
        optimizer_ms=optimizer_ms,
        peak_memory_gib=memory,
        memory_total_gib=total,
        sdpa_kernel=kernel,
        host_syncs=syncs,
        build_s=build_s,
        first_steps_s=first_steps_s,
    )


def _warm_up(
    step: Callable[[], None], warmup: int, *, inspect: bool, on_gpu: bool
) -> tuple[str, int | None, float]:
    """The untimed first steps, then the inspection steps: (SDPA kernel, host syncs, their seconds).

    Compilation, allocator growth and the profiler's overhead land here, not in the timed steps.
    """
    t_first = time.perf_counter()
    for _ in range(warmup):
        step()
    kernel = sdpa_kernels(step) if inspect else "not checked"
    syncs = count_host_syncs(step) if inspect else None
    if on_gpu:
        torch.cuda.synchronize()
    return kernel, syncs, time.perf_counter() - t_first


def _timed_steps(
    engine: Any, forward_backward: Callable[[], None], steps: int, *, on_gpu: bool
) -> tuple[float, float]:
    """Seconds per step and the optimizer's milliseconds per step; peak memory counts from here on.

    The optimizer is timed on the device's timeline (CUDA events) on a GPU, so it needs no sync per step.
    """
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    optimizer_spans: list[tuple[Any, Any]] = []
    t0 = time.perf_counter()
    for _ in range(steps):
        forward_backward()
        before = _stamp(on_gpu)
        engine.step()
        optimizer_spans.append((before, _stamp(on_gpu)))
    if on_gpu:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    optimizer_ms = sum(_elapsed_ms(a, b) for a, b in optimizer_spans) / steps
    return seconds, optimizer_ms


def _peak_memory(device: torch.device, *, on_gpu: bool) -> tuple[float, float | None, str]:
    """(peak GiB, device total GiB or None, device name): the device's allocator on a GPU, else max RSS."""
    if on_gpu:
        memory = torch.cuda.max_memory_allocated(device) / 2**30
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        return memory, total, torch.cuda.get_device_name(device)
    memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return memory, None, f"CPU ({torch.get_num_threads()} threads)"


def compare_compiled(
    size: str = "base",
    *,
    batch_size: int = 8,
    num_frames: int = 16,
    image_size: int = 224,
    zero_stage: int = 2,
    bf16: bool = True,
    steps: int = 3,
    num_classes: int = 7,
) -> dict[str, Any]:
    """The same steps from the same weights on the same batch, eager and compiled: does compile change them?

    A compiled step that is much faster or lighter than the eager one is only a result if it computes
    the same thing: the losses and DeepSpeed's global gradient norms of each step are compared (drop
    path off, so both runs draw no random numbers), and the parameter updates after the last step.
    """
    runs: dict[str, dict[str, Any]] = {}
    for mode in ("eager", "compiled"):
        with bench_engine(
            size,
            batch_size=batch_size,
            num_frames=num_frames,
            image_size=image_size,
            zero_stage=zero_stage,
            bf16=bf16,
            lr=1e-3,
            compile=mode == "compiled",
            num_classes=num_classes,
        ) as engine:
            before = {n: p.detach().float().clone() for n, p in engine.module.named_parameters()}
            generator = torch.Generator(device=engine.device).manual_seed(1)
            dtype = next(engine.module.parameters()).dtype
            shape = (batch_size, 3, num_frames, image_size, image_size)
            x = torch.randn(shape, device=engine.device, generator=generator).to(dtype)
            y = torch.randint(0, num_classes, (batch_size,), device=engine.device, generator=generator)
            losses, norms = [], []
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(engine(x).float(), y)
                engine.backward(loss)
                engine.step()
                losses.append(float(loss.detach()))
                norms.append(float(engine.get_global_grad_norm()))
            updates = {n: p.detach().float() - before[n] for n, p in engine.module.named_parameters()}
            runs[mode] = {"losses": losses, "grad_norms": norms, "updates": updates}
    eager, compiled = runs["eager"]["updates"], runs["compiled"]["updates"]
    worst, worst_name, diff_sq, norm_sq = 0.0, "", 0.0, 0.0
    for name, u in eager.items():
        diff, norm = float((compiled[name] - u).norm()), float(u.norm())
        diff_sq, norm_sq = diff_sq + diff**2, norm_sq + norm**2
        rel = diff / max(norm, 1e-12)
        if rel > worst:
            worst, worst_name = rel, name
    return {
        "size": size,
        "batch_size": batch_size,
        "precision": "bf16" if bf16 else "fp32",
        "eager_losses": runs["eager"]["losses"],
        "compiled_losses": runs["compiled"]["losses"],
        "eager_grad_norms": runs["eager"]["grad_norms"],
        "compiled_grad_norms": runs["compiled"]["grad_norms"],
        # all updates as one vector: Adam turns the last bits of a near-zero gradient into a full
        # step of either sign, so one small tensor can differ wholly while the step agrees
        "update_rel_diff": (diff_sq / max(norm_sq, 1e-24)) ** 0.5,
        "max_update_rel_diff": worst,
        "worst_param": worst_name,
        "params_compared": len(eager),
    }
