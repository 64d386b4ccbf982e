"""Fine-tuning step benchmark in one process: the model, a DeepSpeed engine, random clips; no Ray.

It prints what a GPU-hour costs: clips/s, tokens/s, peak memory and model FLOPs utilisation. FLOPs
are counted analytically (matmuls only, 2 per multiply-add) for one forward pass, and a training step
counts as 3 forward passes (backward = 2x forward), as the MFU convention of PaLM/torchtitan does;
recomputation under activation checkpointing is deliberately not counted, so MFU says how well the
useful work runs.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch

from mmder.config import TrainingConfig
from mmder.engine import build_optimizer, deepspeed_config, ensure_process_group, silence_deepspeed_cpu_build
from mmder.model import ModelSize, build_model, resolve_size

# Dense bf16 tensor-core peaks (TFLOP/s) by device name fragment; used when --peak-tflops is not given.
GPU_PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


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

    def lines(self) -> list[str]:
        mfu = (
            f"{100 * self.mfu:.1f} % of {self.peak_tflops:.0f} TFLOP/s"
            if self.mfu is not None
            else "n/a (peak unknown)"
        )
        on_off = {True: "on", False: "off"}
        return [
            f"model {self.size} on {self.device}: batch {self.batch_size} x {self.tokens_per_clip} tokens, "
            f"{self.precision}, ZeRO-{self.zero_stage}, "
            f"checkpointing {on_off[self.checkpointing]}, compile {on_off[self.compiled]}",
            f"  step        {self.step_ms:9.1f} ms",
            f"  clips/s     {self.clips_per_s:9.2f}",
            f"  tokens/s    {self.tokens_per_s:9.0f}",
            f"  TFLOP/s     {self.achieved_tflops:9.3f}",
            f"  MFU         {mfu}",
            f"  peak memory {self.peak_memory_gib:9.2f} GiB",
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
) -> StepBenchmark:
    """Time ``steps`` fine-tuning steps (after ``warmup``) of ``size`` on random clips."""
    import deepspeed

    ensure_process_group()
    silence_deepspeed_cpu_build()
    on_gpu = torch.cuda.is_available()
    precision = "bf16" if bf16 else "fp32"
    torch.manual_seed(0)
    model = build_model(size, num_classes, image_size=image_size, num_frames=num_frames, drop_path_rate=0.1)
    if checkpointing:
        model.set_grad_checkpointing(True)
    cfg = TrainingConfig(batch_size=batch_size, zero_stage=zero_stage, precision=precision, lr=1e-4)
    optimizer = build_optimizer(model, cfg)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg))
    forward = torch.compile(engine.module) if compile else None
    device = engine.device
    dtype = next(engine.module.parameters()).dtype
    x = torch.randn(batch_size, 3, num_frames, image_size, image_size, device=device, dtype=dtype)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        logits = forward(x) if forward is not None else engine(x)
        engine.backward(loss_fn(logits.float(), y))
        engine.step()

    for _ in range(warmup):
        step()
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps

    spec = resolve_size(size)
    tokens = model.num_tokens
    flops = 3 * forward_flops(spec, num_frames=num_frames, image_size=image_size, num_classes=num_classes)
    achieved = flops * batch_size / seconds / 1e12
    peak = peak_tflops or detect_peak_tflops(device)
    if on_gpu:
        memory = torch.cuda.max_memory_allocated(device) / 2**30
        device_name = torch.cuda.get_device_name(device)
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        device_name = f"CPU ({torch.get_num_threads()} threads)"
    return StepBenchmark(
        size=size,
        device=device_name,
        batch_size=batch_size,
        tokens_per_clip=tokens,
        precision=precision,
        zero_stage=zero_stage,
        checkpointing=checkpointing,
        compiled=compile,
        step_ms=1e3 * seconds,
        clips_per_s=batch_size / seconds,
        tokens_per_s=batch_size * tokens / seconds,
        achieved_tflops=achieved,
        peak_tflops=peak,
        mfu=achieved / peak if peak else None,
        peak_memory_gib=memory,
    )
