"""``mmder bench``: the benchmark commands (figures, not pass/fail), registered with cli.py's parser.

Kept apart from cli.py like the result commands: a dozen parsers and their dispatch are one job.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from harness.cli.results import Handler
from harness.experiment.errors import ConfigError


def add_bench_command(add: Callable[[str, str], argparse.ArgumentParser]) -> dict[str, Handler]:
    """Register ``bench`` and its subcommands with cli.py's ``add(name, help)``; return name -> handler."""
    b = add(
        "bench", "Benchmarks that print figures (not tests): a fine-tuning step, data preparation, loading."
    )
    bsub = b.add_subparsers(dest="bench", required=True)
    st = bsub.add_parser(
        "step",
        help="time fine-tuning steps of a model + DeepSpeed engine in one process (no Ray)",
        epilog="example: mmder bench step --size base --zero 2 --bf16   (on a GPU)\n"
        "         mmder bench step --size tiny --image-size 64 --batch-size 4   (on a CPU)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument("--size", default="base", help="model size (tiny on a CPU)")
    st.add_argument("--batch-size", type=int, default=8)
    st.add_argument("--frames", type=int, default=16)
    st.add_argument("--image-size", type=int, default=224)
    st.add_argument("--zero", type=int, default=2, choices=[0, 1, 2, 3], help="DeepSpeed ZeRO stage")
    st.add_argument("--bf16", action="store_true", help="bf16 weights and activations (GPU)")
    st.add_argument("--checkpointing", action="store_true", help="activation checkpointing per block")
    st.add_argument("--compile", action="store_true", help="torch.compile the model")
    st.add_argument("--steps", type=int, default=10)
    st.add_argument("--warmup", type=int, default=3)
    st.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU (detected for known GPUs)")
    st.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate of the model")

    cc = bsub.add_parser(
        "compile-check",
        help="the same steps eager and torch.compiled from the same weights: losses, gradient norms, updates",
        epilog="example: mmder bench compile-check --size base --batch-size 16 --bf16   (on a GPU)",
    )
    cc.add_argument("--size", default="base")
    cc.add_argument("--batch-size", type=int, default=8)
    cc.add_argument("--frames", type=int, default=16)
    cc.add_argument("--image-size", type=int, default=224)
    cc.add_argument("--zero", type=int, default=2, choices=[0, 1, 2])
    cc.add_argument("--bf16", action="store_true")
    cc.add_argument("--steps", type=int, default=3)
    su = bsub.add_parser(
        "suite",
        help="a whole plan of step benchmarks, each in a fresh process (no Ray): sizes, ZeRO stages, "
        "checkpointing, compile, batch grown until memory is 80 %% full; for one short GPU lease",
        epilog="example: mmder bench suite --plan gpu --output bench.jsonl --deadline 400   (on a GPU)\n"
        "         mmder bench suite --plan cpu --image-size 32 --frames 4   (the same logic on a CPU)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    su.add_argument("--plan", choices=["gpu", "cpu"], default="gpu")
    su.add_argument("--image-size", type=int, default=224)
    su.add_argument("--frames", type=int, default=16)
    su.add_argument("--memory-fraction", type=float, default=0.8, help="grow each batch until this full")
    su.add_argument("--max-batch", type=int, default=256, help="never grow a batch past this")
    su.add_argument(
        "--deadline", type=float, default=420.0, help="seconds; later cases are recorded as skipped"
    )
    su.add_argument("--steps", type=int, default=4, help="timed steps per batch (half above batch 64)")
    su.add_argument("--warmup", type=int, default=2)
    su.add_argument("--output", help="append every record to this JSON-lines file as it is measured")
    bf = bsub.add_parser(
        "fit",
        help="one cell of an experiment through mmder.train.loop.fit in this process (no Ray, no MLflow), then "
        "resumed from an epoch checkpoint: does the loss fall on this device, does the resume continue",
        epilog="example: mmder bench fit experiments/quickstart.yaml --setting FSLF --precision bf16 "
        "--cache runs/quickstart/cache/synthetic-e23d56b025133f69",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bf.add_argument("experiment")
    bf.add_argument("--setting", required=True)
    bf.add_argument("--fold", type=int, default=0)
    bf.add_argument("--seed", type=int, default=0)
    bf.add_argument("--epochs", type=int, default=3)
    bf.add_argument("--resume-after", type=int, default=0, help="resume from this epoch's checkpoint")
    bf.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="override training.precision")
    bf.add_argument("--cache", help="a prepared cache folder (else the experiment's dataset is prepared)")
    bf.add_argument("--output", default="bench-fit", help="checkpoints and figures go here")

    bp = bsub.add_parser(
        "prepare",
        help="clips/s per core of decoding + faces + spectrograms into a temp cache",
        epilog="example: mmder bench prepare cremad ../shared/data/crema-d --image-size 224",
    )
    bp.add_argument("corpus")
    bp.add_argument("root")
    bp.add_argument("--image-size", type=int, default=224)
    bp.add_argument("--face", choices=["haar", "none"], default="haar")
    bp.add_argument("--workers", type=int, default=1)
    bp.add_argument("--limit", type=int, help="only the first N clips")
    bp.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="corpus option")
    bl = bsub.add_parser(
        "loader",
        help="clips/s per core read from a prepared cache through the fused dataset",
        epilog="example: mmder bench loader cache/cremad-0123abcd --setting FSLF",
    )
    bl.add_argument("cache", help="a prepared cache folder (printed by mmder prepare)")
    bl.add_argument("--setting", default="FSLF")
    bl.add_argument("--batch-size", type=int, default=16)
    bl.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    bl.add_argument("--seconds", type=float, default=5.0)
    bs = bsub.add_parser(
        "schedule",
        help="the paper-sized grid (88 cells) through Tune + Train on fake GPUs; device-time efficiency",
        epilog="example: mmder bench schedule --devices 16 --per-cell 4 --scale 20",
    )
    bs.add_argument("--devices", type=int, default=16, help="fake GPUs in the local Ray")
    bs.add_argument("--per-cell", type=int, default=4, help="fake GPUs (Train workers) per cell")
    bs.add_argument("--scale", type=float, default=20.0, help="seconds of sleep per paper-hour of a cell")
    bs.add_argument("--limit", type=int, help="only the N longest cells")
    bs.add_argument(
        "--trainer",
        choices=("plain", "torch"),
        default="plain",
        help="fake cells' trainer: plain (no torch in the workers: the scheduler's own cost) or torch "
        "(the sweep's TorchTrainer: a real cell's start-up, needs a core per fake GPU to mean anything)",
    )

    bo = bsub.add_parser(
        "overhead",
        help="where a cell's start-up goes: a small real sweep with timing marks, and import times",
        epilog="example: mmder bench overhead --settings 2 --epochs 2 --concurrency 2",
    )
    bo.add_argument("--settings", type=int, default=2, help="input settings (x 2 folds = cells)")
    bo.add_argument("--epochs", type=int, default=2)
    bo.add_argument("--concurrency", type=int, default=2, help="cells at a time")
    bo.add_argument("--output", help="sweep folder (default: a new temp folder)")
    return {"bench": cmd_bench}


def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "step":
        from mmder.bench.step import bench_step

        result = bench_step(
            args.size,
            batch_size=args.batch_size,
            num_frames=args.frames,
            image_size=args.image_size,
            zero_stage=args.zero,
            bf16=args.bf16,
            checkpointing=args.checkpointing,
            compile=args.compile,
            steps=args.steps,
            warmup=args.warmup,
            peak_tflops=args.peak_tflops,
            drop_path=args.drop_path,
        )
        print("\n".join(result.lines()))
    elif args.bench == "compile-check":
        import json

        from mmder.bench.step import compare_compiled

        report = compare_compiled(
            args.size,
            batch_size=args.batch_size,
            num_frames=args.frames,
            image_size=args.image_size,
            zero_stage=args.zero,
            bf16=args.bf16,
            steps=args.steps,
        )
        print(json.dumps(report, indent=1))
    elif args.bench == "suite":
        from mmder.bench.suite import run_suite, summary_table

        output = Path(args.output) if args.output else None
        records = run_suite(
            args.plan,
            image_size=args.image_size,
            num_frames=args.frames,
            memory_fraction=args.memory_fraction,
            max_batch=args.max_batch,
            deadline_s=args.deadline,
            warmup=args.warmup,
            steps=args.steps,
            output=output,
        )
        print(summary_table(records))
    elif args.bench == "fit":
        import json

        from harness.bench.fit import bench_fit

        try:
            figures = bench_fit(
                args.experiment,
                Path(args.output),
                setting=args.setting,
                cache=args.cache,
                fold=args.fold,
                seed=args.seed,
                epochs=args.epochs,
                precision=args.precision,
                resume_after=args.resume_after,
            )
        except ValueError as err:  # no such cell, a bad override, nothing left to resume into
            raise ConfigError("bench fit", str(err)) from err
        (Path(args.output) / "figures.json").write_text(json.dumps(figures, indent=2))
        return 0 if figures["loss_fell"] and figures["resumed_where_it_should"] else 1
    elif args.bench == "prepare":
        from harness.cli.main import parse_options  # at call time: cli.py imports this module
        from mmder.bench.data import bench_prepare

        figures = bench_prepare(
            args.corpus,
            args.root,
            image_size=args.image_size,
            face=args.face,
            workers=args.workers,
            limit=args.limit,
            corpus_options=parse_options(args.option),
        )
        _print_figures(figures)
    elif args.bench == "loader":
        from mmder.bench.data import bench_loader

        figures = bench_loader(
            args.cache, args.setting, batch_size=args.batch_size, workers=args.workers, seconds=args.seconds
        )
        _print_figures(figures)
    elif args.bench == "schedule":
        from harness.bench.schedule import bench_schedule

        _print_figures(bench_schedule(args.devices, args.per_cell, args.scale, args.limit, args.trainer))
    elif args.bench == "overhead":
        from harness.bench.overhead import bench_overhead

        _print_figures(bench_overhead(args.settings, args.epochs, args.concurrency, args.output))
    return 0


def _print_figures(figures: dict) -> None:
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
