"""The conventions a researcher reaches for first: --version, --set overrides, every error at once,
defaults in --help, `status --watch EXP`, one meaning per flag, and a plain "nothing here"."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
import yaml
from sweep_helpers import tiny_experiment

from harness.cli.main import build_parser, main
from harness.experiment.loading import load_experiment
from harness.plan.cells import expand_cells
from harness.plan.provenance import git_commit
from mmder.versions import package_version


def test_version_names_the_package_and_the_commit():
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli.main", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith(f"mmder {package_version()}")
    commit = git_commit()
    if commit != "unknown":  # a clone: the commit is shown (with +dirty for local changes)
        assert f"(git {commit})" in done.stdout


def test_an_override_keys_cells_exactly_as_the_same_edit_in_the_file(tmp_path):
    path = tiny_experiment(tmp_path, "ov")
    data = yaml.safe_load(path.read_text())
    data["training"]["epochs"] = 3
    data["grid"]["seeds"] = [0, 1]
    data["datasets"][0]["folds"] = [1]
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data, sort_keys=False))
    overrides = ["training.epochs=3", "grid.seeds=[0, 1]", "datasets[0].folds=[1]"]
    overridden = load_experiment(path, overrides)
    assert [c.key for c in expand_cells(overridden)] == [c.key for c in expand_cells(load_experiment(edited))]
    assert {c.key for c in expand_cells(overridden)}.isdisjoint(
        c.key for c in expand_cells(load_experiment(path))
    )
    # the dotted spelling of a list index means the same
    assert load_experiment(path, ["datasets.0.folds=[1]"]).datasets[0].folds == [1]
    assert overridden.overrides == overrides


def test_validate_shows_the_overrides_and_names_a_bad_one(tmp_path, capsys):
    path = tiny_experiment(tmp_path, "ov")
    assert main(["validate", str(path), "--output", str(tmp_path / "o"), "--set", "training.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "--set training.epochs=3" in out and "15 epochs" not in out and "3 epochs" in out
    assert main(["validate", str(path), "--set", "training.epochs=zero"]) == 2
    err = capsys.readouterr().err
    assert "--set training.epochs=zero: training.epochs:" in err, err
    assert main(["validate", str(path), "--set", "training.epochs"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_every_validation_error_is_reported_at_once_with_its_line(tmp_path, capsys):
    path = tiny_experiment(tmp_path, "bad")
    text = path.read_text().replace("epochs: 2", "epochs: 0").replace("size: micro", "size: giant")
    path.write_text(text.replace("batch_size: 4", "batch_size: 4\n  bogus: 1"))
    assert main(["validate", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmder: error:")]
    assert len(errors) == 3, errors
    lines = path.read_text().splitlines()
    for key in ("training.epochs", "model.size", "training.bogus"):
        (line,) = [e for e in errors if f": {key}: " in e]
        number = int(re.search(rf"{re.escape(str(path))}:(\d+): ", line).group(1))
        assert lines[number - 1].strip().startswith(key.rsplit(".", 1)[1] + ":"), (line, lines[number - 1])


def test_help_shows_defaults_and_status_watch_takes_the_experiment_after_it(capsys):
    parser, _ = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["status", "--help"])
    assert "(default: 5.0)" in capsys.readouterr().out
    args = parser.parse_args(["status", "--watch", "experiments/quickstart.yaml"])
    assert (args.watch, args.experiment, args.every) == (True, "experiments/quickstart.yaml", 5.0)


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((name, sub))
                found.extend((f"{name} {n}", s) for n, s in _subparsers(sub))
    return found


def test_output_means_the_sweep_output_folder_in_every_command():
    parser, _ = build_parser()
    with_output = []
    for name, sub in _subparsers(parser):
        for action in sub._actions:
            if "--output" in action.option_strings:
                with_output.append(name)
                assert "sweep's output folder" in action.help, (name, action.help)
    assert {"sweep", "status", "leaderboard", "compare", "report", "validate", "bench overhead"} <= set(
        with_output
    )


@pytest.mark.parametrize("command", ["status", "leaderboard", "compare", "report"])
def test_reading_results_where_there_are_none_says_where_it_looked(tmp_path, monkeypatch, capsys, command):
    path = tiny_experiment(tmp_path, "elsewhere")
    monkeypatch.chdir(tmp_path)
    args = [command, str(path), *(["video", "FSLF"] if command == "compare" else [])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"no sweep output in {tmp_path / 'runs' / 'elsewhere'}" in err, err
    assert "--output" in err


def test_bash_completion_completes_commands_and_flags(tmp_path):
    script = tmp_path / "mmder.bash"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli.main", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    )
    script.write_text(done.stdout)
    probe = (
        f"source {script}\n"
        'COMP_WORDS=(mmder sta); COMP_CWORD=1; _shtab_mmder mmder sta mmder; echo "${COMPREPLY[@]}"\n'
        'COMP_WORDS=(mmder sweep --dr); COMP_CWORD=2; _shtab_mmder mmder --dr sweep; echo "${COMPREPLY[@]}"\n'
    )
    lines = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )
    assert lines[:2] == ["status", "--dry-run"], lines
