"""A worker killed for memory is said to be out of memory, with the limit it hit: a real kernel OOM kill in
a memory cgroup the worker made for itself (skipped, with the reason, where the node allows none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.worker.memory import (
    confinable,
    current_cgroup,
    memory_verdict,
    release_records,
    watch_worker,
)

ROOT = Path(__file__).resolve().parents[2]


def _worker(records: Path, limit_gb: float, allocate_mb: int) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from harness.worker.memory import watch_worker\n"
        f"watch_worker(Path({str(records)!r}), 1, {limit_gb}, 'mmder-test-{allocate_mb}')\n"
        f"held = [bytearray(16 << 20) for _ in range({allocate_mb} // 16)]\n"
        "print('survived')\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_worker_over_its_limit_is_killed_and_the_verdict_says_memory_and_the_limit(tmp_path):
    here = current_cgroup()
    if here is None:
        pytest.skip("no memory cgroup is visible here")
    records = tmp_path / "records"
    done = _worker(records, 0.25, 1024)
    if "not enforced here" in done.stdout:
        pytest.skip(done.stdout.strip())
    assert done.returncode == -9, (done.returncode, done.stdout, done.stderr)  # SIGKILL, from the kernel
    verdict = memory_verdict("ActorDiedError: the actor died unexpectedly", records)
    assert verdict is not None
    assert "out of memory: the kernel's OOM killer killed rank 1" in verdict
    assert "at its limit of 0.25 GiB (resources.memory_per_worker_gb)" in verdict
    release_records(records)
    assert not list(records.iterdir()), "the records are gone"
    assert not list(here.path.glob("mmder-test-1024")), "the worker's cgroup is removed"


def test_a_worker_within_its_limit_gets_no_memory_verdict(tmp_path):
    if current_cgroup() is None:
        pytest.skip("no memory cgroup is visible here")
    records = tmp_path / "records"
    done = _worker(records, 0.5, 64)
    assert done.returncode == 0 and "survived" in done.stdout, done.stderr
    assert memory_verdict("RuntimeError: something else broke", records) is None
    assert memory_verdict("ActorDiedError: the actor died unexpectedly", records) is None
    release_records(records)


def test_rays_memory_monitor_is_named_with_its_threshold(tmp_path):
    text = (
        "ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.\n"
        "Memory on the node (IP: 10.0.0.2, ID: abc) where the task was running was 22.80GB / 24.00GB "
        "(0.950312), which exceeds the memory usage threshold of 0.95. Ray killed this worker."
    )
    verdict = memory_verdict(text, tmp_path / "none")
    assert verdict is not None and verdict.startswith("out of memory: Ray's memory monitor killed a worker")
    assert "threshold of 0.95" in verdict and "RAY_memory_usage_threshold" in verdict


def test_a_worker_without_a_limit_records_its_cgroup_and_no_error_reads_as_memory(tmp_path):
    assert memory_verdict("ValueError: bad", tmp_path / "absent") is None
    record = watch_worker(tmp_path / "r", 0, None, "unused")
    assert not record.confined and (tmp_path / "r" / f"rank-0-pid-{record.pid}.json").exists()
    if record.cgroup is not None:
        assert record.cgroup == str(current_cgroup().path)
    assert memory_verdict("ValueError: bad", tmp_path / "r") is None


def test_asking_whether_a_worker_can_be_confined_leaves_nothing_behind():
    here = current_cgroup()
    reason = confinable()
    assert reason is None or "cgroup" in reason
    if here is not None:
        assert not list(here.path.glob("mmder-probe-*"))
