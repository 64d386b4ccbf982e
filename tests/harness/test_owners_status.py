"""Cell owners, identity verdicts, tracking that never stops training, and `mmder status` on a real
MLflow SQLite store with hand-made runs (no Ray: seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sweep_helpers import ROOT, tiny_experiment

from harness.plan.owners import OWNER_FILE, CellOwners, read_owner
from harness.plan.provenance import code_versions, judge
from harness.tracking.store import EpochLog
from harness.tracking.tags import TAG_DATA_DIGEST


def test_a_live_owner_refuses_and_a_dead_or_expired_one_never_blocks(tmp_path, monkeypatch):
    mine = CellOwners(str(tmp_path))
    assert mine.acquire("cell") is None
    other = CellOwners(str(tmp_path))
    other.me = other.me.__class__("elsewhere", 4242, 0.0, 0.0)
    refusal = other.acquire("cell")  # the same process holds the file lock: a lock file refuses
    assert refusal is not None and refusal.pid == os.getpid()
    mine.release("cell")
    assert not (tmp_path / "cell" / OWNER_FILE).exists()

    # an owner on another machine (its lock not shared) with a fresh lease refuses; one whose record
    # stays unchanged for a lease of this host's clock does not
    import time

    from harness.plan import owners as owners_module

    record = {"host": "node-b", "pid": 7, "since": 1.0, "heartbeat": time.time()}
    (tmp_path / "cell" / OWNER_FILE).write_text(json.dumps(record))
    assert "node-b" in mine.acquire("cell").describe()
    monkeypatch.setattr(owners_module, "LEASE_SECONDS", 0.2)
    (tmp_path / "cell" / OWNER_FILE).write_text(json.dumps(dict(record, heartbeat=1.0)))
    assert "looks expired" in mine.acquire("cell").describe()
    time.sleep(0.3)
    assert mine.acquire("cell") is None and read_owner(tmp_path / "cell").pid == os.getpid()
    mine.release_all()


def test_identity_is_data_digest_and_declared_versions_not_the_commit():
    today = {TAG_DATA_DIGEST: "abc", **code_versions(), "mmder.git_commit": "0000+dirty"}
    assert judge(today, "abc").current
    assert judge(dict(today, **{"mmder.git_commit": "1111"}), "abc").current
    assert judge(today, "abd").why == "data changed"
    assert judge(dict(today, **{"mmder.results_version": "0"}), "abc").why == "code changed"
    assert judge(today, None).current, "data not here: no evidence of a change"


def test_a_failing_store_keeps_the_epochs_and_sends_them_later():
    class Flaky:
        def __init__(self) -> None:
            self.down, self.logged = True, []

        def log_epoch(self, run_id, epoch, metrics):
            if self.down:
                raise RuntimeError("database is locked")
            self.logged.append(epoch)

    store = Flaky()
    log = EpochLog(store, "run", done={0}, delays=(0.0,))  # type: ignore[arg-type]
    log.log(0, {"war": 1.0})  # already in the run (a resumed cell): not sent again
    log.log(1, {"war": 2.0})
    assert [e for e, _ in log.pending] == [1]
    store.down = False
    log.log(2, {"war": 3.0})
    assert store.logged == [1, 2] and not log.pending


@pytest.mark.filterwarnings("ignore")
def test_status_shows_done_running_failed_stale_and_pending_without_ray(tmp_path):
    from harness.experiment.loading import load_experiment
    from harness.plan.cells import expand_cells
    from harness.plan.places import Places
    from harness.plan.sweep_plan import plan_sweep
    from harness.tracking.places import store_lock
    from harness.tracking.store import Tracker

    exp = tiny_experiment(tmp_path, "st", grid={"settings": ["video", "audio", "CFAS", "FSLF", "OFOS"]})
    spec = load_experiment(exp)
    places = Places.of(spec, tmp_path / "out")
    out = places.output
    from harness.plan.checks import ensure_synthetic

    ensure_synthetic(spec.datasets[0], places.dataset_roots[spec.datasets[0].label], print)
    (digest,) = plan_sweep(spec, out).digests.values()
    uri = f"sqlite:///{out / 'mlflow.db'}"
    with store_lock(uri):
        tracker = Tracker.open(uri, "st")
    parent = tracker.parent_run("st")
    done, running, failed, stale, _pending = expand_cells(spec)
    identity = {TAG_DATA_DIGEST: digest, **code_versions()}
    for cell, tags in (
        (done, identity),
        (running, identity),
        (failed, identity),
        (stale, dict(identity, **{TAG_DATA_DIGEST: "old"})),
    ):
        run_id, _ = tracker.cell_run(cell.key, parent, tags=tags, params={})
        if cell in (done, stale):
            tracker.finish_run(run_id, {"final_war": 50.0, "final_uar": 40.0}, {})
        elif cell is failed:
            tracker.fail_cell(run_id, "Traceback...\nValueError: broken clip")
        else:
            for epoch in range(2):
                tracker.log_epoch(run_id, epoch, {"war": 30.0 + epoch, "uar": 20.0})
    owners = CellOwners(str(out / "ray"))
    owners.acquire(running.key)  # a live sweep (this process) owns the running cell

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from harness.cli.main import main; main(sys.argv[1:]); "
            "print('imported:', [m for m in ('ray', 'mlflow') if m in sys.modules])",
            "status",
            str(exp),
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    owners.release_all()
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {ln.split()[1]: ln.split(maxsplit=2) for ln in proc.stdout.splitlines() if ln.startswith("  ")}
    assert {done.key, running.key, failed.key, stale.key, _pending.key} <= set(lines), proc.stdout
    assert lines[done.key][0] == "done" and "WAR  50.0  UAR  40.0" in lines[done.key][2]
    assert lines[running.key][0] == "running" and lines[running.key][2].startswith("epoch 2/2")
    assert lines[failed.key][0] == "failed" and "ValueError: broken clip" in lines[failed.key][2]
    assert lines[stale.key][0] == "stale" and "data changed" in lines[stale.key][2]
    assert lines[_pending.key][0] == "pending"
    assert "1 done, 1 running, 1 failed, 1 stale, 1 pending" in proc.stdout
    # never Ray; nor MLflow for the embedded store (read through sqlite3). torch still comes in through
    # the experiment validators (mmder.fusion, mmder.models.classifier): see the README's status section.
    assert "imported: []" in proc.stdout, "status must not import Ray or MLflow"


def test_only_errors_that_can_pass_are_retried_and_each_says_so_in_one_line(capsys):
    from harness.tracking.store import retried

    calls = []

    def permanent() -> None:
        calls.append(1)
        raise ValueError("INVALID_PARAMETER_VALUE: Changing param values is not allowed")

    with pytest.raises(ValueError):
        retried(permanent, delays=(0, 0, 0))
    assert len(calls) == 1, "a permanent error is raised at once, not after every retry"

    attempts = iter([RuntimeError("(sqlite3.OperationalError) database is locked\n[SQL: UPDATE runs SET x]")])

    def locked_once() -> str:
        for err in attempts:
            raise err
        return "written"

    assert retried(locked_once, delays=(0,)) == "written"
    (line,) = capsys.readouterr().out.splitlines()
    assert "database is locked" in line and "SQL" not in line and line.endswith("retrying in 0 s")


def _other_host(cell_dir, heartbeat: float, beat: int = 1) -> None:
    record = {"host": "node2", "pid": 4242, "since": heartbeat - 60, "heartbeat": heartbeat, "beat": beat}
    cell_dir.mkdir(parents=True, exist_ok=True)
    (cell_dir / OWNER_FILE).write_text(json.dumps(record))


def test_a_dead_owner_on_a_host_3h_ahead_is_taken_over_within_one_lease(tmp_path, monkeypatch):
    """c741607 compared node2's future heartbeat with this clock: blocked for 3 hours, no word of skew."""
    import time

    from harness.plan import owners as owners_module

    monkeypatch.setattr(owners_module, "LEASE_SECONDS", 1.0)
    _other_host(tmp_path / "cell", time.time() + 3 * 3600)
    mine = CellOwners(str(tmp_path))
    first = mine.acquire("cell")
    assert first is not None and "clock skew" in first.describe() and "3.0 h ahead" in first.describe()
    assert mine.watching and mine.watches("cell")
    started = time.monotonic()
    while mine.acquire("cell") is not None:
        assert time.monotonic() - started < 5, "a record that never changes is dead after one lease"
        time.sleep(0.1)
    assert time.monotonic() - started >= 0.9  # watched for a whole lease of this host's clock first
    assert read_owner(tmp_path / "cell").pid == os.getpid() and not mine.watching
    mine.release_all()


def test_a_live_owner_on_a_host_3h_behind_is_never_taken_over(tmp_path, monkeypatch):
    """c741607 judged its heartbeat expired at once: where locks are not shared, two sweeps ran it."""
    import threading
    import time

    from harness.plan import owners as owners_module

    # a short lease keeps the test short; renewals ten times a lease leave room for a loaded machine (a
    # 1 s lease renewed every 0.3 s was taken over once in a full-suite run: the thread was not scheduled)
    monkeypatch.setattr(owners_module, "LEASE_SECONDS", 3.0)
    stop = threading.Event()

    def renew() -> None:  # node2's driver: renews often by its own (slow) clock
        beat = 0
        while not stop.is_set():
            beat += 1
            _other_host(tmp_path / "cell", time.time() - 3 * 3600, beat)
            stop.wait(0.3)

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        time.sleep(0.1)
        mine = CellOwners(str(tmp_path))
        started = time.monotonic()
        while time.monotonic() - started < 6.0:  # two leases
            assert mine.acquire("cell") is not None, "a live owner must never be taken over"
            time.sleep(0.1)
        assert read_owner(tmp_path / "cell").host == "node2"
    finally:
        stop.set()
        thread.join()
