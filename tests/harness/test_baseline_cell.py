"""The classical baseline runs as an ordinary cell: keyed, in the deep cells' folds, logged to MLflow."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sweep_helpers import child_runs, client_for, mmder, tiny_experiment

from harness.experiment.loading import load_experiment
from harness.plan.cells import expand_cells


@pytest.mark.slow
def test_baseline_cells_run_in_the_same_folds_and_log_like_every_cell(tmp_path):
    exp = tiny_experiment(
        tmp_path,
        "base",
        datasets=[
            {
                "corpus": "synthetic",
                "name": "syn",
                "synthetic": {"clips_per_class": 2, "speakers": 4, "seed": 0},
                "protocol": {"kind": "speaker_kfold", "folds": 2},
            }
        ],
        grid={"settings": ["audio-egemaps-svm"], "seeds": [0]},
        resources={"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
    )
    cells = expand_cells(load_experiment(exp))
    assert [c.training for c in cells] == [None, None] and len({c.key for c in cells}) == 2
    out = tmp_path / "out"
    proc = mmder("sweep", str(exp), "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = child_runs(out, "base")
    assert sorted(r.data.tags["mmder.cell"] for r in runs) == sorted(c.key for c in cells)
    client = client_for(out)
    speakers_by_fold = []
    for run in sorted(runs, key=lambda r: r.data.tags["fold"]):
        assert run.info.status == "FINISHED" and run.data.params["baseline.features"] == "egemaps"
        assert 0.0 <= run.data.metrics["final_war"] <= 100.0
        text = Path(client.download_artifacts(run.info.run_id, "predictions.csv", str(tmp_path))).read_text()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 2 * 6 * 2  # 2 test speakers x 6 classes x 2 clips
        assert list(rows[0]) == ["clip_id", "speaker", "true", "predicted"]  # the SVC gives no probabilities
        assert {"job.yaml", "confusion.svg"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        speakers_by_fold.append({r["speaker"] for r in rows})
    # speaker-independent: the two folds test disjoint speakers, together all four
    assert (
        not speakers_by_fold[0] & speakers_by_fold[1] and len(speakers_by_fold[0] | speakers_by_fold[1]) == 4
    )
    again = mmder("sweep", str(exp), "--output", str(out))
    assert again.returncode == 0 and "2 already finished, 0 to run" in again.stdout
