"""Identity is the cell key, not the display name: a renamed experiment hears that its cells are
finished under the old name (and how to count them), and never resumes checkpoints no run of its own
accounts for."""

from __future__ import annotations

from pathlib import Path

import yaml
from sweep_helpers import tiny_experiment

from harness.cli.main import main
from harness.driver import sweep as driver_sweep
from harness.experiment.loading import load_experiment
from harness.plan.cells import expand_cells
from harness.plan.places import Places
from harness.plan.provenance import code_versions
from harness.plan.sweep_plan import plan_run, plan_sweep
from harness.tracking.places import store_lock
from harness.tracking.store import Tracker
from harness.tracking.tags import FINISHED, TAG_CELL, TAG_STATUS


def _finished_under(name: str, exp: Path, out: Path) -> list[str]:
    spec = load_experiment(exp)
    places = Places.of(spec, out)
    with store_lock(places.tracking_uri):
        tracker = Tracker.open(places.tracking_uri, name, places.artifact_root)
    keys = [c.key for c in expand_cells(spec)]
    for key in keys:
        run = tracker.client.create_run(
            tracker.experiment_id, tags={TAG_CELL: key, TAG_STATUS: FINISHED, **code_versions()}
        )
        tracker.client.set_terminated(run.info.run_id)
    return keys


def _renamed(exp: Path, name: str) -> Path:
    data = yaml.safe_load(exp.read_text())
    data["name"] = name
    renamed = exp.with_name(f"{name}.yaml")
    renamed.write_text(yaml.safe_dump(data, sort_keys=False))
    return renamed


def test_a_renamed_experiment_is_told_where_its_results_are_and_can_count_them(tmp_path, capsys):
    exp, out = tiny_experiment(tmp_path, "old", own_corpus=True), tmp_path / "out"  # made-up runs
    keys = _finished_under("old", exp, out)
    new = _renamed(exp, "new")
    assert [c.key for c in expand_cells(load_experiment(new))] == keys, "the name is not in any key"
    plan = plan_sweep(load_experiment(new), out)
    assert plan.elsewhere == {"old": 2} and len(plan.todo) == 2
    assert main(["sweep", str(new), "--output", str(out), "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert "2 of these cells are finished in MLflow experiment 'old'" in shown
    assert "--set tracking.experiment=old" in shown
    # the other direction: pointed at the old experiment, the renamed file finds everything finished
    assert (
        main(["sweep", str(new), "--output", str(out), "--dry-run", "--set", "tracking.experiment=old"]) == 0
    )
    assert "2 cells: 0 to run, 2 finished" in capsys.readouterr().out


def test_checkpoints_no_run_of_the_experiment_accounts_for_are_not_resumed(tmp_path, monkeypatch):
    exp, out = tiny_experiment(tmp_path, "old", own_corpus=True), tmp_path / "out"  # made-up runs
    keys = _finished_under("old", exp, out)
    new = _renamed(exp, "new")
    spec = load_experiment(new)
    storage = Path(Places.of(spec, out).storage)
    for key in keys:  # the old experiment's last checkpoints, which the new one's plan says to "run"
        (storage / key / "attempt-000" / "checkpoint_1").mkdir(parents=True)
    seen: dict[str, list[str]] = {}

    def grid(driver, cells) -> None:  # stands in for Tune: what is on disk when the cells would start
        seen.update({c.key: sorted(p.name for p in (storage / c.key).iterdir()) for c in cells})

    monkeypatch.setattr(driver_sweep, "run_grid", grid)
    lines: list[str] = []
    plan = plan_run(spec, out, kind="train", accept_stale=False, echo=lines.append)
    driver_sweep.SweepDriver(plan, echo=lines.append).run()
    assert set(seen) == set(keys)
    assert all("attempt-000" not in folder for folder in seen.values()), seen
    assert sum("no run of this experiment accounts for" in line for line in lines) == 2, lines
    assert any("finished in MLflow experiment 'old'" in line for line in lines)
