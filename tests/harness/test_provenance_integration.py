"""Issue 8 on the real stack (local Ray, DeepSpeed on CPU, MLflow SQLite): every result bound to the
data and code that made it, honest run states, one owner per cell, and `mmder status` while a sweep runs.

Each test is a few tiny sweeps (micro model, 32 px, 1 worker) with several checks per sweep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sweep_helpers import (
    ROOT,
    board_csv,
    child_runs,
    client_for,
    mmder,
    pause_env,
    paused,
    tiny_experiment,
    wait_for,
)

pytestmark = pytest.mark.slow

RAVDESS = ROOT.parent / "shared" / "data" / "ravdess-speech-16k"
ONE_WORKER = {"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1, "max_failures": 0}


def _popen(*args: str, env: dict | None = None, log: Path, own_group: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli.main", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=own_group,  # its own process group, as a batch job's: signalled all at once
    )


def _runs_by_key(out: Path, name: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for run in sorted(child_runs(out, name), key=lambda r: r.info.start_time):
        found.setdefault(run.data.tags["mmder.cell"], []).append(run)
    return found


def _parent(out: Path, name: str):
    client = client_for(out)
    exp = client.get_experiment_by_name(name)
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`mmder.kind` = 'sweep'")
    return parent


def _epochs_logged(out: Path, name: str, key: str) -> int:
    from harness.tracking.runs import read_sqlite_runs

    runs = read_sqlite_runs(out / "mlflow.db", name) or []
    steps = [
        r.data.steps["test_war"][1] + 1
        for r in runs
        if r.data.tags.get("mmder.cell") == key and "test_war" in r.data.steps
    ]
    return max(steps, default=0)


@pytest.mark.skipif(not RAVDESS.is_dir(), reason=f"shared RAVDESS sample not found at {RAVDESS}")
def test_a_data_change_reruns_its_cells_in_new_runs_and_an_operational_knob_reruns_nothing(tmp_path):
    root = tmp_path / "ravdess"
    root.mkdir()
    for actor in ("Actor_01", "Actor_02"):
        (root / actor).symlink_to(RAVDESS / actor)
    dataset = {
        "corpus": "ravdess",
        "root": str(root),
        "options": {"modality": "audio"},
        "protocol": {"kind": "speaker_kfold", "folds": 2},
        "folds": [0],
    }
    settings = {"datasets": [dataset], "grid": {"settings": ["audio"], "seeds": [0]}, "resources": ONE_WORKER}
    exp = tiny_experiment(tmp_path, "prov", **settings)
    out = tmp_path / "out"
    first = mmder("sweep", str(exp), "--output", str(out))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    ((old,),) = _runs_by_key(out, "prov").values()
    tags = old.data.tags
    for tag in ("data_digest", "cache_version", "results_version", "version", "git_commit", "device"):
        assert tags.get(f"mmder.{tag}"), tag
    assert tags["mmder.precision"] == "fp32" and tags["mmder.world_size"] == "1"
    assert tags["mmder.test_speakers"] == "Actor_01"
    (dataset_input,) = client_for(out).get_run(old.info.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.digest == tags["mmder.data_digest"]

    # knobs that cannot change a result leave every key alone: nothing to run
    data = yaml.safe_load(exp.read_text())
    knobs = dict(data, training=dict(data["training"], data_workers=1, eval_batch_size=3))
    knobs["datasets"] = [dict(dataset, name="RAVDESS-speech")]
    exp.write_text(yaml.safe_dump(knobs))
    dry = mmder("sweep", str(exp), "--output", str(out), "--dry-run")
    assert "1 cells: 0 to run, 1 finished" in dry.stdout, dry.stdout + dry.stderr

    (root / "Actor_03").symlink_to(RAVDESS / "Actor_03")  # more data under the same root
    dry = mmder("sweep", str(exp), "--output", str(out), "--dry-run")
    assert "stale (data changed)" in dry.stdout, dry.stdout
    second = mmder("sweep", str(exp), "--output", str(out))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    assert "stale (data changed)" in second.stdout
    ((before, new),) = _runs_by_key(out, "prov").values()
    assert before.info.run_id == old.info.run_id and before.data.tags["mmder.superseded"] == "data changed"
    assert new.data.tags["mmder.status"] == "finished"
    assert new.data.tags["mmder.data_digest"] != tags["mmder.data_digest"]
    # the old cell's checkpoints (its last epoch) went first: the new run trained every epoch on
    # today's data instead of resuming the old weights and logging them as the new cell's
    assert "checkpoints removed (data changed); starts at epoch 0" in second.stdout, second.stdout
    trained = client_for(out).get_metric_history(new.info.run_id, "train_loss")
    assert sorted(m.step for m in trained) == [0, 1]
    board = mmder("leaderboard", str(exp), "--output", str(out), "--format", "csv")
    war = float(board_csv(board.stdout)["war_mean"].iloc[0])
    assert war == pytest.approx(new.data.metrics["final_war"], abs=0.06), board.stdout


def test_a_failing_and_an_out_of_memory_cell_fail_alone_are_retried_and_a_damaged_cache_is_rebuilt(
    tmp_path,
):
    """One sweep, two faults: FSLF raises; CFAS's worker outgrows its memory limit and the kernel kills it
    (where this node lets a worker make a memory cgroup; elsewhere it fails saying there is no limit)."""
    from harness.worker.memory import confinable

    limited = confinable() is None
    resources = dict(ONE_WORKER, memory_per_worker_gb=2.0)
    exp = tiny_experiment(tmp_path, "fail", resources=resources, grid={"settings": ["video", "FSLF", "CFAS"]})
    out = tmp_path / "out"
    faults = {"MMDER_CHAOS_FAIL_CELL": "FSLF", "MMDER_CHAOS_OOM_CELL": "CFAS"}
    first = mmder_env(faults, "sweep", str(exp), "--output", str(out))
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-5000:]
    runs = _runs_by_key(out, "fail")
    (failed_key,) = [k for k in runs if "FSLF" in k]
    (oom_key,) = [k for k in runs if "CFAS" in k]
    (video_key,) = [k for k in runs if k not in (failed_key, oom_key)]
    (failed,) = runs[failed_key]
    assert failed.info.status == "FAILED"
    assert "injected failure" in failed.data.tags["mmder.error"]
    assert "traceback.txt" in {a.path for a in client_for(out).list_artifacts(failed.info.run_id)}
    (oom,) = runs[oom_key]
    assert oom.info.status == "FAILED"
    said = "at its limit of 2.00 GiB (resources.memory_per_worker_gb)"
    if limited:
        assert "out of memory: the kernel's OOM killer killed rank 0" in oom.data.tags["mmder.error"]
        assert said in oom.data.tags["mmder.error"]
        assert "out of memory" in first.stdout + first.stderr
    else:
        assert "no memory limit" in oom.data.tags["mmder.error"]
    assert runs[video_key][0].info.status == "FINISHED"
    parent = _parent(out, "fail")
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["cells_failed"] == 2 and parent.data.metrics["cells_finished"] == 1

    status = mmder("status", str(exp), "--output", str(out))
    lines = {ln.split()[1]: ln for ln in status.stdout.splitlines() if ln.startswith("  ")}
    assert lines[video_key].split()[0] == "done" and "WAR" in lines[video_key]
    assert lines[failed_key].split()[0] == "failed" and "injected failure" in lines[failed_key]
    assert lines[oom_key].split()[0] == "failed" and ("out of memory" in lines[oom_key] or not limited)

    (array,) = [p for p in out.glob("cache/*/video16.npy")]
    with array.open("r+b") as fh:
        fh.truncate(array.stat().st_size // 2)
    second = mmder("sweep", str(exp), "--output", str(out))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    assert "is damaged" in second.stdout and "preparing" in second.stdout
    assert "1 already finished, 2 to run" in second.stdout and "retried in a fresh attempt" in second.stdout
    runs = _runs_by_key(out, "fail")
    assert len(runs[video_key]) == 1, "the finished cell is not run again"
    for key in (failed_key, oom_key):
        old, retry = runs[key]
        assert old.info.status == "FAILED" and retry.info.status == "FINISHED"
        assert retry.data.tags["mmder.attempt"] == "2"
    assert _parent(out, "fail").info.status == "FINISHED"


def mmder_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli.main", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ray_sessions() -> set[str]:
    return {p.name for p in Path("/tmp/ray").glob("session_2*")} if Path("/tmp/ray").is_dir() else set()


def _processes_of(session: str) -> list[str]:
    """Command lines of live processes that belong to a Ray session (its folder is in their arguments)."""
    found = subprocess.run(["pgrep", "-af", session], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


def _group_of(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group."""
    found = subprocess.run(
        ["ps", "-e", "-o", "pgid=,stat=,pid=,args="], capture_output=True, text=True
    ).stdout
    rows = [ln.split(maxsplit=3) for ln in found.splitlines()]
    return [" ".join(r[2:]) for r in rows if len(r) >= 3 and r[0] == str(pgid) and not r[1].startswith("Z")]


