"""`mmder clean` frees what no result needs and nothing else; `mmder ui` serves the experiment's store."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sweep_helpers import tiny_experiment

from harness.cli.main import main
from harness.experiment.loading import load_experiment
from harness.plan.cells import expand_cells
from harness.plan.places import Places
from harness.plan.provenance import code_versions
from harness.tracking.places import store_lock
from harness.tracking.store import Tracker
from harness.tracking.tags import FINISHED, TAG_CELL, TAG_STATUS


def _store(tmp_path: Path) -> tuple[Path, Places, list[str]]:
    """A tiny experiment's output: one finished cell, one not, an older key of it, a stranger's folder."""
    exp = tiny_experiment(tmp_path, "tidy", own_corpus=True)  # runs made up, no data digest
    spec = load_experiment(exp)
    places = Places.of(spec, tmp_path / "out")
    with store_lock(places.tracking_uri):
        tracker = Tracker.open(
            places.tracking_uri, spec.mlflow_experiment, artifact_root=places.artifact_root
        )
    done, running = (c.key for c in expand_cells(spec))
    for key, finished in ((done, True), (running, False), ("syn-video-f0-s0-0ldversion", True)):
        tags = {TAG_CELL: key, **code_versions(), **({TAG_STATUS: FINISHED} if finished else {})}
        run = tracker.client.create_run(tracker.experiment_id, tags=tags)
        if finished:
            tracker.client.set_terminated(run.info.run_id)
    keys = [done, running, "syn-video-f0-s0-0ldversion", "another-experiments-cell"]
    for key in keys:
        checkpoint = Path(places.storage) / key / "attempt-000" / "checkpoint_1"
        checkpoint.mkdir(parents=True)
        (checkpoint / "weights.pt").write_bytes(b"x" * 1000)
    return exp, places, keys


def test_clean_removes_finished_and_old_checkpoints_only_on_request(tmp_path, capsys):
    exp, places, (done, running, old, stranger) = _store(tmp_path)
    args = ["clean", str(exp), "--output", str(places.output)]
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "checkpoints of finished cells  [--checkpoints]" in shown and "1.0 kB" in shown
    assert main([*args, "--checkpoints", "--superseded", "--dry-run"]) == 0
    assert "would remove" in capsys.readouterr().out
    assert all((Path(places.storage) / k / "attempt-000").exists() for k in (done, running, old, stranger))
    assert main([*args, "--checkpoints", "--superseded"]) == 0
    assert "freed 2.0 kB" in capsys.readouterr().out
    gone = {
        k for k in (done, running, old, stranger) if not (Path(places.storage) / k / "attempt-000").exists()
    }
    assert gone == {done, old}, "only a finished cell's and an older version's checkpoints go"
    assert (places.output / "mlflow.db").exists(), "results are never removed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deaf_to_ctrl_c() -> None:
    """What a parent can hand down: SIGINT ignored (a shell's background job) and blocked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _start_ui(tmp_path: Path, preexec_fn=None) -> tuple[subprocess.Popen, int]:
    """`mmder ui` on a tiny store, once it says it answers; the UI's port."""
    exp, places, _ = _store(tmp_path)
    port = _free_port()
    command = ["ui", str(exp), "--output", str(places.output), "--port", str(port)]
    ui = subprocess.Popen(
        [sys.executable, "-m", "harness.cli.main", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=preexec_fn,
    )
    lines = iter(ui.stdout.readline, "")
    line = next((x for x in lines if x.startswith("MLflow UI:")), "")  # printed once the UI answers
    assert line.startswith(f"MLflow UI: http://127.0.0.1:{port}"), line
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=tidy"
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert json.load(answer)["experiment"]["name"] == "tidy"
    return ui, port


def _assert_gone(port: int, said: str) -> None:
    """The port stops answering within 30 s and no process of the server is left."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
        except OSError:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the UI still answers after {said}")
    left = subprocess.run(["pgrep", "-af", f"--port {port}"], capture_output=True, text=True).stdout
    assert not [ln for ln in left.splitlines() if "pgrep" not in ln], f"{said} left: {left}"


@pytest.mark.slow  # the MLflow UI's server takes seconds to start and to stop
@pytest.mark.parametrize("inherited", ["default", "ignored and blocked"])
def test_ui_serves_the_experiments_store_until_ctrl_c(tmp_path, inherited):
    """Ctrl-C stops it, also when it was started with SIGINT ignored and blocked (both are inherited:
    in a full suite run the test runner's worker handed them down, and Ctrl-C did nothing)."""
    ui, port = _start_ui(tmp_path, _deaf_to_ctrl_c if inherited != "default" else None)
    ui.send_signal(signal.SIGINT)
    try:
        code = ui.wait(timeout=60)
    except subprocess.TimeoutExpired:
        ui.kill()
        raise AssertionError("mmder ui did not end within 60 s of Ctrl-C") from None
    assert code == 0
    _assert_gone(port, "Ctrl-C")


@pytest.mark.slow
def test_a_ui_whose_command_is_killed_stops_too(tmp_path):
    """Killed outright (or its terminal closed), `mmder ui` cannot stop its server: the kernel does."""
    ui, port = _start_ui(tmp_path)
    ui.kill()
    ui.wait(timeout=30)
    _assert_gone(port, "the command was killed")
