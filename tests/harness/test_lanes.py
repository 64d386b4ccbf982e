"""Cells grouped into lanes: longest first, balanced by work, every cell exactly once."""

from __future__ import annotations

from pathlib import Path

from harness.experiment.loading import parse_experiment
from harness.plan.cells import expand_cells
from harness.plan.lanes import cell_cost, lane_name, make_lanes


def _cells(epochs: list[int]):
    spec = parse_experiment(
        {
            "name": "lanes",
            "datasets": [
                {"corpus": "synthetic", "name": "syn", "protocol": {"kind": "speaker_kfold", "folds": 2}}
            ],
            "grid": {"settings": ["video", "audio"], "seeds": [0]},
            "model": {"size": "tiny"},
            "training": {"epochs": 1},
        },
        source="test",
    )
    cells = expand_cells(spec)
    return [
        c.model_copy(update={"training": c.training.model_copy(update={"epochs": e})})
        for c, e in zip(cells, epochs, strict=True)
    ]


def test_lanes_hold_every_cell_once_longest_first_and_balanced():
    cells = _cells([1, 8, 3, 5])
    lanes = make_lanes(cells, 2, lambda c: cell_cost(c, lambda _: 10))
    assert sorted(c.key for lane in lanes for c in lane) == sorted(c.key for c in cells)
    epochs = [[c.training.epochs for c in lane] for lane in lanes]
    assert epochs == [[8, 1], [5, 3]]  # each lane longest first; 9 and 8 epochs of work
    assert all(lane == sorted(lane, reverse=True) for lane in epochs)


def test_no_more_lanes_than_cells_and_one_lane_is_the_grid_longest_first():
    cells = _cells([2, 4, 1, 3])
    assert len(make_lanes(cells, 8, lambda c: cell_cost(c, lambda _: 1))) == 4
    (only,) = make_lanes(cells, 1, lambda c: cell_cost(c, lambda _: 1))
    assert [c.training.epochs for c in only] == [4, 3, 2, 1]


def test_a_lanes_name_is_stable_and_names_its_cells():
    cells = _cells([1, 1, 1, 1])
    assert lane_name(cells[:2]) == lane_name(list(cells[:2]))
    assert lane_name(cells[:2]) != lane_name(cells[1:3])
    assert lane_name(cells[:2]).startswith(f"lane-{cells[0].key}-")
    assert "/" not in lane_name(cells) and Path(lane_name(cells)).name == lane_name(cells)