def test_sigint_sigterm_sighup_sigkill_each_cut_a_sweep_and_each_rerun_resumes_each_epoch_once(tmp_path):
    """One sweep cut four times in turn, each cut at a marker (a cell holding still after an epoch), never
    at a moment: the first cell by SIGINT (Ctrl-C), its resumed run by SIGTERM (a scheduler's stop), then
    by SIGHUP (the terminal closed): each ends its runs KILLED and no process of the sweep's own Ray
    outlives it. Then the driver is killed outright (SIGKILL) once the first cell has finished and the
    second has saved its first epoch: the rerun runs only the unfinished cell, from its checkpoint, in
    its own MLflow run."""
    import json

    from harness.experiment.loading import load_experiment
    from harness.plan.cells import expand_cells

    epochs = 5
    exp = tiny_experiment(
        tmp_path, "sig", training={"epochs": epochs}, resources=dict(ONE_WORKER, max_failures=1)
    )
    out = tmp_path / "out"
    first_key, second_key = (c.key for c in expand_cells(load_experiment(exp)))
    hold = tmp_path / "pause"
    cuts = [(signal.SIGINT, first_key, 1), (signal.SIGTERM, first_key, 2), (signal.SIGHUP, first_key, 3)]
    cuts.append((signal.SIGKILL, second_key, 0))
    for round_, (signum, key, at) in enumerate(cuts):
        log = tmp_path / f"sweep-{round_}.log"
        before = _ray_sessions()
        # each round's run of the first cell (the same run, resumed) is cut one epoch later
        sweep = _popen(
            "sweep",
            str(exp),
            "--output",
            str(out),
            env=pause_env(hold, key, at),
            log=log,
            own_group=signum == signal.SIGTERM,
        )
        try:
            wait_for(lambda key=key, at=at: key in paused(hold, at), sweep, log)
            if signum == signal.SIGINT:  # `mmder status` while the sweep runs
                status = mmder("status", str(exp), "--output", str(out), "--format", "json")
                cells = {c["key"]: c for c in json.loads(status.stdout)["cells"]}
                assert cells[first_key]["state"] == "running" and cells[first_key]["epochs"] == epochs
                assert cells[first_key]["epoch"] == 2 and cells[first_key]["owner"]
                assert cells[second_key]["state"] == "pending"
            if signum == signal.SIGTERM:  # c741607: 61 s, then Ray aborted the driver with runs RUNNING
                os.killpg(sweep.pid, signum)
                code = sweep.wait(30)  # a scheduler's grace (Slurm's KillWait): TimeoutExpired fails it
            else:
                sweep.send_signal(signum)
                code = sweep.wait(120)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        text = log.read_text()
        runs = _runs_by_key(out, "sig")
        if signum == signal.SIGKILL:
            break
        assert code == 128 + signum, text[-3000:]
        assert "Tuner.restore" not in text and "Resume with: mmder sweep" in text
        (run,) = runs[first_key]  # the resumed run is the same run
        assert run.info.status == "KILLED", signum
        assert _parent(out, "sig").info.status == "KILLED"
        assert _epochs_logged(out, "sig", first_key) == at + 1, "cut where the marker said"
        # the sweep's own local Ray: its session folders end with the driver's pid (other tests' sweeps
        # may start sessions of their own meanwhile; a loaded machine's first start that timed out and was
        # retried left a second one)
        sessions = [s for s in _ray_sessions() - before if s.endswith(f"_{sweep.pid}")]
        assert sessions, text[-3000:]
        deadline = time.monotonic() + 30
        while any(_processes_of(s) for s in sessions) and time.monotonic() < deadline:
            time.sleep(1)
        left = [p for s in sessions for p in _processes_of(s)]
        assert not left, f"{signal.Signals(signum).name} left: {left}"
        # nor any other process of its group (Ray's workers rename themselves: no session folder to match)
        while signum == signal.SIGTERM and _group_of(sweep.pid) and time.monotonic() < deadline + 30:
            time.sleep(1)
        if signum == signal.SIGTERM:
            assert not _group_of(sweep.pid), f"SIGTERM to the group left: {_group_of(sweep.pid)}"

    # killed outright: nothing could end the runs, the first cell had finished, the second saved epoch 0
    assert code == -signal.SIGKILL
    (hold / "hold").unlink()  # a worker the kill left behind, if any, may go on and end
    killed = {key: found[0] for key, found in runs.items()}
    assert killed[first_key].data.tags["mmder.status"] == "finished"
    assert killed[second_key].data.tags.get("mmder.status") != "finished"

    rerun = mmder("sweep", str(exp), "--output", str(out))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-5000:]
    assert "1 already finished, 1 to run" in rerun.stdout
    runs = _runs_by_key(out, "sig")
    client = client_for(out)
    for key in (first_key, second_key):
        (run,) = runs[key]  # one MLflow run per cell through all five sweeps
        assert run.info.run_id == killed[key].info.run_id
        assert run.data.tags["mmder.status"] == "finished"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_war")]
        if key == first_key:
            assert sorted(steps) == list(range(epochs)), "each epoch exactly once"
    assert int(runs[first_key][0].data.tags["mmder.resumed_from_epoch"]) >= 2
    # the second cell went on after its saved epoch instead of starting over: in the rerun, from its
    # checkpoint; or in the worker the kill left behind, which went on once released and ended the cell
    # in its own run before the rerun took it (the rerun then says so and skips it: still one run)
    if f"{second_key}: finished meanwhile by another sweep; skipped" not in rerun.stdout:
        resumed = runs[second_key][0].data.tags.get("mmder.resumed_from_epoch", "-1")
        assert int(resumed) >= 0, rerun.stdout[-4000:]
    steps = [m.step for m in client.get_metric_history(runs[second_key][0].info.run_id, "test_war")]
    assert set(steps) == set(range(epochs))
    assert _parent(out, "sig").info.status == "FINISHED"


