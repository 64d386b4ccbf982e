"""``mmder``: the command line. Every sub-command's ``--help`` shows an example."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from harness.cli.bench import add_bench_command
from harness.cli.results import add_result_commands
from harness.experiment.errors import ConfigError

EXAMPLES = {
    "validate": "example: mmder validate experiments/quickstart.yaml\n"
    "         mmder validate experiments/paper.yaml   (paths on another machine are warnings here)",
    "schema": "example: mmder schema > experiments/experiment.schema.json",
    "pretrain": "example: mmder pretrain experiments/quickstart-mae.yaml\n"
    "         mmder sweep experiments/quickstart-mae.yaml   (cells start from the encoders)",
    "sweep": "example: mmder sweep experiments/quickstart.yaml            (results in runs/quickstart)\n"
    "         mmder sweep experiments/paper.yaml --dry-run\n"
    "exit codes: 0 all cells finished, 1 a cell failed, 2 bad experiment, 3 cells refused (another\n"
    "sweep owns them), 130 SIGINT, 143 SIGTERM (running cells end KILLED; rerun to resume them)",
    "status": "example: mmder status experiments/quickstart.yaml --watch\n"
    "         mmder status experiments/quickstart.yaml --format json",
    "leaderboard": "example: mmder leaderboard experiments/quickstart.yaml --format markdown",
    "synth": "example: mmder synth data/synthetic --clips-per-class 3 --speakers 16 --seed 0",
    "convert": "example: mmder convert videomae_vit_l_k400.pth vit_l_ours.pt",
    "prepare": "example: mmder prepare ravdess /data/RAVDESS --face haar --option classes=7\n"
    "         mmder prepare cremad /data/CREMA-D --workers 8",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmder",
        description="MultiMAE-DER benchmarking harness: Ray Tune grids of Ray Train + DeepSpeed jobs, "
        "tracked in MLflow.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_.replace("%", "%%"),  # argparse %-formats help strings ("95 % t" broke --help)
            description=help_,
            epilog=EXAMPLES.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    v = add(
        "validate",
        "Check an experiment file (and, where its data is here, its corpus listings) and print its cells; "
        "starts nothing.",
    )
    v.add_argument("experiment", help="experiment YAML file")
    v.add_argument("--output", help="the sweep's output folder (default: runs/<experiment name>)")

    sc = add("schema", "Print the experiment file's JSON Schema (for editors that complete and check YAML).")
    sc.add_argument("--output", "-o", help="write it to this file instead of standard output")

    s = add("sweep", "Run every unfinished cell of an experiment, then print its leaderboard.")
    s.add_argument("experiment", help="experiment YAML file")
    s.add_argument(
        "--output", help="folder for everything the sweep writes (default: runs/<experiment name>)"
    )
    s.add_argument("--dry-run", action="store_true", help="print the cells to run and to skip; start nothing")
    s.add_argument(
        "--address", help="Ray cluster address (default: the experiment's ray.address, else a local Ray)"
    )
    s.add_argument("--verbose", action="store_true", help="show the Ray Train workers' logs")
    s.add_argument(
        "--accept-stale",
        action="store_true",
        help="keep finished results whose data or code changed (recorded on their runs) instead of rerunning",
    )
    s.add_argument(
        "--wait", action="store_true", help="wait for cells another sweep is running instead of refusing them"
    )

    st_ = add(
        "status",
        "Where a sweep stands: one line per cell (done, running, failed, stale, pending), totals, ETA. "
        "Reads MLflow and the storage path only; never starts Ray.",
    )
    st_.add_argument("experiment", help="experiment YAML file")
    st_.add_argument("--output", help="the sweep's output folder (default: runs/<experiment name>)")
    st_.add_argument(
        "--watch", nargs="?", const=5.0, type=float, metavar="SECONDS", help="refresh (every 5 s)"
    )
    st_.add_argument("--format", choices=["table", "json"], default="table")

    pt = add(
        "pretrain",
        "MAE pre-training of the encoder, one resumable run per dataset x fold x input setting, on that "
        "fold's training speakers only (never its test speakers).",
    )
    pt.add_argument("experiment", help="experiment YAML file (its `pretrain` section)")
    pt.add_argument("--output", help="the sweep's output folder (default: runs/<experiment name>)")
    pt.add_argument("--dry-run", action="store_true", help="print the pre-trainings to run and to skip")
    pt.add_argument("--address", help="Ray cluster address")
    pt.add_argument("--verbose", action="store_true", help="show the Ray Train workers' logs")

    COMMANDS.update(add_result_commands(add))  # leaderboard, compare, report

    sy = add("synth", "Write the synthetic corpus with known answers (mp4 + wav per clip, manifest.csv).")
    sy.add_argument("out", help="output folder")
    sy.add_argument("--clips-per-class", type=int, default=3, help="clips per class and speaker (default 3)")
    sy.add_argument("--speakers", type=int, default=16, help="number of speakers (default 16)")
    sy.add_argument("--seed", type=int, default=0)

    pr = add("prepare", "Decode a corpus into the preprocessed cache (faces, 16 frames, spectrogram images).")
    pr.add_argument("corpus", help="corpus adapter: ravdess, cremad, iemocap, manifest, synthetic")
    pr.add_argument("root", help="the corpus folder as downloaded (a CSV for manifest)")
    pr.add_argument("--output", default="cache", help="cache folder (default: ./cache)")
    pr.add_argument("--face", choices=["haar", "none"], default="none", help="face crops (default none)")
    pr.add_argument("--image-size", type=int, default=224)
    pr.add_argument("--spectrogram", choices=["mfcc", "logmel"], default="mfcc")
    pr.add_argument("--colormap", choices=["viridis", "gray"], default="viridis")
    pr.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    pr.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="corpus option, e.g. classes=7 or include_song=true (repeatable)",
    )

    COMMANDS.update(add_bench_command(add))  # bench step, suite, fit, ...

    cv = add(
        "convert", "Convert a VideoMAE checkpoint (official fine-tuned/pre-trained, HuggingFace) to ours."
    )
    cv.add_argument("src")
    cv.add_argument("dst")
    cv.add_argument("--num-heads", type=int, help="attention heads, when the size is not a known one")
    return p


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.results.board_cache import board_signature, cached_board, store_board
    from harness.experiment.config import load_experiment
    from harness.plan.sweep_plan import format_plan, output_dir, plan_sweep
    from harness.driver.sweep import run_sweep

    spec = load_experiment(args.experiment)
    output = output_dir(spec, args.output)
    if args.dry_run:
        print(format_plan(plan_sweep(spec, output, accept_stale=args.accept_stale)))
        return 0
    t0 = time.monotonic()
    outcome = run_sweep(
        spec,
        output,
        address=args.address,
        verbose=args.verbose,
        accept_stale=args.accept_stale,
        wait=args.wait,
    )
    again = f"mmder sweep {args.experiment} --output {output}"
    if outcome.signal is not None:
        name = "SIGINT" if outcome.signal == signal.SIGINT else "SIGTERM"
        print(
            f"mmder: stopped by {name}; {len(outcome.killed)} running cell(s) ended KILLED. "
            f"Resume with: {again}  (each cell continues from its last epoch checkpoint)",
            file=sys.stderr,
        )
        return 128 + outcome.signal
    print()
    signature = board_signature(spec, output)
    board = cached_board(output, signature)
    if board is None:  # rendered only when its runs (or the code rendering it) changed
        from harness.results.leaderboard import experiment_leaderboard, render

        board = render(experiment_leaderboard(spec, output))
        store_board(output, signature, board)
    print(board)
    print(f"\nsweep took {time.monotonic() - t0:.0f} s; results in {output}")
    if not (spec.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")):
        print(f"MLflow UI: uv run mlflow ui --backend-store-uri sqlite:///{output / 'mlflow.db'}")
    if outcome.failed:
        print(
            f"{len(outcome.failed)} cell(s) failed: {', '.join(outcome.failed)}; `{again}` retries them",
            file=sys.stderr,
        )
        return 1
    if outcome.refused:
        print(
            f"{len(outcome.refused)} cell(s) refused: another sweep runs them; `{again} --wait` waits",
            file=sys.stderr,
        )
        return 3
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from harness.experiment.config import load_experiment
    from harness.plan.sweep_plan import output_dir
    from harness.results.status import show

    spec = load_experiment(args.experiment)
    return show(spec, output_dir(spec, args.output), args.format, args.watch)


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.plan.checks import check_listings, missing_paths
    from harness.experiment.config import load_experiment
    from harness.plan.cells import expand_cells, expand_pretrain_cells
    from harness.plan.sweep_plan import output_dir

    spec = load_experiment(args.experiment)
    output = output_dir(spec, args.output)
    cells = expand_cells(spec)
    print(f"{args.experiment}: valid; {len(cells)} cells")
    for cell in cells:
        print(f"  {cell.key}  {cell.dataset} / {cell.setting} / {cell.fold_name} / seed {cell.seed}")
    if spec.model.pretrained == "mae":
        print(f"  + {len(expand_pretrain_cells(spec))} pre-trainings (mmder pretrain)")
    from mmder.train.recipes import lr_rule

    t = spec.training
    world = spec.resources.num_workers
    preset = f"preset {t.preset}, " if t.preset else ""
    print(
        f"training: {preset}recipe {t.recipe}, lr {t.lr:g} at a global batch of {t.batch_size * world} "
        f"({t.batch_size} x {world} workers), {t.epochs} epochs, precision "
        f"{cells[0].training.precision if cells and cells[0].training else t.precision}"
    )
    print(f"  {lr_rule(t, world)}")
    if spec.search is not None:
        search = spec.search
        per = "(dataset, setting, fold)" if search.scope == "per_fold" else "(dataset, setting)"
        drawn = search.random_trials()
        how = "all at random" if drawn >= search.trials else f"{drawn} at random, then TPE"
        print(
            f"search: {search.trials} trials per {per}, {how}; validation {search.objective} on "
            f"{search.validation_speakers:g} held-out training speakers; pruner {search.pruner}"
        )
    missing = missing_paths(spec, output)
    for key, path in missing:
        print(f"warning: {key}: {path} does not exist here (a sweep checks it again before it starts)")
    if not missing:
        check_listings(spec, output, {ds.label for ds in spec.datasets}, print, generate=False)
        print("corpus listings and folds: ok")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from harness.experiment.config import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from harness.experiment.config import load_experiment
    from harness.plan.sweep_plan import format_plan, output_dir, plan_pretrain
    from harness.driver.sweep import encoder_path, run_pretrain

    spec = load_experiment(args.experiment)
    output = output_dir(spec, args.output)
    if args.dry_run:
        print(format_plan(plan_pretrain(spec, output)))
        return 0
    outcome = run_pretrain(spec, output, address=args.address, verbose=args.verbose)
    if outcome.signal is not None:
        print(
            f"mmder: stopped; resume with: mmder pretrain {args.experiment} --output {output}",
            file=sys.stderr,
        )
        return 128 + outcome.signal
    for cell in plan_pretrain(spec, output).cells:
        print(f"{cell.setting}: {encoder_path(output, cell.key)}")
    failed = len(outcome.failed)
    if failed:
        print(f"{failed} pre-training(s) failed; run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from mmder.data.synthetic import generate_corpus

    for name in ("clips_per_class", "speakers"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", "must be at least 1")
    t0 = time.monotonic()
    manifest = generate_corpus(
        Path(args.out), clips_per_class=args.clips_per_class, speakers=args.speakers, seed=args.seed
    )
    print(f"synthetic corpus: {manifest} ({time.monotonic() - t0:.1f} s)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from mmder.models.checkpoints import convert_checkpoint

    report = convert_checkpoint(args.src, args.dst, num_heads=args.num_heads)
    print(report.summary())
    print(f"wrote {args.dst}")
    return 0


def _option_value(text: str) -> object:
    """YAML's reading of a command-line value: 7 -> int, true -> bool, [a, b] -> list."""
    import yaml

    return yaml.safe_load(text)


