"""The real stack end to end: a Ray Tune grid of Ray Train jobs with 2 DeepSpeed workers each,
logging to a real MLflow store; then a rerun, then a worker killed mid-cell. (The driver killed
mid-sweep is a round of the signal drill in test_provenance_integration.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import (
    ROOT,
    board_csv,
    child_runs,
    client_for,
    mmder,
    tiny_experiment,
)

pytestmark = pytest.mark.slow
TWO_WORKERS = {"num_workers": 2}  # these tests are about a cell's DeepSpeed ranks


def test_sweep_logs_every_cell_once_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    exp = tiny_experiment(tmp_path, "e2e", resources=TWO_WORKERS)
    out = tmp_path / "out"
    monkeypatch.setenv("MMDER_TIMING_FILE", str(tmp_path / "timing.jsonl"))
    first = mmder("sweep", str(exp), "--output", str(out))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    # one lane (max_concurrent_trials: 1): one group of 2 workers trained both cells, one after the other
    marks = [json.loads(line) for line in (tmp_path / "timing.jsonl").read_text().splitlines()]
    entries = [m for m in marks if m["stage"] == "worker_entry"]
    assert len({m["key"] for m in entries}) == 2 and len({m["pid"] for m in entries}) == 2, entries
    assert len([m for m in marks if m["stage"] == "train_fit_start"]) == 1
    assert "[2/2]" in first.stdout and "ETA" in first.stdout
    assert "video" in first.stdout and "FSLF" in first.stdout  # the leaderboard
    # Ray's own warnings (the raylet's worker-count ones, Tune's slow-operation ones) go to the log
    terminal = first.stdout + first.stderr
    assert "(raylet)" not in terminal, terminal[-3000:]
    assert not re.search(r"WARNING \S+\.py:\d+ --", terminal), terminal[-3000:]  # Ray's log format
    assert (out / "logs" / "ray-driver.log").exists()

    runs = child_runs(out, "e2e")
    assert len(runs) == 2
    client = client_for(out)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mmder.status"] == "finished"
        assert run.data.params["training.zero_stage"] == "2"
        assert run.data.params["world_size"] == "2"
        assert 0.0 <= run.data.metrics["final_war"] <= 100.0
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_war")]
        assert sorted(steps) == [0, 1]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"confusion.csv", "predictions.csv", "confusion.json"} <= artifacts
        confusion = json.loads(
            Path(client.download_artifacts(run.info.run_id, "confusion.json", str(tmp_path))).read_text()
        )
        # both workers' halves of the test fold are in the matrix: 12 test clips (1 speaker x 6 classes x 2)
        assert sum(map(sum, confusion["matrix"])) == 12
        assert run.data.tags["mlflow.parentRunId"]

    tune_runs = sorted((out / "ray" / "tune").glob("train-*"))
    assert len(tune_runs) == 1, tune_runs
    again = mmder("sweep", str(exp), "--output", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 already finished, 0 to run" in again.stdout
    rows = [ln for ln in first.stdout.splitlines() if ln.strip().startswith(("video", "FSLF"))]
    assert len(rows) == 2 and all(row in again.stdout for row in rows), again.stdout  # the same table
    assert sorted((out / "ray" / "tune").glob("train-*")) == tune_runs, (
        "a rerun must not start another Tune run"
    )
    assert {r.info.run_id for r in child_runs(out, "e2e")} == {r.info.run_id for r in runs}

    board = mmder("leaderboard", str(exp), "--output", str(out), "--format", "csv")
    assert board.stdout.startswith("# "), "the CSV carries its protocol as comment lines"
    frame = board_csv(board.stdout)
    header = list(frame.columns)
    assert header[:7] == ["dataset", "setting", "folds", "seeds", "runs", "missing", "n"]
    wanted = {"uar_mean", "uar_lo", "uar_hi", "war_mean", "war_pooled", "wall_s_per_cell"}
    assert wanted <= set(header), header
    rows = frame.to_dict("records")
    assert [r["setting"] for r in rows] == ["video", "FSLF"]
    assert all(r["missing"] == "0" and r["runs"] == "1" for r in rows)


def test_a_worker_that_dies_mid_cell_is_restarted_from_its_last_checkpoint(tmp_path):
    """One of the two DeepSpeed workers exits hard after epoch 1 was saved; Ray Train restarts the group.

    A process that dies right after reporting may beat the controller to registering that epoch's
    checkpoint, so the group resumes after epoch 1 or, at worst, after epoch 0: never from scratch."""
    exp = tiny_experiment(
        tmp_path,
        "chaos",
        grid={"settings": ["FSLF"], "seeds": [0]},
        training={"epochs": 3},
        resources=TWO_WORKERS,
    )
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONUNBUFFERED="1", MMDER_CHAOS_EXIT_AFTER_EPOCH="1")
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli.main", "sweep", str(exp), "--output", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (run,) = child_runs(out, "chaos")
    assert (out / "ray" / run.data.tags["mmder.cell"] / "chaos-done").exists(), "the fault was injected"
    assert run.data.tags["mmder.status"] == "finished"
    assert run.data.tags.get("mmder.resumed_from_epoch") in {"0", "1"}, proc.stdout[-3000:]
    steps = [m.step for m in client_for(out).get_metric_history(run.info.run_id, "test_war")]
    assert sorted(set(steps)) == [0, 1, 2]
