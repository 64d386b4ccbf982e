"""A sweep on a real several-node Ray cluster logging to a real MLflow server on PostgreSQL, with the
faults a cluster has: a node lost mid-cell, the tracking server down for a few seconds, a cell the
surviving nodes cannot hold, and many concurrent writers. Each proves its outcome in MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sweep_helpers import ROOT, tiny_experiment

from harness.worker.resume import newest_complete_checkpoint
from mmder.train.checkpoint_files import checkpoint_epoch

pytestmark = [pytest.mark.cluster, pytest.mark.slow]  # one stack: one worker (tests/conftest.py)
EPOCHS = 8
WORLD = 2  # workers per cell: a node's loss takes one rank of a cell


def sweep(stack, experiment: Path, output: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli.main", "sweep", str(experiment), "--output", str(output),
         "--address", stack.client_env["RAY_ADDRESS"]],
        cwd=ROOT, env={**stack.env, "PYTHONUNBUFFERED": "1"}, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def cell_runs(name: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string="tags.`mmder.kind` = 'cell'")


def wait_for(what: str, test, timeout: float, proc: subprocess.Popen | None = None, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = test()
        except Exception:  # noqa: BLE001 - the server may be starting
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (rc {proc.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def epochs_logged(run_id: str) -> set[int]:
    from mlflow.tracking import MlflowClient

    return {m.step for m in MlflowClient().get_metric_history(run_id, "test_war")}


def training_cell() -> tuple[str, str, int] | None:
    """(key, run id, epochs logged) of a cell that has logged an epoch and has not finished."""
    for run in cell_runs("cluster-faults"):
        if run.data.tags.get("mmder.status") != "finished":
            steps = epochs_logged(run.info.run_id)
            if steps:
                return run.data.tags["mmder.cell"], run.info.run_id, len(steps)
    return None


WHERE = """
import json, ray
from ray.util.state import list_actors
ray.init(address="auto", logging_level="ERROR")
index = {n["NodeID"]: k[len("mmder_node_"):] for n in ray.nodes() if n["Alive"]
         for k in n["Resources"] if k.startswith("mmder_node_")}
out = {}
for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
    out.setdefault(a.class_name, []).append(index.get(a.node_id, "head"))
print(json.dumps(out))
"""


def node_to_kill(stack) -> str | None:
    """A worker node running the cell's Train workers but not its Tune trial or Train controller."""
    out = subprocess.run(
        [sys.executable, "-c", WHERE], env=stack.env, capture_output=True, text=True, timeout=120
    )
    actors = json.loads(out.stdout.strip().splitlines()[-1])
    drivers = set(actors.get("ImplicitFunc", [])) | set(actors.get("TrainController", []))
    workers = set(actors.get("RayTrainWorker", []))
    candidates = sorted(workers - drivers - {"head"})
    return candidates[0] if candidates else None


