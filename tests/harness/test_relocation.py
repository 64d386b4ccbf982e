"""An output folder copied elsewhere (rsync off a cluster, an archive, a reviewer's copy) with the original
gone: every read command reads the copy, the report writes into it, and nothing appears at the old path.

The store's runs are written through the real logging code with made-up predictions
(:mod:`harness.bench.scale_runs`); a sweep cut off, copied and resumed in its copy is the last test.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import yaml


@pytest.fixture
def moved(tmp_path):
    from harness.bench.scale import scale_experiment, write_made_up

    original, copy = tmp_path / "written-here", tmp_path / "elsewhere" / "copy"
    original.mkdir()
    experiment = tmp_path / "scale.yaml"
    experiment.write_text(yaml.safe_dump(scale_experiment(16)))
    write_made_up(experiment, original)
    shutil.copytree(original, copy, symlinks=True)
    shutil.rmtree(original)
    return experiment, original, copy


def test_a_copied_output_reads_and_writes_only_itself(moved, capsys):
    from harness.cli.main import main
    from harness.results import api
    from harness.results.leaderboard import collect_runs, experiment_leaderboard

    experiment, original, copy = moved
    table = experiment_leaderboard(collect_runs(experiment, copy))
    assert table["war_pooled"].notna().all() and table["war_spk_lo"].notna().all(), table
    assert len(api.predictions(experiment, output=copy)) == 16 * 48
    out = ["--output", str(copy)]
    for command in (
        ["status", str(experiment)],
        ["leaderboard", str(experiment)],
        ["compare", str(experiment), "CFAS", "video"],
        ["report", str(experiment)],
    ):
        assert main([*command, *out]) == 0, capsys.readouterr()
    captured = capsys.readouterr()
    assert "has no predictions" not in captured.out + captured.err
    assert (copy / "report.html").exists()
    assert not original.exists(), "a command wrote into the folder the output was copied from"
    # the report's figures went to the parent run inside the copy, whose store now points there
    db = sqlite3.connect(copy / "mlflow.db")
    locations = [row[0] for row in db.execute("select artifact_uri from runs")]
    assert locations and all(str(copy) in loc for loc in locations), locations[:3]
    assert list(copy.glob("mlartifacts/*/artifacts/report/report.html"))


def test_relocating_rewrites_only_locations_under_another_output(tmp_path):
    from harness.tracking.relocate import _root_of, artifact_root_uri

    assert _root_of("file:///old/out/mlartifacts/abc/artifacts") == "file:///old/out/mlartifacts"
    assert _root_of("file:///old/out/mlartifacts") == "file:///old/out/mlartifacts"
    assert _root_of("file:///old/out/mlartifacts-other/abc") is None
    assert _root_of("mlflow-artifacts:/1/abc/artifacts") is None
    assert artifact_root_uri(tmp_path).endswith("/mlartifacts")


@pytest.mark.slow
def test_a_cut_off_sweep_copied_elsewhere_resumes_in_the_copy_and_never_touches_the_original(tmp_path):
    """c741607: the resumed cells' predictions and figures went under the old path, recreating it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sweep_helpers import ROOT, child_runs, mmder, pause_env, paused, tiny_experiment

    from harness.experiment.loading import load_experiment
    from harness.plan.cells import expand_cells

    resources = {"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1, "max_failures": 0}
    exp = tiny_experiment(tmp_path, "trav", training={"epochs": 3}, resources=resources)
    first, _second = (c.key for c in expand_cells(load_experiment(exp)))
    original, copy, hold = tmp_path / "on-the-cluster", tmp_path / "home" / "copy", tmp_path / "pause"
    log = tmp_path / "sweep.log"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness.cli.main", "sweep", str(exp), "--output", str(original)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **pause_env(hold, first, 0)),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while first not in paused(hold, 0):
            assert sweep.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        sweep.send_signal(signal.SIGINT)
        assert sweep.wait(120) == 130, log.read_text()[-3000:]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    (hold / "hold").unlink()
    shutil.copytree(original, copy, symlinks=True)  # rsync off the cluster, then the original is gone
    shutil.rmtree(original)

    resumed = mmder("sweep", str(exp), "--output", str(copy))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "this output folder was moved or copied" in resumed.stdout
    runs = {r.data.tags["mmder.cell"]: r for r in child_runs(copy, "trav")}
    assert int(runs[first].data.tags["mmder.resumed_from_epoch"]) == 0, "resumed from the copy's checkpoint"
    for command in (["status"], ["leaderboard"], ["compare", "video", "FSLF"], ["report"]):
        said = mmder(command[0], str(exp), *command[1:], "--output", str(copy))
        assert said.returncode == 0, (command, said.stdout[-2000:], said.stderr[-2000:])
        assert "has no predictions" not in said.stdout + said.stderr
    assert not original.exists(), "a resumed sweep or a reader wrote under the folder it was copied from"
    assert all(str(copy) in r.info.artifact_uri for r in runs.values())
