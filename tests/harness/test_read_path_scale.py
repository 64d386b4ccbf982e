"""The read path at more than 1,000 finished runs: every run counted (every MLflow query pages), and the
leaderboard's numbers equal a computation straight from the runs' predictions.csv files.

The runs are written through the real logging code (``Tracker.cell_run`` ... ``finish_cell``, tagged as
the driver tags them) with small made-up predictions, not trained: one store of 1,008 runs serves
every assertion here. No test asserts a time: `mmder bench scale` measures them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

CELLS = 1008  # 8 settings x 2 folds x 63 seeds: more than MLflow's default page of 1,000


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from harness.bench.scale import scale_experiment, write_made_up

    out = tmp_path_factory.mktemp("scale")
    experiment = out / "scale.yaml"
    experiment.write_text(yaml.safe_dump(scale_experiment(CELLS)))
    assert write_made_up(experiment, out) == CELLS
    return experiment, out


def _csv_predictions(out: Path) -> dict[str, pd.DataFrame]:
    """run id -> its predictions.csv, read from the artifact folders by glob (not through our reader)."""
    found = {}
    for path in (out / "mlartifacts").glob("**/artifacts/predictions.csv"):
        found[path.parents[1].name] = pd.read_csv(path, dtype=str)
    return found


def test_the_leaderboard_of_1008_runs_equals_a_computation_from_their_predictions(store):
    from harness.results.leaderboard import collect_runs, experiment_leaderboard

    experiment, out = store
    exp = collect_runs(experiment, out)
    assert exp.runs["finished"].all() and len(exp.runs) == CELLS
    table = experiment_leaderboard(exp).set_index("setting")
    files = _csv_predictions(out)
    assert len(files) == CELLS
    for setting, runs in exp.runs.groupby("setting"):
        pred = pd.concat([files[r] for r in runs["run_id"]])
        right = pred["true"] == pred["predicted"]
        war = 100.0 * right.mean()
        uar = 100.0 * right.groupby(pred["true"]).mean().mean()
        row = table.loc[setting]
        assert row["runs"] == len(runs) == CELLS // 8
        assert row["war_pooled"] == pytest.approx(war, abs=1e-9)
        assert row["uar_pooled"] == pytest.approx(uar, abs=1e-9)
        assert row["war_mean"] == pytest.approx(runs["war"].astype(float).mean(), abs=1e-9)
        assert row["speakers"] == pred["speaker"].nunique()
    # the predictions table now holds every run; a fresh reader (a later command) reads it and agrees
    assert list((out / "predictions").glob("part-*.parquet"))
    again = experiment_leaderboard(collect_runs(experiment, out))
    pd.testing.assert_frame_equal(again, experiment_leaderboard(exp))


def test_the_api_returns_every_prediction_and_compare_pairs_every_run(store):
    from harness.results import api
    from harness.results.compare import compare
    from harness.results.leaderboard import collect_runs

    experiment, out = store
    files = _csv_predictions(out)
    pred = api.predictions(experiment, output=out)
    assert len(pred) == sum(len(f) for f in files.values())
    assert set(pred["key"]) == set(api.cells(experiment, output=out)["key"])
    c = compare(collect_runs(experiment, out), "syn", "CFAS", "video")
    assert len(c.pairs) == CELLS // 8 and c.n_clips == len(pred) // 8


def test_every_mlflow_query_pages_and_counts_every_run(store, monkeypatch):
    """MLflow answers 1,000 runs to a query that names no page size: ours page, here by 100."""
    from mlflow.tracking import MlflowClient

    from harness.tracking import runs as runs_module
    from harness.tracking.runs import experiment_id, read_client_runs
    from harness.tracking.store import Tracker
    from harness.tracking.tags import FINISHED, TAG_STATUS, tag_filter

    experiment, out = store
    name = yaml.safe_load(experiment.read_text())["name"]
    uri = f"sqlite:///{out / 'mlflow.db'}"
    exp_id = experiment_id(uri, name)
    unpaged = MlflowClient(tracking_uri=uri).search_runs([exp_id])
    assert len(unpaged) == 1000, "MLflow's own default cuts the answer at 1,000 runs"

    monkeypatch.setattr(runs_module, "PAGE_SIZE", 100)
    assert len(read_client_runs(uri, name)) == CELLS + 1  # and the sweep's parent run
    tracker = Tracker(uri=uri, experiment_id=exp_id)
    assert len(tracker._search(tag_filter(TAG_STATUS, FINISHED))) == CELLS
    assert len(tracker.finished_cells()) == CELLS  # the embedded store read directly: every run too


def test_status_and_a_rerun_count_every_finished_cell(store):
    from harness.experiment.loading import load_experiment
    from harness.plan.sweep_plan import plan_sweep

    experiment, out = store
    plan = plan_sweep(load_experiment(experiment), out)
    assert len(plan.finished) == CELLS and not plan.todo
