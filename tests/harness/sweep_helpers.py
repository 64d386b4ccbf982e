"""Helpers for the sweep tests: a tiny synthetic experiment and a look into its MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def tiny_experiment(tmp_path: Path, name: str, *, own_corpus: bool = False, **overrides: object) -> Path:
    """A grid that trains in seconds per cell: micro model, 32 px, a 24-clip synthetic corpus, one worker
    per cell (a Train worker costs a sweep 5-10 CPU-seconds: tests about ranks ask for two).

    The corpus is the suite's shared one (:func:`shared_synthetic`); ``own_corpus``: generated under
    the output by the sweep itself, for a test that breaks its clips."""
    data = {
        "name": name,
        "datasets": [
            {
                "corpus": "synthetic",
                "name": "syn",
                "synthetic": {"clips_per_class": 2, "speakers": 2, "seed": 0},
                "protocol": {"kind": "speaker_kfold", "folds": 2},
                "folds": [0],
            }
        ],
        "grid": {"settings": ["video", "FSLF"], "seeds": [0]},
        "preprocess": {"image_size": 32},
        "model": {"size": "micro"},
        "training": {"epochs": 2, "batch_size": 4, "eval_batch_size": 8, "lr": 1e-3, "warmup_epochs": 0},
        "resources": {"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1, "max_failures": 1},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    for ds in data["datasets"] if not own_corpus else []:
        if ds.get("corpus") == "synthetic" and not ds.get("root"):
            ds["root"] = str(shared_synthetic(**ds.get("synthetic", {})))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def shared_synthetic(clips_per_class: int = 12, speakers: int = 4, seed: int = 0) -> Path:
    """One synthetic corpus per parameter set for the whole suite (both xdist workers): a sweep writing
    its own under each test's output cost 2-3 CPU-seconds a sweep, for the same bytes. Named by the
    generator's source, so a change to it writes a new one; the generator's lock makes the second
    writer wait and find it complete. Generating under the output is the quickstart's path and
    tests/mmder/data/test_synthetic.py's."""
    import hashlib
    import tempfile

    from mmder.data import synthetic

    source = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:12]
    root = (
        Path(tempfile.gettempdir())
        / "mmder-tests-synthetic"
        / f"{source}-{clips_per_class}x{speakers}-{seed}"
    )
    return synthetic.generate_corpus(root, clips_per_class=clips_per_class, speakers=speakers, seed=seed)


def mmder(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process, as a user would."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "harness.cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def child_runs(output: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string="tags.`mmder.kind` = 'cell'")


def client_for(output: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{output / 'mlflow.db'}")


def pause_env(folder: Path, cell: str, after_epoch: int) -> dict[str, str]:
    """Environment that holds a cell still after ``after_epoch`` (see harness.worker.faults.maybe_pause)
    while ``folder/hold`` exists: drills cut a sweep at a marker, not at a moment."""
    from harness.worker.faults import PAUSE_CELL_ENV, PAUSE_DIR_ENV, PAUSE_EPOCH_ENV

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hold").touch()
    return {PAUSE_DIR_ENV: str(folder), PAUSE_CELL_ENV: cell, PAUSE_EPOCH_ENV: str(after_epoch)}


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 400) -> None:
    """Until ``predicate()`` holds; fails with the log's tail if the sweep ``proc`` ends first or time runs
    out (drills wait for markers, not for moments)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"the sweep ended first: {log.read_text()[-3000:]}"
        time.sleep(0.3)
    raise AssertionError(f"timed out: {log.read_text()[-3000:]}")


def paused(folder: Path, epoch: int) -> list[str]:
    """Keys of the cells that are holding still after ``epoch``."""
    return [p.name.rsplit(".paused-", 1)[0] for p in folder.glob(f"*.paused-{epoch}")]


def board_csv(stdout: str):
    """The leaderboard's CSV as a frame: its protocol lines start with '#', as pandas' ``comment`` reads."""
    import io

    import pandas as pd

    return pd.read_csv(io.StringIO(stdout), comment="#", dtype={"missing": str, "runs": str})
