"""A finished sweep's rerun prints its stored leaderboard; any new finished run makes it render anew."""

from __future__ import annotations

from sweep_helpers import tiny_experiment

from harness.experiment.loading import load_experiment
from harness.plan.cells import expand_cells
from harness.plan.sweep_plan import plan_sweep
from harness.results.board_cache import board_signature, cached_board, store_board
from harness.tracking.places import default_uri
from harness.tracking.store import Tracker
from harness.tracking.tags import FINISHED, TAG_CELL, TAG_STATUS


def _finish(tracker: Tracker, key: str) -> str:
    run = tracker.client.create_run(tracker.experiment_id, tags={TAG_CELL: key, TAG_STATUS: FINISHED})
    tracker.client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_the_stored_board_is_used_only_while_its_runs_are_the_same(tmp_path):
    spec = load_experiment(tiny_experiment(tmp_path, "board"))
    out = tmp_path / "out"
    out.mkdir()
    assert board_signature(plan_sweep(spec, out)) is None  # no store yet: nothing can be cached
    tracker = Tracker.open(default_uri(out), spec.mlflow_experiment, artifact_root=out / "mlartifacts")
    first, second = (c.key for c in expand_cells(spec))
    _finish(tracker, first)

    signature = board_signature(plan_sweep(spec, out))
    assert cached_board(out, signature) is None
    store_board(out, signature, "the table\n")
    assert cached_board(out, board_signature(plan_sweep(spec, out))) == "the table\n"  # a no-op rerun

    _finish(tracker, second)  # a cell finished since: the old table is not printed again
    assert cached_board(out, board_signature(plan_sweep(spec, out))) is None
    _finish(tracker, "a-key-of-another-experiment-file")  # not a cell of this grid: no change
    store_board(out, board_signature(plan_sweep(spec, out)), "new table\n")
    assert cached_board(out, board_signature(plan_sweep(spec, out))) == "new table\n"


def test_a_change_to_any_module_that_renders_the_board_renders_it_anew(tmp_path, monkeypatch):
    """An upgrade that changes how the table reads (its text, protocol line, intervals: modules beside
    leaderboard.py since it was split) must not print the old table again."""
    import shutil

    from harness.results import board_cache

    code = tmp_path / "code"
    shutil.copytree(board_cache._RENDERERS[0], code / "results")
    monkeypatch.setattr(board_cache, "_RENDERERS", (code / "results", board_cache._RENDERERS[1]))
    spec = load_experiment(tiny_experiment(tmp_path, "board"))
    out = tmp_path / "out"
    out.mkdir()
    tracker = Tracker.open(default_uri(out), spec.mlflow_experiment, artifact_root=out / "mlartifacts")
    _finish(tracker, expand_cells(spec)[0].key)
    store_board(out, board_signature(plan_sweep(spec, out)), "the table\n")
    assert cached_board(out, board_signature(plan_sweep(spec, out))) == "the table\n"
    text = code / "results" / "board_text.py"
    text.write_text(text.read_text() + "\n# a new way to write an interval\n")
    assert cached_board(out, board_signature(plan_sweep(spec, out))) is None
