"""A full disk and a read-only output, on real small file systems (tmpfs mounts): each is said plainly,
with the folder named, before it can corrupt anything; the preparation resumes once there is room."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep_helpers import mmder, tiny_experiment

from harness.cli.main import main
from harness.experiment.loading import load_experiment
from harness.plan.sweep_plan import plan_run
from harness.tracking.runs import read_sqlite_runs
from harness.tracking.tags import KIND_SWEEP, TAG_CELL, TAG_ERROR, TAG_KIND
from mmder.data.partial import NoSpaceError
from mmder.data.preprocess import PreprocessConfig
from mmder.data.store import prepare_corpus


def _mount(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip() or 'not root'})")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for folder in reversed(made):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_read_only_output_is_refused_before_any_work(tmp_path, mounts, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    out = tmp_path / "ro"
    _mount(out, "ro,size=1m")
    mounts.append(out)
    exp = tiny_experiment(tmp_path, "ro")
    for command in (["sweep", str(exp), "--output", str(out)], ["validate", str(exp), "--output", str(out)]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert f"--output: {out} cannot be written (a read-only file system" in err, err
    assert list(out.iterdir()) == []


def test_a_full_disk_stops_the_cache_with_the_folder_and_sizes_and_the_rerun_resumes(tmp_path, mounts):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    exp = tiny_experiment(tmp_path, "full")
    spec = load_experiment(exp)
    small = tmp_path / "small-cache"
    _mount(small, "size=1m")  # the tiny corpus's arrays need about 3.5 MB
    mounts.append(small)
    out = tmp_path / "out"
    os.environ["MMDER_CACHE_DIR"] = str(small)
    try:
        assert main(["sweep", str(exp), "--output", str(out)]) == 4  # the sweep itself failed, said why
        plan = plan_run(spec, out, kind="train", accept_stale=False, echo=print)
    finally:
        del os.environ["MMDER_CACHE_DIR"]
    runs = read_sqlite_runs(out / "mlflow.db", spec.mlflow_experiment) or []
    (parent,) = [r for r in runs if r.data.tags.get(TAG_KIND) == KIND_SWEEP]
    assert parent.info.status == "FAILED"
    assert f"not enough space for the clip cache in {small}" in parent.data.tags[TAG_ERROR]
    root, listing = plan.places.dataset_roots["syn"], plan.listings["syn"]
    config = PreprocessConfig(image_size=32)
    with pytest.raises(NoSpaceError, match=r"its arrays need 3\.\d MB, \d\.\d MB are free"):
        prepare_corpus("synthetic", root, small, config, listing=listing)
    subprocess.run(["mount", "-o", "remount,size=20m", str(small)], check=True)
    prepared = prepare_corpus("synthetic", root, small, config, listing=listing)
    assert prepared.n_prepared == len(listing.clips)


def test_reserving_the_arrays_raises_instead_of_a_bus_error(tmp_path, mounts):
    """In a child process: without the reservation, writing past the disk through the memory map
    kills it with SIGBUS; with it, the child gets NoSpaceError and exits cleanly."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "tiny"
    _mount(small, "size=256k")
    mounts.append(small)
    code = (
        "import numpy as np, sys\n"
        "from pathlib import Path\n"
        "from mmder.data.partial import NoSpaceError, reserve\n"
        f"path = Path({str(small / 'x' / 'a.npy')!r}); path.parent.mkdir()\n"
        "arr = np.lib.format.open_memmap(path, mode='w+', dtype=np.uint8, shape=(4, 256, 1024))\n"
        "try:\n"
        "    reserve([path])\n"
        "except NoSpaceError as err:\n"
        "    print(err); sys.exit(3)\n"
        "arr[:] = 1\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert "not enough space for the clip cache" in done.stdout


def test_a_checkpoint_that_does_not_fit_fails_its_cell_naming_the_folder_and_the_rerun_finishes(
    tmp_path, mounts
):
    """The storage's file system is checked before each epoch's checkpoint is copied into it: a cell
    whose checkpoint does not fit fails saying where and how much, nothing half-written is left, and
    once there is room the rerun retries it to the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    storage = tmp_path / "small-storage"
    _mount(storage, "size=1m")  # a checkpoint of the micro model takes several MB
    mounts.append(storage)
    exp = tiny_experiment(
        tmp_path,
        "ckfull",
        grid={"settings": ["video"], "seeds": [0]},
        resources={"num_workers": 1, "max_failures": 0},
        ray={"storage_path": str(storage)},
    )
    out = tmp_path / "out"
    first = mmder("sweep", str(exp), "--output", str(out))
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    spec = load_experiment(exp)
    runs = read_sqlite_runs(out / "mlflow.db", spec.mlflow_experiment) or []
    (cell,) = [r for r in runs if r.data.tags.get(TAG_KIND) != KIND_SWEEP]
    assert cell.info.status == "FAILED"
    error = cell.data.tags[TAG_ERROR]
    assert f"not enough space for the checkpoint of epoch 0 of {cell.data.tags[TAG_CELL]}" in error
    assert f"in {storage}: it needs" in error and "MB are free there" in error, error
    assert "not enough space for the checkpoint" in first.stdout + first.stderr
    assert not list(storage.rglob("*.pt")), "no shard was copied half-way"
    assert not [r for r in runs if r.info.status == "RUNNING"]

    subprocess.run(["mount", "-o", "remount,size=256m", str(storage)], check=True)
    second = mmder("sweep", str(exp), "--output", str(out))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    runs = read_sqlite_runs(out / "mlflow.db", spec.mlflow_experiment) or []
    cells = [r for r in runs if r.data.tags.get(TAG_KIND) != KIND_SWEEP]
    assert sorted(r.info.status for r in cells) == ["FAILED", "FINISHED"]
