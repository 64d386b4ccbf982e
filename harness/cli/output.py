"""``mmder ui`` and ``mmder clean``: looking at an experiment's store, and freeing its disk."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

from harness.cli.base import Add, Handler, add_experiment_args, load


def register(add: Add) -> dict[str, Handler]:
    ui = add(
        "ui",
        "Start the MLflow UI on the experiment's store (the embedded SQLite file, or say where the "
        "server's UI is) and print its URL; Ctrl-C stops it.",
        cmd_ui,
        "example: mmder ui experiments/quickstart.yaml --port 5000",
    )
    add_experiment_args(ui)
    ui.add_argument("--host", default="127.0.0.1", help="address the UI listens on")
    ui.add_argument("--port", type=int, default=5000, help="port the UI listens on")
    cl = add(
        "clean",
        "Show what the experiment's output holds, with sizes, and remove on request what no result needs: "
        "checkpoints of finished cells, of cells no longer in the grid, the clip cache. Results (the "
        "MLflow store, artifacts, pre-trained encoders) are never removed.",
        cmd_clean,
        "example: mmder clean experiments/quickstart.yaml                 (what is there)\n"
        "         mmder clean experiments/quickstart.yaml --checkpoints --dry-run\n"
        "         mmder clean experiments/quickstart.yaml --checkpoints --superseded",
    )
    add_experiment_args(cl)
    cl.add_argument("--checkpoints", action="store_true", help="remove the checkpoints of finished cells")
    cl.add_argument(
        "--superseded", action="store_true", help="remove the checkpoints of cells no longer in the grid"
    )
    cl.add_argument("--cache", action="store_true", help="remove the preprocessed clip cache")
    cl.add_argument("--tune", action="store_true", help="remove Tune's per-trial folders")
    cl.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    return {"ui": cmd_ui, "clean": cmd_clean}


def cmd_clean(args: argparse.Namespace) -> int:
    from harness.results.disk import holdings, human, plan_outputs, remove
    from harness.results.where import find_results

    spec = load(args)
    places = find_results(spec, args.output)
    found = holdings(plan_outputs(spec, places.output))
    asked = {
        flag for flag in ("--checkpoints", "--superseded", "--cache", "--tune") if getattr(args, flag[2:])
    }
    print(f"{places.output}:")
    for h in found:
        flag = f"  [{h.removable}]" if h.removable else ""
        print(f"  {human(h.size):>9}  {len(h.paths):>4} item(s)  {h.what}{flag}")
    chosen = [h for h in found if h.removable in asked and h.paths]
    if not chosen:
        print(
            "nothing removed" + ("" if asked else " (name what to remove: --checkpoints, --superseded, ...)")
        )
        return 0
    freed = 0
    for h in chosen:
        if args.dry_run:
            print(f"would remove {h.what}: {human(h.size)}")
            for path in h.paths[:5]:
                print(f"    {path}")
            if len(h.paths) > 5:
                print(f"    ... and {len(h.paths) - 5} more")
        else:
            freed += remove(h)
            print(f"removed {h.what}")
    if not args.dry_run:
        print(f"freed {human(freed)}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from harness.results.where import find_results
    from harness.tracking.places import sqlite_path

    spec = load(args)
    places = find_results(spec, args.output)
    if sqlite_path(places.tracking_uri) is None:  # a tracking server serves its own UI
        experiment = spec.mlflow_experiment
        print(f"MLflow UI: {places.tracking_uri} (served by the tracking server; experiment {experiment!r})")
        return 0
    from harness.tracking.relocate import adopt_output

    adopt_output(places.tracking_uri, places.output)  # a moved output's UI shows the artifacts it holds
    url = f"http://{args.host}:{args.port}"
    _stop_on_signals()
    # One person browsing one file: one worker, and none of the server's job runners (7 processes that
    # evaluate GenAI jobs; they took most of the UI's start-up on 2 cores). An exported value wins.
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        places.tracking_uri,
        "--workers",
        "1",
    ]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    # A UI left behind keeps the port answering (seen twice in loaded test runs: the server outlived
    # this process). So the server has its own process group, stopped as a group; and should this
    # process die without stopping it (killed, its terminal closed), the kernel sends the server SIGTERM,
    # which stops its uvicorn as well.
    server = subprocess.Popen(
        [*command, "--host", args.host, "--port", str(args.port)],
        env=env,
        start_new_session=True,
        preexec_fn=_terminate_with_parent,
    )
    try:
        if _wait_until_up(url, server):
            what = f"experiment {spec.mlflow_experiment!r}; pid {server.pid}; Ctrl-C stops it"
            print(f"MLflow UI: {url}  ({what})", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)


def _stop_on_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP (its terminal closed) all stop the UI through ``cmd_ui``'s ``finally``.

    SIGINT is set back to Python's handler and unblocked: an ignored or blocked SIGINT is inherited
    from whoever started this process (a test runner's worker did: the suite's Ctrl-C test then waited
    out its 60 s), and "Ctrl-C stops it" is what the command promises.
    """

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux's PR_SET_PDEATHSIG; elsewhere a
    no-op, and the group stop in :func:`cmd_ui` is all there is)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop_group(server: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the server's whole process group, SIGKILL to what is left after ``grace_s``."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, signum)
        except ProcessLookupError:
            break  # the group is gone
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(server.pid):
            server.poll()  # reap the leader, or it stays a zombie member of its group
            time.sleep(0.2)
        if not _group_alive(server.pid):
            break
    server.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until_up(url: str, server: Any, seconds: float = 120.0) -> bool:
    """True once the UI answers; False if its process ended first."""
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False
