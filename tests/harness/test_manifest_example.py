"""The shipped "your own data" experiment runs as its header says, from a clean clone: a manifest
corpus written by `mmder synth`, swept, with a bad row skipped and reported with its reason."""

from __future__ import annotations

import csv
import shutil

import pytest
from sweep_helpers import ROOT, child_runs, mmder


@pytest.mark.slow
def test_the_manifest_example_sweeps_and_reports_a_bad_row(tmp_path):
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    shutil.copy(ROOT / "experiments" / "manifest-example.yaml", experiments)
    data = tmp_path / "runs" / "manifest-example-data"  # where the file's root points, from its folder
    assert mmder("synth", str(data), "--clips-per-class", "2", "--speakers", "4").returncode == 0
    with (data / "manifest.csv").open("a", newline="") as fh:  # a row whose files are not there
        csv.writer(fh).writerow(["lost_clip", "spk01", "frown-oo", 0, 0, "video/lost.mp4", "audio/lost.wav"])
    exp, out = experiments / "manifest-example.yaml", tmp_path / "out"
    # fold 0 only, to keep the test short; --set is checked and keyed like the file
    done = mmder("sweep", str(exp), "--output", str(out), "--set", "datasets[0].folds=[0]")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "my-corpus: prepared 48, skipped 1" in done.stdout
    (report,) = out.glob("cache/manifest-*/skipped.csv")
    assert "lost.mp4,file not found" in report.read_text()
    runs = child_runs(out, "manifest-example")
    assert sorted(r.data.tags["setting"] for r in runs) == ["FSLF", "audio"]
    assert all(r.data.tags["mmder.status"] == "finished" for r in runs)
