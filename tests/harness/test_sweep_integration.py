"""A worker killed mid-cell on the real stack (a Ray Train job of 2 DeepSpeed workers, a real MLflow
store). The sweep end to end and its rerun are checked on the shared sweep of test_results_trace.py;
the driver killed mid-sweep is a round of the signal drill in test_provenance_integration.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sweep_helpers import (
    ROOT,
    child_runs,
    client_for,
    tiny_experiment,
)

pytestmark = pytest.mark.slow
TWO_WORKERS = {"num_workers": 2}  # these tests are about a cell's DeepSpeed ranks


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
