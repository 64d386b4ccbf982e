"""A worker that stops making progress (SIGSTOP, a stuck collective, a hung read) is noticed from its cell's
own pace, said in status, restarted within the failure budget and resumed from its checkpoint; past the
budget the cell fails as stalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import ROOT, client_for, mmder, pause_env, paused, tiny_experiment, wait_for

from harness.worker.stall import BEAT, STALLED, WORKERS, Beats, StallBounds, StallWatch, read_stall

BOUNDS = StallBounds(factor=3.0, floor_s=10.0, first_epoch_s=100.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watch(tmp_path: Path, clock: Clock, killed: list) -> StallWatch:
    return StallWatch(
        tmp_path,
        ["cell-a"],
        {"cell-a": "attempt-002"},
        BOUNDS,
        "lane-x",
        kill=lambda pid, node: killed.append((pid, node)),
        clock=clock,
    )


def _workers(folder: Path, pid: int = 4242, node: str = "n1") -> None:
    (folder / WORKERS).mkdir(parents=True, exist_ok=True)
    (folder / WORKERS / "rank0.json").write_text(json.dumps({"pid": pid, "node": node}))


def test_the_bound_follows_the_cells_pace_with_a_floor_and_a_first_epoch_ceiling():
    assert BOUNDS.bound(None) == 100.0  # nothing measured yet: the first epoch's ceiling
    assert BOUNDS.bound(1.0) == 10.0  # fast epochs: the floor
    assert BOUNDS.bound(20.0) == 60.0  # 3 x its slowest epoch
    assert not StallBounds(0.0, 10.0, 100.0).on


def test_a_cell_that_beats_is_never_restarted_however_long_it_runs(tmp_path):
    clock, killed = Clock(), []
    cell = tmp_path / "cell-a"
    _workers(cell)
    beats = Beats(cell, rank=0)
    watch = _watch(tmp_path, clock, killed)
    beats.epoch(0)
    watch.poll()
    for epoch in range(1, 21):  # 9 s between beats, 180 s in all: each gap under the 10 s floor
        clock.now += 9.0
        watch.poll()
        assert read_stall(tmp_path, "cell-a")["quiet"], "past half its bound, it is said to be quiet"
        beats.epoch(epoch)
        watch.poll()
        assert not read_stall(tmp_path, "cell-a")["quiet"], "a beat ends the quiet"
    assert killed == [] and watch.fired is None


def test_a_quiet_cell_is_said_then_its_workers_are_killed_and_the_reason_kept(tmp_path):
    clock, killed = Clock(), []
    cell = tmp_path / "cell-a"
    _workers(cell, pid=4242, node="node-b")
    beats = Beats(cell, rank=0)
    beats.epoch(0)  # a beat left by an earlier start: not progress of this one
    watch = _watch(tmp_path, clock, killed)
    clock.now += 500.0
    watch.poll()
    assert killed == [], "no beat of this start yet: nothing is judged"
    beats.last -= 30.0  # its epoch took 30 s: bound 90 s
    beats.epoch(1)
    watch.poll()
    clock.now += 50.0
    watch.poll()
    assert read_stall(tmp_path, "cell-a") == {"seconds": 50, "bound": 90, "restarts": 0, "quiet": True}
    assert killed == []
    clock.now += 41.0
    watch.poll()
    assert killed == [(4242, "node-b")]
    said = (cell / "attempt-002" / STALLED).read_text()
    assert said.startswith("CellStalled: cell-a made no progress for 1.5 min (bound 1.5 min: 3 x its slowest")
    assert read_stall(tmp_path, "cell-a") == {"seconds": 91, "bound": 90, "restarts": 1, "quiet": True}
    # the restarted cell gets its first epoch's ceiling again, from the restart
    clock.now += 99.0
    watch.poll()
    assert len(killed) == 1
    clock.now += 2.0
    watch.poll()
    assert len(killed) == 2


def test_a_rank_that_is_not_zero_says_where_it_runs_but_does_not_beat(tmp_path):
    cell = tmp_path / "cell-a"
    Beats(cell, rank=1).epoch(0)
    assert not (cell / BEAT).exists()


def test_a_lane_out_of_starts_fails_the_cell_as_stalled(tmp_path):
    from harness.worker.lane import _why

    attempt = tmp_path / "cell-a" / "attempt-002"
    attempt.mkdir(parents=True)
    (attempt / STALLED).write_text("CellStalled: cell-a made no progress for 10 min")

    class Job:
        class cell:
            key = "cell-a"

    assert _why(Job, attempt, 2).startswith("CellStalled: cell-a made no progress")
    (attempt / "error-rank0.txt").write_text("ValueError: what the cell raised")
    assert _why(Job, attempt, 2) == "ValueError: what the cell raised", "what a rank said comes first"


def test_stall_settings_are_operational_and_checked():
    from pydantic import ValidationError

    from harness.experiment.config import ResourcesConfig

    assert ResourcesConfig(stall_factor=0).stall_factor == 0
    with pytest.raises(ValidationError, match="stall_floor_s"):
        ResourcesConfig(stall_floor_s=0)


@pytest.mark.slow
def test_a_stopped_worker_is_restarted_and_its_cell_resumes_in_the_same_run(tmp_path):
    """SIGSTOP of a lane's worker after epoch 1 (a marker, not a moment): status says the cell makes no
    progress, the watch kills the stopped worker past its bound, Train restarts the group and the cell
    resumes from epoch 1's checkpoint in its one MLflow run; each epoch is logged once."""
    epochs = 3
    exp = tiny_experiment(
        tmp_path,
        "stall",
        grid={"settings": ["video"], "seeds": [0]},
        training={"epochs": epochs},
        resources={
            "num_workers": 1,
            "cpus_per_worker": 1,
            "max_concurrent_trials": 1,
            "max_failures": 1,
            "stall_factor": 2.0,
            "stall_floor_s": 20.0,
        },
    )
    out = tmp_path / "out"
    hold = tmp_path / "pause"
    log = tmp_path / "sweep.log"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness.cli.main", "sweep", str(exp), "--output", str(out)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **pause_env(hold, "video", 1)),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: paused(hold, 1), sweep, log)
        (key,) = paused(hold, 1)
        who = json.loads((out / "ray" / key / WORKERS / "rank0.json").read_text())
        os.kill(who["pid"], signal.SIGSTOP)
        (hold / "hold").unlink()  # the resumed cell starts past epoch 1: it does not pause again
        wait_for(lambda: read_stall(out / "ray", key), sweep, log)
        status = mmder("status", str(exp), "--output", str(out))
        assert "no progress for" in status.stdout, status.stdout + status.stderr
        code = sweep.wait(400)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert f"{key}: no progress for" in text, "the progress lines say it"
    assert "its workers were restarted (1 so far)" in text and f"{key}: moving again" in text
    client = client_for(out)
    exp_id = client.get_experiment_by_name("stall").experiment_id
    (run,) = client.search_runs([exp_id], filter_string="tags.`mmder.kind` = 'cell'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["mmder.resumed_from_epoch"] == "1", "resumed from the checkpoint of epoch 1"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_war"))
    assert steps == list(range(epochs)), "each epoch exactly once"
    (attempt,) = [p for p in (out / "ray" / key).glob("attempt-*") if (p / STALLED).exists()]
    assert (attempt / "starts").read_text() == "2", "one restart, within the budget"
