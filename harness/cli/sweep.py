"""``mmder sweep``, ``mmder pretrain`` and ``mmder status``: running an experiment and watching it."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import traceback
from typing import Any

from harness.cli.base import Add, Handler, add_experiment_args, load
from harness.driver.outcome import ExitCode, help_text, stopped_message
from mmder.timing import mark


def register(add: Add) -> dict[str, Handler]:
    s = add(
        "sweep",
        "Run every unfinished cell of an experiment, then print its leaderboard.",
        cmd_sweep,
        "example: mmder sweep experiments/quickstart.yaml            (results in runs/quickstart)\n"
        "         mmder sweep experiments/paper.yaml --dry-run\n" + help_text(),
    )
    add_experiment_args(s)
    _run_args(s, "print the cells to run and to skip; start nothing")
    s.add_argument(
        "--accept-stale",
        action="store_true",
        help="keep finished results whose data or code changed (recorded on their runs) instead of rerunning",
    )
    s.add_argument(
        "--wait", action="store_true", help="wait for cells another sweep is running instead of refusing them"
    )
    st = add(
        "status",
        "Where a sweep stands: one line per cell (done, running, failed, stale, pending), totals, ETA. "
        "Reads MLflow and the storage path only; never starts Ray.",
        cmd_status,
        "example: mmder status experiments/quickstart.yaml --watch\n"
        "         mmder status experiments/quickstart.yaml --format json",
    )
    add_experiment_args(st)
    st.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    st.add_argument("--every", type=float, default=5.0, metavar="SECONDS", help="seconds between refreshes")
    st.add_argument("--format", choices=["table", "json"], default="table")
    pt = add(
        "pretrain",
        "MAE pre-training of the encoder, one resumable run per dataset x fold x input setting, on that "
        "fold's training speakers only (never its test speakers).",
        cmd_pretrain,
        "example: mmder pretrain experiments/quickstart-mae.yaml\n"
        "         mmder sweep experiments/quickstart-mae.yaml   (cells start from the encoders)",
    )
    add_experiment_args(pt, "experiment YAML file (its `pretrain` section)")
    _run_args(pt, "print the pre-trainings to run and to skip")
    return {"sweep": cmd_sweep, "status": cmd_status, "pretrain": cmd_pretrain}


def _run_args(parser: argparse.ArgumentParser, dry_run: str) -> None:
    """What `sweep` and `pretrain` share: they run cells the same way."""
    parser.add_argument("--dry-run", action="store_true", help=dry_run)
    parser.add_argument(
        "--list", action="store_true", help="with --dry-run: every cell, not the first and last few"
    )
    parser.add_argument(
        "--address", help="Ray cluster address (default: the experiment's ray.address, else a local Ray)"
    )
    parser.add_argument("--verbose", action="store_true", help="show the Ray Train workers' logs")
    parser.add_argument(
        "--yes", action="store_true", help="run a grid above resources.max_cells (default 10000 cells)"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over where the output holds checkpoints or artifacts but its MLflow store is gone",
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    return _drive(args, "train")


def cmd_pretrain(args: argparse.Namespace) -> int:
    return _drive(args, "pretrain")


def _drive(args: argparse.Namespace, kind: Any) -> int:
    """Plan, run and report a sweep (``kind="train"``) or its pre-trainings (``"pretrain"``): one path,
    so both refuse, stop and hint at the resume alike."""
    from harness.plan.sweep_plan import format_plan, plan_run, plan_sweep

    spec = load(args)
    accept_stale = getattr(args, "accept_stale", False)
    if args.dry_run:
        print(format_plan(plan_sweep(spec, args.output, kind=kind, accept_stale=accept_stale), args.list))
        return ExitCode.OK
    from harness.driver.sweep import SweepDriver

    t0 = time.monotonic()
    plan = plan_run(
        spec, args.output, kind=kind, accept_stale=accept_stale, echo=print, yes=args.yes, fresh=args.fresh
    )
    driver = SweepDriver(plan, address=args.address, verbose=args.verbose, wait=getattr(args, "wait", False))
    again = " ".join(
        shlex.quote(w)
        for w in ["mmder", args.command, args.experiment, "--output", str(plan.places.output)]
        + [x for o in spec.overrides for x in ("--set", o)]
    )
    driver.resume_hint = again
    outcome = _run(driver, again)
    if outcome is None:
        return ExitCode.SWEEP_FAILED
    if outcome.signal is not None:
        print(stopped_message(outcome, again), file=sys.stderr)
        return outcome.exit_code
    print()
    if kind == "train":
        _closing(plan, t0, args.experiment)
    else:
        for cell in plan.cells:
            print(f"{cell.setting}: {plan.places.encoder_path(cell.key)}")
    if outcome.failed:
        print(
            f"{len(outcome.failed)} cell(s) failed: {', '.join(outcome.failed)}; `{again}` retries them",
            file=sys.stderr,
        )
    elif outcome.refused:
        print(
            f"{len(outcome.refused)} cell(s) refused: another sweep runs them; `{again} --wait` waits",
            file=sys.stderr,
        )
    return outcome.exit_code


def _closing(plan: Any, t0: float, experiment: str) -> None:
    """The sweep's leaderboard, where its results are, and how to browse them."""
    output = plan.places.output
    mark("board_start")
    print(_leaderboard(plan))
    mark("board_end")
    print(f"\nsweep took {time.monotonic() - t0:.0f} s; results in {output}")
    if not (plan.spec.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")):
        print(f"MLflow UI: mmder ui {shlex.quote(experiment)} --output {shlex.quote(str(output))}")


def _run(driver: Any, again: str) -> Any:
    """The driver's outcome; None (after saying why and where the traceback is) when the sweep itself
    failed once its parent run existed, which then ends FAILED with the error."""
    try:
        return driver.run()
    except Exception:
        if driver.outcome.error is None:  # before the store and the parent run existed
            raise
        traceback.print_exc()
        error = driver.outcome.error.strip().splitlines()[-1]
        print(
            f"mmder: the sweep failed: {error}\n"
            f"its parent run {driver.parent} ended FAILED (the traceback is its artifact traceback.txt); "
            f"cells cut off ended KILLED. Rerun with: {again}",
            file=sys.stderr,
        )
        return None


def _leaderboard(plan: Any) -> str:
    """The sweep's leaderboard, re-rendered only when its runs (or the code rendering it) changed."""
    from harness.results.board_cache import board_signature, cached_board, store_board

    output = plan.places.output
    signature = board_signature(plan)
    board = cached_board(output, signature)
    if board is None:
        from harness.results.leaderboard import collect_runs, experiment_leaderboard, render

        exp = collect_runs(plan.spec, output)  # its datasets give the table its protocol line
        board = render(experiment_leaderboard(exp), "table", exp.datasets)
        store_board(output, signature, board)
    return board


def cmd_status(args: argparse.Namespace) -> int:
    from harness.results.status import show
    from harness.results.where import find_results

    spec = load(args)
    places = find_results(spec, args.output)
    return show(spec, places.output, args.format, args.every if args.watch else None)
