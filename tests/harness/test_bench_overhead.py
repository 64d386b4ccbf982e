"""`mmder bench overhead` cuts each cell's time into stages from the marks of several processes."""

from __future__ import annotations

import pytest

from harness.bench.overhead import cell_stages, overhead_experiment, startup_seconds, training_share
from harness.experiment.loading import parse_experiment


def _marks() -> list[dict]:
    trial, worker = 100, 200
    return [
        {"stage": "trial_start", "key": "a", "t": 10.0, "pid": trial},
        {"stage": "train_fit_start", "key": "a", "t": 11.0, "pid": trial},
        {"stage": "worker_process", "key": "a", "t": 14.0, "pid": worker},
        {"stage": "worker_entry", "key": "a", "t": 20.0, "pid": worker},
        {"stage": "cell_built", "key": "a", "t": 21.0, "pid": worker},
        {"stage": "tracking_ready", "key": "a", "t": 22.5, "pid": worker},
        # the training loop knows no key: joined to the cell by its process
        {"stage": "engine_ready", "key": "", "t": 25.0, "pid": worker},
        {"stage": "epoch_start", "key": "", "t": 25.5, "pid": worker},
        {"stage": "first_step", "key": "", "t": 26.0, "pid": worker},
        {"stage": "epoch_end", "key": "", "t": 30.0, "pid": worker},
        {"stage": "epoch_start", "key": "", "t": 31.0, "pid": worker},
        {"stage": "epoch_end", "key": "", "t": 36.0, "pid": worker},
        {"stage": "worker_end", "key": "a", "t": 37.0, "pid": worker},
        {"stage": "train_fit_end", "key": "a", "t": 40.0, "pid": trial},
        {"stage": "trial_end", "key": "a", "t": 40.5, "pid": trial},
        {"stage": "tune_fit_start", "key": "", "t": 5.0, "pid": 1},  # the driver's: no cell
    ]


def test_each_stage_is_the_time_between_its_marks():
    stages = cell_stages(_marks())
    assert list(stages) == ["a"]
    row = stages["a"]
    assert row["Train controller + worker actor start"] == pytest.approx(3.0)
    assert row["worker boot: Ray worker + torch/DeepSpeed imports"] == pytest.approx(6.0)
    assert row["DeepSpeed engine + resume"] == pytest.approx(2.5)
    assert row["training + eval (rest of the epochs)"] == pytest.approx(10.0)  # to the last epoch
    assert row["Train shutdown -> fit() returns"] == pytest.approx(3.0)
    assert row["total"] == pytest.approx(30.5)
    assert sum(v for k, v in row.items() if k != "total") == pytest.approx(row["total"])


def test_a_reused_trial_actor_does_not_blur_two_cells():
    marks = _marks() + [
        {"stage": "trial_start", "key": "b", "t": 41.0, "pid": 100},
        {"stage": "trial_end", "key": "b", "t": 60.0, "pid": 100},
    ]
    stages = cell_stages(marks)
    assert stages["a"]["total"] == pytest.approx(30.5)
    assert stages["b"]["total"] == pytest.approx(19.0)


def test_the_training_share_counts_core_seconds_inside_epochs_against_the_whole_machine():
    marks = _marks()  # one 1-CPU worker in its epochs for 4.5 + 5 s
    assert training_share(marks, cpus_per_worker=1, cores=2, wall=19.0) == pytest.approx(9.5 / 38.0)
    assert training_share(marks, cpus_per_worker=2, cores=2, wall=9.5) == pytest.approx(1.0)
    assert training_share([], cpus_per_worker=1, cores=2, wall=10.0) == 0.0


