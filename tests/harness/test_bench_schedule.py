"""`mmder bench schedule`: a paper-sized grid on fake GPUs, and the figures it reports."""

from __future__ import annotations

import pytest

from harness.bench.schedule import DATASETS, SETTINGS, bench_schedule, paper_grid, schedule_figures


def test_the_paper_grid_has_every_cell_once_longest_first():
    cells = paper_grid(20.0)
    assert len(cells) == sum(folds for _, folds in DATASETS.values()) * len(SETTINGS) == 88
    assert len({c["key"] for c in cells}) == 88
    lengths = [c["seconds"] for c in cells]
    assert lengths == sorted(lengths, reverse=True)


def test_figures_count_held_device_time_from_fit_start_to_end():
    cells = [{"key": "a", "seconds": 10.0}, {"key": "b", "seconds": 8.0}]
    rows = [
        (cells[0], {"fit_start": 0.0, "work_start": 2.0, "work_end": 12.0, "fit_end": 13.0}),
        (cells[1], {"fit_start": 1.0, "work_start": 3.0, "work_end": 11.0, "fit_end": 12.0}),
    ]
    fig = schedule_figures(cells, rows, devices=4, per_cell=2, scale=1.0, makespan=13.0, trainer="plain")
    # busy 2 x (10 + 8) = 36 device-s; held 2 x (13 + 11) = 48
    assert fig["efficiency (busy / held device-time)"] == "0.750"
    assert fig["overhead per cell"] == "3.0 s held without work (start-up 2.0 s)"
    assert fig["makespan / ideal"] == "13 s / 9 s = 1.44"
    assert fig["start order vs longest first (Kendall tau)"] == "1.00"
    assert fig["cells"].startswith("2 (0 failed)")


@pytest.mark.slow
def test_a_small_schedule_runs_every_cell_on_a_fake_gpu_longest_first():
    # one fake GPU: the cells run one after another, so the start order must be exactly longest first
    fig = bench_schedule(devices=1, per_cell=1, scale=0.4, limit=2, trainer="plain")  # a Train job each
    assert fig["cells"].startswith("2 (0 failed), 1 of 1 fake GPUs each, plain trainer")
    efficiency = float(fig["efficiency (busy / held device-time)"])
    assert 0.0 < efficiency < 1.0  # workers slept inside the held time, and start-up held some
    assert fig["start order vs longest first (Kendall tau)"] == "1.00"
