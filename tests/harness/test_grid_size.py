"""A grid's size said before any work: `validate` and `--dry-run` summarise a large grid, and a sweep
above resources.max_cells is refused without --yes, naming the axis that multiplies (c741607 listed
400,027 lines in 118 s and would have started 400,000 cells)."""

from __future__ import annotations

import pytest
from sweep_helpers import tiny_experiment

from harness.cli.main import main
from harness.driver.outcome import ExitCode


def test_a_400000_cell_grid_is_planned_and_refused_without_yes(tmp_path, capsys):
    exp = tiny_experiment(
        tmp_path, "typo", grid={"settings": ["video", "audio", "CFAS", "FSLF"], "seeds": list(range(100_000))}
    )
    out = tmp_path / "out"
    assert main(["sweep", str(exp), "--output", str(out)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "resources.max_cells: 400,000 cells" in err, err
    assert "the seeds axis multiplies by 100,000" in err and "--yes" in err
    assert not out.exists(), "refused before anything was written"


@pytest.mark.parametrize("command", [["validate"], ["sweep", "--dry-run"]])
def test_validate_and_dry_run_summarise_a_large_grid_and_list_it_on_request(tmp_path, capsys, command):
    exp = tiny_experiment(
        tmp_path,
        "wide",
        grid={"settings": ["video", "audio"], "seeds": list(range(30))},
        resources={"max_cells": 50},
    )
    out = str(tmp_path / "out")
    assert main([command[0], str(exp), "--output", out, *command[1:]]) == ExitCode.OK
    said = capsys.readouterr().out
    assert "1 dataset x 2 settings x 1 fold x 30 seeds" in said, said
    assert "... 54 more cells (--list shows every one)" in said
    assert said.count("-s29-") == 1 and said.count("-s0-") == 1  # the first three, the last three
    if command == ["validate"]:
        assert "warning: a sweep refuses more than 50 cells without --yes (the seeds axis" in said
    assert main([command[0], str(exp), "--output", out, *command[1:], "--list"]) == ExitCode.OK
    listed = capsys.readouterr().out
    assert all(f"-s{seed}-" in listed for seed in range(30)) and "more cells" not in listed


def test_a_grid_above_max_cells_is_refused_and_yes_lets_it_plan(tmp_path, capsys):
    exp = tiny_experiment(
        tmp_path,
        "capped",
        grid={"settings": ["video", "audio"], "seeds": [0, 1, 2]},
        resources={"max_cells": 4},
    )
    out = str(tmp_path / "out")
    assert main(["sweep", str(exp), "--output", out]) == ExitCode.USAGE
    assert "6 cells (1 dataset x 2 settings x 1 fold x 3 seeds) is above 4" in capsys.readouterr().err
    from harness.experiment.loading import load_experiment
    from harness.plan.sweep_plan import plan_run

    plan = plan_run(load_experiment(exp), out, kind="train", accept_stale=False, echo=print, yes=True)
    assert len(plan.todo) == 6