def test_three_sweeps_into_one_output_at_once_run_each_cell_once_and_a_killed_owner_never_blocks(tmp_path):
    """Three drivers started together on one --output: two of experiment ``expa`` (they share its cells:
    each cell runs once, and when the driver owning a cell is killed mid-cell the other takes it over)
    and one of ``expb``, a different experiment with a cell both share (FSLF, run by one, then by the
    other). Each experiment's cells end once each in its own MLflow experiment, and status and leaderboard
    of each show only its own cells. ``expa`` trains its cells in a lane, ``expb`` (reuse_workers: false)
    a Train job per cell: both ways share one output."""
    import json

    epochs = 3
    out = tmp_path / "out"
    experiments = {
        name: tiny_experiment(
            tmp_path,
            name,
            grid={"settings": settings},
            training={"epochs": epochs},
            resources={**ONE_WORKER, "max_failures": 1, "reuse_workers": reuse},
        )
        for name, settings, reuse in (("expa", ["video", "FSLF"], True), ("expb", ["audio", "FSLF"], False))
    }
    hold = tmp_path / "pause"
    env = pause_env(hold, "", 1)  # expa's cells hold still after epoch 1 until their owner is killed
    logs = {name: tmp_path / f"{name}.log" for name in ("a1", "a2", "b")}
    a_sweeps = [
        _popen("sweep", str(experiments["expa"]), "--output", str(out), "--wait", env=env, log=logs[n])
        for n in ("a1", "a2")
    ]
    b_sweep = _popen("sweep", str(experiments["expb"]), "--output", str(out), "--wait", log=logs["b"])
    try:
        # once a cell of expa is being trained, kill whichever sweep owns it: the other must take it over
        from harness.plan.owners import read_owner

        wait_for(lambda: paused(hold, 1), a_sweeps[0], logs["a1"])
        owner = read_owner(out / "ray" / paused(hold, 1)[0])
        assert owner is not None
        (killed,) = [s for s in a_sweeps if s.pid == owner.pid]
        killed.send_signal(signal.SIGKILL)
        (hold / "hold").unlink()
        (survivor,) = [s for s in a_sweeps if s is not killed]
        codes = {"expa": survivor.wait(900), "expb": b_sweep.wait(900)}
    finally:
        for s in [*a_sweeps, b_sweep]:
            if s.poll() is None:
                s.kill()
    text = "".join(log.read_text() for log in logs.values())
    assert codes == {"expa": 0, "expb": 0}, text[-5000:]
    assert "already exists" not in text
    assert "being run by another sweep" in text
    client = client_for(out)
    for name, settings in (("expa", {"video", "FSLF"}), ("expb", {"audio", "FSLF"})):
        runs = _runs_by_key(out, name)
        assert {found[0].data.tags["setting"] for found in runs.values()} == settings
        for key, found in runs.items():
            assert len(found) == 1 and found[0].data.tags["mmder.status"] == "finished", key
            steps = [m.step for m in client.get_metric_history(found[0].info.run_id, "test_war")]
            assert sorted(steps) == list(range(epochs)), key
        status = mmder("status", str(experiments[name]), "--output", str(out), "--format", "json")
        cells = json.loads(status.stdout)["cells"]
        assert {c["setting"] for c in cells} == settings and all(c["state"] == "done" for c in cells)
        board = mmder("leaderboard", str(experiments[name]), "--output", str(out), "--format", "csv")
        assert set(board_csv(board.stdout)["setting"]) == settings
    assert _parent(out, "expb").info.status == "FINISHED"