def parse_options(pairs: list[str]) -> dict[str, object]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--option", f"expected KEY=VALUE, got {pair!r}")
        options[key] = _option_value(value)
    return options


def cmd_prepare(args: argparse.Namespace) -> int:
    from mmder.data.cache import PreprocessConfig, prepare_corpus
    from mmder.data.corpora import available_corpora

    if args.corpus not in available_corpora():
        raise ConfigError(
            "corpus", f"{args.corpus!r} is not allowed; allowed: {', '.join(available_corpora())}"
        )
    if not Path(args.root).exists():
        raise ConfigError("root", f"folder does not exist: {args.root}")
    try:
        config = PreprocessConfig(
            image_size=args.image_size, face=args.face, spectrogram=args.spectrogram, colormap=args.colormap
        )
    except ValueError as err:
        raise ConfigError("--image-size/--face", str(err)) from err
    t0 = time.monotonic()
    try:
        prepared = prepare_corpus(
            args.corpus,
            args.root,
            args.output,
            config,
            corpus_options=parse_options(args.option),
            workers=args.workers,
            progress=sys.stderr.isatty(),
        )
    except (KeyError, ValueError) as err:
        raise ConfigError("--option", str(err)) from err
    print(f"prepared {prepared.n_prepared}, skipped {prepared.n_skipped} in {time.monotonic() - t0:.1f} s")
    print(f"cache: {prepared.path}")
    print(f"skip report: {prepared.skip_report}")
    return 0


COMMANDS = {
    "validate": cmd_validate,
    "schema": cmd_schema,
    "sweep": cmd_sweep,
    "status": cmd_status,
    "synth": cmd_synth,
    "convert": cmd_convert,
    "prepare": cmd_prepare,
    "pretrain": cmd_pretrain,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # inside the try: a closed pipe must end here, not in the interpreter's exit
        return code
    except ConfigError as err:
        print(f"mmder: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nmmder: interrupted; run the same command again to continue where it stopped", file=sys.stderr
        )
        return 130
    except BrokenPipeError:
        # `mmder validate x.yaml | head`: the reader left; a traceback would only hide its output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
