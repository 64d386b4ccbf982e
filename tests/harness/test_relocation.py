"""An output folder copied elsewhere (rsync off a cluster, an archive, a reviewer's copy) with the original
gone: every read command reads the copy, the report writes into it, and nothing appears at the old path.

The store's runs are written through the real logging code with made-up predictions
(:mod:`harness.bench.scale_runs`); the resumed-sweep half of the drill is in the sweep tests.
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
