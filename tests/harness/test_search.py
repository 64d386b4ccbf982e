"""A fair ablation: each setting gets its own search on validation speakers, resumable, then one test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sweep_helpers import ROOT, client_for, mmder, tiny_experiment

from harness.experiment.errors import ConfigError
from harness.experiment.loading import load_experiment
from harness.plan.cells import expand_cells

SEARCH = {
    "trials": 3,  # 2 at random, then TPE: each trial is a Train job (the drill's cost is its trials)
    "objective": "uar",
    "scope": "first_fold",
    "validation_speakers": 1,
    "sampler": "tpe",
    "pruner": "asha",
    "grace_epochs": 1,
    "seed": 0,
    "space": {
        "lr": {"type": "log", "low": 1e-5, "high": 3e-2},
        "weight_decay": {"type": "uniform", "low": 0.0, "high": 0.1},
    },
}


def search_experiment(tmp_path: Path, **search: object) -> Path:
    return tiny_experiment(
        tmp_path,
        "search",
        datasets=[
            {
                "corpus": "synthetic",
                "name": "syn",
                "synthetic": {"clips_per_class": 2, "speakers": 6, "seed": 0},
                "protocol": {"kind": "speaker_kfold", "folds": 2},
                "folds": [0],
            }
        ],
        grid={"settings": ["video", "FSLF"], "seeds": [0]},
        training={
            "epochs": 6,  # ASHA (reduction 4) has rungs at 1 and 4 epochs: a pruned trial stops before 6
            "batch_size": 8,
            "eval_batch_size": 16,
            "lr": 1e-3,
            "min_lr": 1e-6,
            "warmup_epochs": 0,
        },
        # two trials (and cells) at a time, one per core: the drill's kill then also cuts running trials
        resources={"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 2, "max_failures": 0},
        search={**SEARCH, "max_concurrent_trials": 2, **search},
    )


def test_search_is_validated_before_anything_starts(tmp_path):
    path = search_experiment(tmp_path, space={"lr": {"type": "log", "low": 1e-8, "high": 1e-2}})
    with pytest.raises(ConfigError) as err:  # lr below training.min_lr (1e-6) would make a bad trial
        load_experiment(path)
    assert err.value.key == "search.space.training.lr"
    path = search_experiment(tmp_path, space={"eval_batch_size": {"type": "int", "low": 8, "high": 16}})
    with pytest.raises(ConfigError, match="not searchable"):
        load_experiment(path)
    base = {c.key for c in expand_cells(load_experiment(search_experiment(tmp_path)))}
    other = {c.key for c in expand_cells(load_experiment(search_experiment(tmp_path, trials=5)))}
    assert not base & other, "the search's budget is part of every cell's identity"


def test_a_small_tpe_budget_is_not_silently_a_random_search(tmp_path, capsys):
    # Optuna's TPE draws its first 10 trials at random: a budget of 6 with its defaults was a random search
    from harness.cli.main import main
    from harness.search.driver import _sampler

    path = search_experiment(tmp_path, trials=6)
    assert main(["validate", str(path)]) == 0
    assert "search: 6 trials per (dataset, setting), 3 at random, then TPE" in capsys.readouterr().out
    search = load_experiment(path).search
    sampler = _sampler(search)
    assert sampler._n_startup_trials == 3 and sampler._constant_liar  # two trials run at once here
    with pytest.raises(ConfigError) as err:
        load_experiment(search_experiment(tmp_path, trials=6, startup_trials=6))
    assert err.value.key == "search" and "sampler: random" in str(err.value)
    with pytest.raises(ConfigError, match="only sampler: tpe"):
        load_experiment(search_experiment(tmp_path, trials=6, sampler="random", startup_trials=2))
    random = search_experiment(tmp_path, trials=6, sampler="random")
    assert main(["validate", str(random)]) == 0
    assert "6 trials per (dataset, setting), all at random" in capsys.readouterr().out


def _trial_runs(client, experiment_id: str) -> list:
    return client.search_runs([experiment_id], filter_string="tags.`mmder.kind` = 'search_trial'")


@pytest.mark.slow
@pytest.mark.drill
def test_search_per_setting_on_validation_speakers_resumes_and_trains_the_choice_once(tmp_path):
    exp = search_experiment(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "harness.cli.main", "sweep", str(exp), "--output", str(out)]
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    # kill the driver once two trials have finished: the rerun must continue the same study
    from harness.tracking.runs import read_sqlite_runs

    def trials_finished() -> int:  # read-only: an MlflowClient here would race the driver's store set-up
        runs = read_sqlite_runs(out / "mlflow.db", "search") or []
        kinds = [r for r in runs if r.data.tags.get("mmder.kind") == "search_trial"]
        return sum(1 for r in kinds if r.info.status == "FINISHED")

    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and driver.poll() is None and trials_finished() < 2:
            time.sleep(1.0)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    client = client_for(out)
    assert client.get_experiment_by_name("search"), log.read_text()[-3000:]
    experiment_id = client.get_experiment_by_name("search").experiment_id
    finished_before = {
        r.info.run_id for r in _trial_runs(client, experiment_id) if r.info.status == "FINISHED"
    }
    assert len(finished_before) >= 2, log.read_text()[-3000:]

    again = mmder("sweep", str(exp), "--output", str(out), timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # each trial's end is said as it happens, counted on from the trials the killed driver finished
    said = r"trial 3 of 3 (complete \(6 epochs\)|pruned after \d of 6 epochs), validation"
    assert re.search(said, again.stdout), again.stdout[-3000:]
    import optuna

    storage = f"sqlite:///{out / 'optuna.db'}"
    studies = optuna.get_all_study_summaries(storage)
    assert len(studies) == 2, "one search per setting"
    for summary in studies:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        states = [t.state.name for t in study.trials]
        assert states.count("COMPLETE") + states.count("PRUNED") == 3, states  # the budget, not more

    trials = _trial_runs(client, experiment_id)
    assert finished_before <= {r.info.run_id for r in trials}, "finished trials are kept, not repeated"
    kept = [r for r in trials if r.data.tags.get("mmder.trial_state") in ("complete", "pruned")]
    assert len(kept) == 6, [r.data.tags.get("mmder.trial_state") for r in trials]
    states = [r.data.tags["mmder.trial_state"] for r in kept]
    # whether ASHA prunes here depends on the trials' validation scores (tied or rising scores never fall
    # below its cut: one run had 25.0 on all four trials of one setting), so a run may have no pruned
    # trial; how a pruned trial's run is closed is checked on its own below
    assert "complete" in states, states
    for run in kept:  # complete trials ran every epoch; the scheduler stopped pruned ones before the end
        if run.data.tags["mmder.trial_state"] == "complete":
            assert len(client.get_metric_history(run.info.run_id, "val_uar")) == 6
        else:  # (micro-model epochs are so short that a worker may log an epoch or two past the stop)
            assert 1 <= int(run.data.tags["mmder.pruned_at_epoch"]) < 6
            assert run.info.status == "KILLED"
    searches = client.search_runs([experiment_id], filter_string="tags.`mmder.kind` = 'search'")
    assert len(searches) == 2 and all(r.data.tags.get("mmder.search_chosen") for r in searches)
    for run in trials:  # every trial is nested under its setting's search run
        assert run.data.tags["mlflow.parentRunId"] in {s.info.run_id for s in searches}

    cells = client.search_runs([experiment_id], filter_string="tags.`mmder.kind` = 'cell'")
    assert len(cells) == 2 and all(r.data.tags.get("mmder.status") == "finished" for r in cells)
    by_search = {s.data.tags["mmder.search"]: s for s in searches}
    test_speakers = set()
    for cell in cells:
        search = by_search[cell.data.tags["mmder.search"]]
        chosen = yaml.safe_load(search.data.tags["mmder.search_chosen"])
        assert float(cell.data.params["training.lr"]) == pytest.approx(chosen["training.lr"])
        predictions = Path(client.download_artifacts(cell.info.run_id, "predictions.csv", str(tmp_path)))
        test_speakers |= {line.split(",")[1] for line in predictions.read_text().splitlines()[1:]}
    assert test_speakers
    for run in trials:  # the test speakers appear in no search trial's data
        used = set(run.data.tags["mmder.train_speakers"].split(",")) | set(
            run.data.tags["mmder.val_speakers"].split(",")
        )
        assert not used & test_speakers, (used, test_speakers)
        assert run.data.tags["mmder.val_speakers"] and not set(
            run.data.tags["mmder.val_speakers"].split(",")
        ) & set(run.data.tags["mmder.train_speakers"].split(","))

    tune_runs = sorted((out / "ray" / "tune").glob("search-*"))
    rerun = mmder("sweep", str(exp), "--output", str(out))
    assert rerun.returncode == 0 and "0 to run" in rerun.stdout
    assert sorted((out / "ray" / "tune").glob("search-*")) == tune_runs, "a finished search starts no trial"


def test_each_trial_end_is_said_with_its_score_and_parameters():
    from types import SimpleNamespace

    from harness.search.driver import _progress_callback
    from harness.tracking.tags import OBJECTIVE

    said: list[str] = []
    progress = _progress_callback("search-x", 2, 6, 40, said.append)
    pruned = SimpleNamespace(
        last_result={"training_iteration": 10, OBJECTIVE: 41.25}, config={"job": {}, "training.lr": 0.00123}
    )
    full = SimpleNamespace(last_result={"training_iteration": 40, OBJECTIVE: 50.0}, config={"job": {}})
    progress.on_trial_complete(0, [], pruned)
    progress.on_trial_complete(0, [], full)
    progress.on_trial_error(0, [], SimpleNamespace(last_result={}, config={}))
    assert said[0] == (
        "search-x: trial 3 of 6 pruned after 10 of 40 epochs, validation 41.25; training.lr=0.00123"
    )
    assert said[1].startswith("search-x: trial 4 of 6 complete (40 epochs), validation 50.00")
    assert said[2].startswith("search-x: trial 5 of 6 failed") and "no validation score" in said[2]


def test_trials_tune_stopped_before_their_workers_closed_them_end_as_what_happened(tmp_path):
    """ASHA stops every trial at its last epoch, which can reach the workers after their last report and
    before they closed their own run: such a run is complete, not interrupted (and still counts)."""
    from types import SimpleNamespace

    from harness.search.driver import _mark_stopped
    from harness.tracking.store import Tracker
    from harness.tracking.tags import (
        KIND_SEARCH_TRIAL,
        OBJECTIVE,
        TAG_KIND,
        TAG_SEARCH,
        TAG_TRIAL,
        TAG_TRIAL_STATE,
    )

    tracker = Tracker.open(f"sqlite:///{tmp_path / 'mlflow.db'}", "search", artifact_root=tmp_path / "art")
    runs = {}
    for trial in ("ran-all", "stopped-early", "cut-off"):
        tags = {TAG_KIND: KIND_SEARCH_TRIAL, TAG_SEARCH: "s", TAG_TRIAL: trial, TAG_TRIAL_STATE: "running"}
        runs[trial] = tracker.client.create_run(tracker.experiment_id, tags=tags).info.run_id
    results = [
        SimpleNamespace(metrics={"trial_id": "ran-all", "training_iteration": 6, OBJECTIVE: 62.5}),
        SimpleNamespace(metrics={"trial_id": "stopped-early", "training_iteration": 1}),
    ]
    for result in results:
        result.error = None
    _mark_stopped(tracker, "s", results, epochs=6)

    def ended(trial: str) -> tuple[str, str]:
        run = tracker.client.get_run(runs[trial])
        return run.data.tags[TAG_TRIAL_STATE], run.info.status

    assert ended("ran-all") == ("complete", "FINISHED")
    assert tracker.client.get_run(runs["ran-all"]).data.metrics[OBJECTIVE] == 62.5
    assert ended("stopped-early") == ("pruned", "KILLED")
    assert tracker.client.get_run(runs["stopped-early"]).data.tags["mmder.pruned_at_epoch"] == "1"
    assert ended("cut-off") == ("interrupted", "KILLED")
