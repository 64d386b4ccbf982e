"""How a sweep judges a cell from its latest run: skip, resume, retry, or stale (start again at 0)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.experiment.loading import load_experiment
from harness.plan.cells import expand_cells
from harness.plan.provenance import code_versions
from harness.plan.sweep_plan import judge_cell
from harness.tracking.tags import FINISHED, TAG_DATA_DIGEST, TAG_STATUS

ROOT = Path(__file__).resolve().parents[2]
CELL = expand_cells(load_experiment(ROOT / "experiments" / "quickstart.yaml"))[0]


def record(status: str, *, digest: str = "d1", finished: bool = False, old_code: bool = False):
    """A cell's run as the plan reads it from the store: its MLflow status and identity tags."""
    versions = code_versions(CELL.kind)
    tags = {TAG_DATA_DIGEST: digest, **({k: "0" for k in versions} if old_code else versions)}
    if finished:
        tags[TAG_STATUS] = FINISHED
    return SimpleNamespace(data=SimpleNamespace(tags=tags), info=SimpleNamespace(status=status, run_id="r1"))


@pytest.mark.parametrize(
    ("run", "today", "action", "why"),
    [
        (record("FINISHED", finished=True), "d1", "skip", ""),
        (record("FINISHED", finished=True), "d2", "stale", "data changed"),
        (record("FINISHED", finished=True, old_code=True), "d1", "stale", "code changed"),
        (record("KILLED"), "d1", "resume", ""),
        (record("KILLED"), "d2", "stale", "data changed"),
        (record("FAILED"), "d1", "retry", ""),
        # a failed run of older data or code is not retried from its checkpoints: it starts again
        (record("FAILED"), "d2", "stale", "data changed"),
        (record("FAILED", old_code=True), "d1", "stale", "code changed"),
        # data not here (a dry run elsewhere): no evidence of a change
        (record("FINISHED", finished=True), None, "skip", ""),
    ],
)
def test_a_cell_is_judged_by_its_latest_run_and_todays_identity(run, today, action, why):
    plan = judge_cell(CELL, [run], today, accept_stale=False)
    assert (plan.action, plan.why) == (action, why)
    assert plan.run_id == "r1"


def test_accepting_stale_keeps_finished_results_but_never_resumes_an_older_cell():
    assert judge_cell(CELL, [record("FINISHED", finished=True)], "d2", accept_stale=True).action == "skip"
    assert judge_cell(CELL, [record("KILLED")], "d2", accept_stale=True).action == "stale"
    assert judge_cell(CELL, [], "d1", accept_stale=False).action == "run"


def test_a_classical_baseline_runs_once_per_fold_whatever_the_seeds_and_keeps_its_keys(tmp_path):
    """Its SVC ignores the seed: three seeds computed the same eGeMAPS SVM three times (issue 22)."""
    from sweep_helpers import tiny_experiment

    from harness.experiment.loading import load_experiment
    from harness.plan.cells import expand_cells

    settings = {"settings": ["audio", "audio-egemaps-svm"]}
    one = expand_cells(load_experiment(tiny_experiment(tmp_path, "b", grid={**settings, "seeds": [0]})))
    three = expand_cells(
        load_experiment(tiny_experiment(tmp_path, "b", grid={**settings, "seeds": [0, 1, 2]}))
    )
    baseline = [c.key for c in three if c.setting == "audio-egemaps-svm"]
    assert baseline == [c.key for c in one if c.setting == "audio-egemaps-svm"], "once per fold, same keys"
    assert len([c for c in three if c.setting == "audio"]) == 3 * len(baseline), "deep cells: every seed"


def test_every_shipped_experiment_keeps_its_cell_keys():
    """A finished result's key moves only when its result does: planning refactors (sections resolved
    once per experiment, cells built without revalidation) must leave every shipped key as it was.
    The pinned keys were computed by the code before those refactors (tests/golden/cell_keys.json)."""
    import json

    from harness.plan.cells import expand_pretrain_cells

    pinned = json.loads((ROOT / "tests" / "golden" / "cell_keys.json").read_text())
    shipped = sorted(p.name for p in (ROOT / "experiments").glob("*.yaml"))
    assert sorted(pinned) == shipped, "an experiment added or removed: pin its keys in cell_keys.json"
    for name, keys in pinned.items():
        spec = load_experiment(ROOT / "experiments" / name)
        now = [c.key for c in expand_cells(spec)]
        if spec.model.pretrained == "mae":
            now += [c.key for c in expand_pretrain_cells(spec)]
        assert now == keys, f"{name}: cell keys moved"


def test_a_finished_run_never_ended_is_found_for_the_sweep_to_end():
    """A worker of a SIGKILLed driver wrote its cell's finished tag and final metrics and died before it
    ended the run (seen once in a 2,000-cell kill-and-resume): the plan names the run, so the rerun ends it
    FINISHED instead of leaving it RUNNING in MLflow forever."""
    from harness.plan.sweep_plan import SweepPlan

    def run(run_id: str, status: str) -> SimpleNamespace:
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, status=status))

    plan = SweepPlan(
        spec=None,
        kind="train",
        places=None,
        cells=[],
        finished={"a": "r1", "b": "r2", "c": "r4"},
        runs={
            "a": [run("r1", "FINISHED")],
            "b": [run("r2", "RUNNING")],
            "c": [run("r4", "KILLED"), run("r3", "FAILED")],
        },
    )
    assert plan.unterminated == ["r2", "r4"]