def test_sweep_survives_node_loss_and_tracking_outage(stack_client, tmp_path: Path) -> None:
    stack = stack_client
    exp = tiny_experiment(
        tmp_path, "cluster-faults", training={"epochs": EPOCHS}, resources={"num_workers": WORLD}
    )
    log = tmp_path / "sweep.log"
    proc = sweep(stack, exp, tmp_path / "out", log)
    try:
        # 1. a worker node's raylet is SIGKILLed while the first cell trains
        key1, _, _ = wait_for("a cell's first epoch", training_cell, 600, proc)
        node = wait_for("a worker node to kill", lambda: node_to_kill(stack), 120, proc, poll=0.2)
        cell_dir = tmp_path / "out" / "ray" / key1
        complete = wait_for(
            "a complete checkpoint", lambda: newest_complete_checkpoint(cell_dir, WORLD), 300, proc, poll=0.2
        )
        before_kill = checkpoint_epoch(complete, WORLD)  # the newest complete one when the node dies
        killed = stack.script("kill-node", node)
        assert "killed" in killed.stdout, killed.stdout + killed.stderr
        # 2. the tracking server is killed and restarted while the other cell trains
        key2, _, _ = wait_for("the second cell's first epoch",
                              lambda: (c := training_cell()) and c[0] != key1 and c, 900, proc)  # fmt: skip
        assert "killed" in stack.script("stop-mlflow").stdout
        time.sleep(3)
        assert proc.poll() is None, "the sweep ended before the tracking server came back"
        restarted = stack.script("start-mlflow", timeout=400)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    runs = cell_runs("cluster-faults")
    by_key: dict[str, list] = {}
    for run in runs:
        by_key.setdefault(run.data.tags["mmder.cell"], []).append(run)
    assert sorted(by_key) == sorted([key1, key2]), text[-3000:]
    secrets = stack.secrets()
    for key, found in by_key.items():
        assert len(found) == 1, f"{key}: {len(found)} runs"  # every cell exactly once
        run = found[0]
        assert run.info.status == "FINISHED" and run.data.tags["mmder.status"] == "finished"
        # no lost epoch: every epoch's metrics are in the run, once per step
        from mlflow.tracking import MlflowClient

        for metric in ("test_war", "test_uar", "train_loss"):
            steps = sorted(m.step for m in MlflowClient().get_metric_history(run.info.run_id, metric))
            assert len(set(steps)) == EPOCHS and steps[-1] - steps[0] == EPOCHS - 1, (key, metric, steps)
        # artifacts go through the server, not onto the disk of whichever node ran rank 0
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        names = {f.path for f in MlflowClient().list_artifacts(run.info.run_id)}
        assert {"confusion.csv", "predictions.csv"} <= names
        # no secret in what a run shows (params, tags)
        shown = json.dumps({**run.data.params, **run.data.tags})
        assert not [s for s in secrets if s and s in shown]
    # the node loss restarted the group from the cell's latest checkpoint, not an older one: at least
    # the newest one complete on disk when the node died (Ray may have registered an older one)
    resumed = by_key[key1][0].data.tags.get("mmder.resumed_from_epoch")
    assert resumed is not None and int(resumed) >= before_kill, (resumed, before_kill)
    assert not (tmp_path / "out" / "mlartifacts").exists()


def test_a_cell_the_nodes_cannot_hold_fails_within_a_minute_naming_what_is_missing(
    stack_client, tmp_path: Path
) -> None:
    stack = stack_client
    # no node has 3 CPUs (head 1, workers 2 each): Train alone would wait for the group forever. The
    # message names what is missing whether or not an earlier test of the module took a node down.
    exp = tiny_experiment(
        tmp_path, "cluster-unplaceable", grid={"settings": ["video"], "seeds": [0]},
        training={"epochs": 1}, resources={"num_workers": 1, "cpus_per_worker": 3},
    )  # fmt: skip
    log = tmp_path / "sweep.log"
    proc = sweep(stack, exp, tmp_path / "out", log)
    try:
        assert proc.wait(timeout=600) != 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    (run,) = cell_runs("cluster-unplaceable")
    error = run.data.tags.get("mmder.error", "")
    assert run.info.status == "FAILED"
    assert "cannot be placed" in error and "CPU" in error and "missing" in error, error
    assert "FAILED" in log.read_text()


def test_sixteen_concurrent_writers_lose_no_metric(stack_client) -> None:
    from mlflow.tracking import MlflowClient

    from harness.tracking.store import EpochLog, Tracker

    uri = stack_client.client_env["MLFLOW_TRACKING_URI"]
    tracker = Tracker.open(uri, "cluster-writers")
    parent = tracker.parent_run("cluster-writers")
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            mine = Tracker(uri=uri, experiment_id=tracker.experiment_id)
            run_id, _ = mine.cell_run(f"writer-{i}", parent, tags={}, params={"i": i})
            epochs = EpochLog(mine, run_id)
            for epoch in range(100):
                epochs.log(epoch, {"war": float(epoch), "uar": float(i)})
            assert epochs.flush()
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    client = MlflowClient()
    runs = tracker.cell_runs()
    assert len(runs) == 16
    for key, (run, *_) in runs.items():
        for metric in ("war", "uar"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert sorted(steps) == list(range(100)), (key, metric)
