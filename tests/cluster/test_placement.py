"""The placement watchdog's arithmetic and its thread handling, without Ray."""

from __future__ import annotations

import threading

import pytest

from harness.worker.placement import CellUnplaceable, fit_watched, shortfall


def node(node_id: str, alive: bool = True, **resources: float) -> dict:
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": "127.0.0.1", "Resources": resources}


def test_fits_across_nodes_and_ignores_dead_ones() -> None:
    nodes = [node("a", CPU=1), node("b", CPU=2), node("c", alive=False, CPU=8)]
    assert shortfall({"CPU": 1}, 3, nodes) is None
    missing = shortfall({"CPU": 1}, 4, nodes)
    assert missing is not None and "missing in total CPU 1" in missing and "2 alive nodes hold 3" in missing


def test_the_trial_drivers_share_blocks_a_whole_worker_on_its_node() -> None:
    # the hang: 1 CPU per node, the driver's 0.01 CPU on one of them, a 2-worker cell
    nodes = [node("a", CPU=1), node("b", CPU=1)]
    assert shortfall({"CPU": 1}, 2, nodes) is None
    missing = shortfall({"CPU": 1}, 2, nodes, held={"CPU": 0.01}, held_on="a")
    assert missing is not None and "hold 1" in missing


def test_per_node_fit_is_named_when_totals_suffice() -> None:
    missing = shortfall({"CPU": 3}, 1, [node("a", CPU=2), node("b", CPU=2)])
    assert missing is not None and "every node is missing part of a whole worker" in missing


def test_missing_custom_resource_is_named() -> None:
    missing = shortfall({"CPU": 1, "fake_gpu": 1}, 4, [node("a", CPU=16, fake_gpu=2)])
    assert missing is not None and "fake_gpu 2" in missing


def test_watchdog_fails_an_unplaceable_cell_and_passes_results_and_errors() -> None:
    release = threading.Event()
    with pytest.raises(CellUnplaceable, match="CPU"):
        fit_watched(release.wait, "k", 2, {"CPU": 1}, after_s=0.05, poll_s=0.01, check=lambda n, c: "CPU 1")
    release.set()
    assert fit_watched(lambda: 7, "k", 1, {"CPU": 1}, after_s=0.05, poll_s=0.01, check=lambda n, c: None) == 7

    def boom() -> None:
        raise ValueError("from the fit")

    with pytest.raises(ValueError, match="from the fit"):
        fit_watched(boom, "k", 1, {"CPU": 1}, after_s=0.05, poll_s=0.01, check=lambda n, c: None)