def test_with_cpu_seconds_in_the_marks_the_share_counts_what_the_workers_used_not_their_wall_time():
    # two 1-CPU workers on one core: each spends 10 s inside its epoch, using 5 s of CPU
    marks = [
        {"stage": stage, "key": key, "t": t, "cpu": cpu, "pid": pid}
        for pid, key in ((1, "a"), (2, "b"))
        for stage, t, cpu in (("epoch_start", 0.0, 1.0), ("epoch_end", 10.0, 6.0))
    ]
    assert training_share(marks, cpus_per_worker=1, cores=1, wall=10.0) == pytest.approx(1.0)
    assert training_share([{k: v for k, v in m.items() if k != "cpu"} for m in marks], 1, 1, 10.0) == 2.0


def test_a_cells_start_up_runs_from_its_trial_to_its_first_epoch():
    assert startup_seconds(_marks()) == {"a": pytest.approx(15.5)}


def test_the_benchmark_experiment_is_a_valid_quickstart_shaped_grid():
    spec = parse_experiment(overhead_experiment(["CFAS", "video"], 2, 2), source="bench")
    assert spec.model.size == "tiny" and spec.training.epochs == 2
    assert spec.resources.max_concurrent_trials == 2


def test_a_lane_cells_start_up_runs_from_the_end_of_the_cell_before_it_in_the_same_workers():
    marks = [
        {"stage": "trial_start", "key": "a", "t": 0.0, "pid": 1},
        {"stage": "worker_entry", "key": "a", "t": 20.0, "pid": 7},
        {"stage": "epoch_start", "key": "a", "t": 25.0, "pid": 7},
        {"stage": "worker_end", "key": "a", "t": 40.0, "pid": 7},
        {"stage": "worker_entry", "key": "b", "t": 40.5, "pid": 7},
        {"stage": "epoch_start", "key": "b", "t": 43.0, "pid": 7},
        {"stage": "worker_end", "key": "b", "t": 60.0, "pid": 7},
    ]
    assert startup_seconds(marks) == {"a": pytest.approx(25.0), "b": pytest.approx(3.0)}


def test_a_lanes_cells_each_get_their_own_stages_and_totals_that_add_up_to_the_lane():
    """The lane's start falls to its first cell, its shutdown to its last; a later cell starts when the
    cell before it ended in the same worker."""
    trial, worker = 1, 7
    marks = [
        {"stage": "trial_start", "key": "a", "t": 0.0, "pid": trial},
        {"stage": "train_fit_start", "key": "a", "t": 1.0, "pid": trial},
        {"stage": "worker_process", "key": "a", "t": 5.0, "pid": worker},
        {"stage": "worker_entry", "key": "a", "t": 20.0, "pid": worker},
        {"stage": "epoch_start", "key": "a", "t": 25.0, "pid": worker},
        {"stage": "epoch_end", "key": "a", "t": 39.0, "pid": worker},
        {"stage": "worker_end", "key": "a", "t": 40.0, "pid": worker},
        {"stage": "worker_entry", "key": "b", "t": 40.5, "pid": worker},
        {"stage": "epoch_start", "key": "b", "t": 43.0, "pid": worker},
        {"stage": "epoch_end", "key": "b", "t": 59.0, "pid": worker},
        {"stage": "worker_end", "key": "b", "t": 60.0, "pid": worker},
        {"stage": "train_fit_end", "key": "b", "t": 62.0, "pid": trial},
        {"stage": "trial_end", "key": "b", "t": 62.5, "pid": trial},
    ]
    stages = cell_stages(marks)
    a, b = stages["a"], stages["b"]
    assert a["worker boot: Ray worker + torch/DeepSpeed imports"] == pytest.approx(15.0)
    assert (
        "Train shutdown -> fit() returns" not in a
        and "worker boot: Ray worker + torch/DeepSpeed imports" not in b
    )
    assert b["lane: the cell before it ends -> this cell's entry"] == pytest.approx(0.5)
    assert b["Train shutdown -> fit() returns"] == pytest.approx(2.0)
    assert a["total"] == pytest.approx(40.0) and b["total"] == pytest.approx(22.5)
    assert a["total"] + b["total"] == pytest.approx(62.5), "the lane's time, once"
