"""A sweep that fails itself (data preparation, Ray's start) ends its parent run FAILED with the error,
never FINISHED, leaves no run RUNNING, and the command exits 4 saying so."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import tiny_experiment

from harness.cli.main import main
from harness.driver.sweep import SweepDriver
from harness.experiment.loading import load_experiment
from harness.plan.sweep_plan import SweepPlan, plan_run
from harness.tracking.runs import read_sqlite_runs
from harness.tracking.tags import KIND_SWEEP, TAG_ERROR, TAG_KIND


def _plan(tmp_path: Path, name: str) -> SweepPlan:
    spec = load_experiment(tiny_experiment(tmp_path, name, own_corpus=True))  # its clips get broken
    return plan_run(spec, tmp_path / "out", kind="train", accept_stale=False, echo=print)


def _runs(plan: SweepPlan) -> tuple[object, list]:
    runs = read_sqlite_runs(plan.places.output / "mlflow.db", plan.spec.mlflow_experiment) or []
    (parent,) = [r for r in runs if r.data.tags.get(TAG_KIND) == KIND_SWEEP]
    return parent, runs


def _traceback(parent: object) -> str:
    folder = Path(parent.info.artifact_uri.removeprefix("file://"))
    return (folder / "traceback.txt").read_text()


def test_a_data_preparation_that_fails_ends_the_parent_failed_with_its_error(tmp_path):
    plan = _plan(tmp_path, "prepfail")
    media = [p for p in plan.places.dataset_roots["syn"].rglob("*") if p.suffix in (".mp4", ".wav")]
    assert media
    for path in media:  # every clip broken after listing: nothing can be decoded
        path.write_bytes(b"not a media file")
    with pytest.raises(ValueError, match="could be prepared"):
        SweepDriver(plan, echo=print).run()
    parent, runs = _runs(plan)
    assert parent.info.status == "FAILED", "a sweep that failed must not read as finished"
    assert "could be prepared" in parent.data.tags[TAG_ERROR]
    assert "Traceback" in _traceback(parent) and "could be prepared" in _traceback(parent)
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_ray_failing_to_start_exits_4_and_the_parent_says_failed(tmp_path, monkeypatch, capsys):
    def no_ray(*args: object, **kwargs: object) -> None:
        raise RuntimeError("The current node timed out during startup")

    monkeypatch.setattr("harness.driver.tune_grid.init_ray", no_ray)
    exp = tiny_experiment(tmp_path, "rayfail")
    out = tmp_path / "out"
    assert main(["sweep", str(exp), "--output", str(out)]) == 4
    err = capsys.readouterr().err
    assert "mmder: the sweep failed: RuntimeError: The current node timed out during startup" in err
    assert "Rerun with: mmder sweep" in err
    spec = load_experiment(exp)
    plan = plan_run(spec, out, kind="train", accept_stale=False, echo=print)
    parent, runs = _runs(plan)
    assert parent.info.status == "FAILED" and "timed out" in parent.data.tags[TAG_ERROR]
    assert parent.data.metrics["cells_finished"] == 0
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(plan.todo) == 2, "nothing was recorded as done: a rerun runs every cell"


def test_ray_that_fails_to_start_is_tried_again_and_then_named_with_its_logs(capsys):
    from harness.driver.ray_setup import ray_session_logs, start_with_retries

    tries: list[int] = []

    def flaky() -> None:
        tries.append(1)
        if len(tries) < 3:
            raise Exception("The current node timed out during startup. This could happen because ...")

    start_with_retries(flaky, pause_s=0)
    lines = capsys.readouterr().out.splitlines()
    assert len(tries) == 3 and len(lines) == 2
    assert all("Ray did not start" in line and str(ray_session_logs()) in line for line in lines)
    assert lines[0].endswith("trying again (2 of 3)") and lines[1].endswith("trying again (3 of 3)")

    def broken() -> None:
        raise Exception("The current node timed out during startup.")

    with pytest.raises(RuntimeError, match=r"Ray did not start in 3 tries .* its logs: .*session_latest"):
        start_with_retries(broken, pause_s=0)
