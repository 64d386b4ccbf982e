"""``mmder bench``: the benchmark commands (figures, not pass/fail), one parser and one handler each."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.cli.base import Add, Handler, HelpFormatter, add_set_arg, load, parse_options, print_figures
from harness.experiment.errors import ConfigError


def register(add: Add) -> dict[str, Handler]:
    b = add(
        "bench",
        "Benchmarks that print figures (not tests): a fine-tuning step, data preparation, loading.",
        _no_subcommand,
    )
    subs = b.add_subparsers(dest="bench", required=True)
    for define in (_step, _compile_check, _suite, _fit, _prepare, _loader, _schedule, _overhead, _scale):
        define(subs)
    return {"bench": _no_subcommand}


def _no_subcommand(args: argparse.Namespace) -> int:
    """Never reached: argparse requires a sub-command, whose own handler replaces this one."""
    return 2


def _sub(subs: argparse._SubParsersAction, name: str, help_: str, epilog: str, handler: Handler) -> Any:
    parser = subs.add_parser(
        name, help=help_, description=help_, epilog=epilog, formatter_class=HelpFormatter
    )
    parser.set_defaults(handler=handler)
    return parser


def _step_shape(parser: argparse.ArgumentParser) -> None:
    """The model and clip shape a step benchmark (and its compile check) runs."""
    parser.add_argument("--size", default="base", help="model size (tiny on a CPU)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)


def _step(subs: argparse._SubParsersAction) -> None:
    st = _sub(
        subs,
        "step",
        "time fine-tuning steps of a model + DeepSpeed engine in one process (no Ray)",
        "example: mmder bench step --size base --zero 2 --bf16   (on a GPU)\n"
        "         mmder bench step --size tiny --image-size 64 --batch-size 4   (on a CPU)",
        run_step,
    )
    _step_shape(st)
    st.add_argument("--zero", type=int, default=2, choices=[0, 1, 2, 3], help="DeepSpeed ZeRO stage")
    st.add_argument("--bf16", action="store_true", help="bf16 weights and activations (GPU)")
    st.add_argument("--checkpointing", action="store_true", help="activation checkpointing per block")
    st.add_argument("--compile", action="store_true", help="torch.compile the model")
    st.add_argument("--steps", type=int, default=10)
    st.add_argument("--warmup", type=int, default=3)
    st.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU (detected for known GPUs)")
    st.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate of the model")


def run_step(args: argparse.Namespace) -> int:
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
    return 0


def _compile_check(subs: argparse._SubParsersAction) -> None:
    cc = _sub(
        subs,
        "compile-check",
        "the same steps eager and torch.compiled from the same weights: losses, gradient norms, updates",
        "example: mmder bench compile-check --size base --batch-size 16 --bf16   (on a GPU)",
        run_compile_check,
    )
    _step_shape(cc)
    cc.add_argument("--zero", type=int, default=2, choices=[0, 1, 2])
    cc.add_argument("--bf16", action="store_true")
    cc.add_argument("--steps", type=int, default=3)


def run_compile_check(args: argparse.Namespace) -> int:
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
    return 0


def _suite(subs: argparse._SubParsersAction) -> None:
    su = _sub(
        subs,
        "suite",
        "a whole plan of step benchmarks, each in a fresh process (no Ray): sizes, ZeRO stages, "
        "checkpointing, compile, batch grown until memory is 80 %% full; for one short GPU lease",
        "example: mmder bench suite --plan gpu --jsonl bench.jsonl --deadline 400   (on a GPU)\n"
        "         mmder bench suite --plan cpu --image-size 32 --frames 4   (the same logic on a CPU)",
        run_suite,
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
    su.add_argument("--jsonl", help="append every record to this JSON-lines file as it is measured")


def run_suite(args: argparse.Namespace) -> int:
    from mmder.bench.suite import run_suite as suite
    from mmder.bench.suite import summary_table

    records = suite(
        args.plan,
        image_size=args.image_size,
        num_frames=args.frames,
        memory_fraction=args.memory_fraction,
        max_batch=args.max_batch,
        deadline_s=args.deadline,
        warmup=args.warmup,
        steps=args.steps,
        output=Path(args.jsonl) if args.jsonl else None,
    )
    print(summary_table(records))
    return 0


def _fit(subs: argparse._SubParsersAction) -> None:
    bf = _sub(
        subs,
        "fit",
        "one cell of an experiment through mmder.train.loop.fit here (no Ray, no MLflow), then "
        "resumed from an epoch checkpoint: does the loss fall on this device, does the resume continue",
        "example: mmder bench fit experiments/quickstart.yaml --setting FSLF --precision bf16 "
        "--cache runs/quickstart/cache/synthetic-e23d56b025133f69",
        run_fit,
    )
    bf.add_argument("experiment")
    bf.add_argument("--setting", required=True)
    bf.add_argument("--fold", type=int, default=0)
    bf.add_argument("--seed", type=int, default=0)
    bf.add_argument("--epochs", type=int, default=3)
    bf.add_argument("--resume-after", type=int, default=0, help="resume from this epoch's checkpoint")
    bf.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="override training.precision")
    bf.add_argument("--cache", help="a prepared cache folder (else the experiment's dataset is prepared)")
    bf.add_argument("--workdir", default="bench-fit", help="checkpoints, data and figures go here")
    add_set_arg(bf)


def run_fit(args: argparse.Namespace) -> int:
    from harness.bench.fit import bench_fit

    spec = load(args)
    try:
        figures = bench_fit(
            spec,
            Path(args.workdir),
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
    (Path(args.workdir) / "figures.json").write_text(json.dumps(figures, indent=2))
    return 0 if figures["loss_fell"] and figures["resumed_where_it_should"] else 1


def _prepare(subs: argparse._SubParsersAction) -> None:
    bp = _sub(
        subs,
        "prepare",
        "clips/s per core of decoding + faces + spectrograms into a temp cache",
        "example: mmder bench prepare cremad ../shared/data/crema-d --image-size 224",
        run_prepare,
    )
    bp.add_argument("corpus")
    bp.add_argument("root")
    bp.add_argument("--image-size", type=int, default=224)
    bp.add_argument("--face", choices=["haar", "none"], default="haar")
    bp.add_argument("--workers", type=int, default=1)
    bp.add_argument("--limit", type=int, help="only the first N clips")
    bp.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="corpus option")


def run_prepare(args: argparse.Namespace) -> int:
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
    print_figures(figures)
    return 0


def _loader(subs: argparse._SubParsersAction) -> None:
    bl = _sub(
        subs,
        "loader",
        "clips/s per core read from a prepared cache through the fused dataset",
        "example: mmder bench loader cache/cremad-0123abcd --setting FSLF",
        run_loader,
    )
    bl.add_argument("cache", help="a prepared cache folder (printed by mmder prepare)")
    bl.add_argument("--setting", default="FSLF")
    bl.add_argument("--batch-size", type=int, default=16)
    bl.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    bl.add_argument("--seconds", type=float, default=5.0)


def run_loader(args: argparse.Namespace) -> int:
    from mmder.bench.data import bench_loader

    print_figures(
        bench_loader(
            args.cache, args.setting, batch_size=args.batch_size, workers=args.workers, seconds=args.seconds
        )
    )
    return 0


def _schedule(subs: argparse._SubParsersAction) -> None:
    bs = _sub(
        subs,
        "schedule",
        "the paper-sized grid (88 cells) through Tune + Train on fake GPUs; device-time efficiency",
        "example: mmder bench schedule --devices 16 --per-cell 4 --scale 20",
        run_schedule,
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


def run_schedule(args: argparse.Namespace) -> int:
    from harness.bench.schedule import bench_schedule

    print_figures(bench_schedule(args.devices, args.per_cell, args.scale, args.limit, args.trainer))
    return 0


def _overhead(subs: argparse._SubParsersAction) -> None:
    bo = _sub(
        subs,
        "overhead",
        "where a cell's start-up goes: a small real sweep with timing marks, and import times",
        "example: mmder bench overhead --settings 2 --epochs 2 --concurrency 2",
        run_overhead,
    )
    bo.add_argument("--settings", type=int, default=2, help="input settings (x 2 folds = cells)")
    bo.add_argument("--epochs", type=int, default=2)
    bo.add_argument("--concurrency", type=int, default=2, help="cells at a time")
    bo.add_argument("--output", help="the sweep's output folder (default: a new temp folder)")


def run_overhead(args: argparse.Namespace) -> int:
    from harness.bench.overhead import bench_overhead

    print_figures(bench_overhead(args.settings, args.epochs, args.concurrency, args.output))
    return 0


def _scale(subs: argparse._SubParsersAction) -> None:
    bs = _sub(
        subs,
        "scale",
        "a sweep of N micro cells (trained, or --made-up finished runs), then every read command timed",
        "example: mmder bench scale --cells 1000\n"
        "         mmder bench scale --cells 10000 --made-up   (the read path at 10,000 finished cells)",
        run_scale,
    )
    bs.add_argument(
        "--cells", type=int, default=100, help="cells (rounded up to 8 settings x 2 folds x seeds)"
    )
    bs.add_argument("--made-up", action="store_true", help="write finished runs without training them")
    bs.add_argument("--concurrency", type=int, default=2, help="lanes (cells at a time)")
    bs.add_argument("--no-reads", action="store_true", help="write only; time no read command")
    bs.add_argument(
        "--kill-at",
        type=int,
        metavar="K",
        help="SIGKILL the sweep's driver once K cells have finished, time the rerun's planning, finish it, "
        "and check one FINISHED run per cell and no epoch logged twice",
    )
    bs.add_argument("--tracking-uri", help="an MLflow server to log to (default: SQLite in the output)")
    bs.add_argument("--output", help="the sweep's output folder (default: a new temp folder)")
    bs.add_argument("--json", help="also write the figures to this JSON file")


def run_scale(args: argparse.Namespace) -> int:
    from harness.bench.scale import bench_scale

    figures = bench_scale(
        args.cells,
        args.output,
        args.made_up,
        args.concurrency,
        not args.no_reads,
        kill_at=args.kill_at,
        tracking_uri=args.tracking_uri,
    )
    print_figures(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0
