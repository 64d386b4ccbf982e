"""Experiment files: validation names the key, keys are stable, the grid has the right shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.errors import ConfigError
from harness.spec import expand_cells, load_experiment

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
PAPER = ROOT / "experiments" / "paper.yaml"


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def quickstart() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


@pytest.mark.parametrize(
    ("edit", "key", "allowed"),
    [
        (lambda d: d["training"].update(epoch=3), "training.epoch", "epochs"),
        (lambda d: d.update(trainig={}), "trainig", "training"),
        (lambda d: d["grid"].update(settings=["video", "XFAS"]), "grid.settings", "FSLF"),
        (lambda d: d["training"].update(epochs=0), "training.epochs", "at least 1"),
        (lambda d: d["model"].update(size="giant"), "model.size", "large"),
        (lambda d: d["datasets"][0].update(corpus="nope"), "datasets[0].corpus", "synthetic"),
        (
            lambda d: d["datasets"][0]["protocol"].update(kind="nope"),
            "datasets[0].protocol.kind",
            "speaker_kfold",
        ),
        (lambda d: d["training"].update(lr="fast"), "training.lr", "number"),
        (lambda d: d["resources"].update(use_gpu="yes"), "resources.use_gpu", "true or false"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, edit, key, allowed):
    data = quickstart()
    edit(data)
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, data))
    assert err.value.key == key
    assert allowed in str(err.value)


def test_cli_exits_2_before_starting_anything(tmp_path, capsys):
    data = quickstart()
    data["grid"]["settings"] = ["CFAS", "NOPE"]
    path = write(tmp_path, data)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "grid.settings" in err and "'NOPE' is not allowed" in err and "RFAS" in err
    assert not out.exists(), "a bad config must not create output"


def test_missing_dataset_root_fails_a_real_run_but_not_a_dry_run(tmp_path, capsys):
    data = quickstart()
    data["datasets"][0].update(corpus="manifest", root=str(tmp_path / "absent"))
    path = write(tmp_path, data)
    assert main(["sweep", str(path), "--output", str(tmp_path / "out"), "--dry-run"]) == 0
    assert main(["sweep", str(path), "--output", str(tmp_path / "out")]) == 2
    assert "datasets[0].root" in capsys.readouterr().err


def test_quickstart_grid_is_settings_times_folds_with_stable_unique_keys():
    spec = load_experiment(QUICKSTART)
    cells = expand_cells(spec)
    assert len(cells) == 8 * 2
    assert len({c.key for c in cells}) == len(cells)
    assert [c.key for c in expand_cells(load_experiment(QUICKSTART))] == [c.key for c in cells]


def test_key_changes_with_what_changes_results_only(tmp_path):
    base = {c.key for c in expand_cells(load_experiment(QUICKSTART))}
    data = quickstart()
    data["resources"]["max_concurrent_trials"] = 7
    data["description"] = "other words"
    assert {c.key for c in expand_cells(load_experiment(write(tmp_path, data)))} == base
    data["training"]["lr"] = 2e-3
    assert not base & {c.key for c in expand_cells(load_experiment(write(tmp_path, data)))}


def test_paper_grid_dry_runs_without_data_gpu_or_ray(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "sweep",
            str(PAPER),
            "--dry-run",
            "--output",
            str(tmp_path / "p"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("run ")]
    # RAVDESS: the paper's single hold-out split; CREMA-D: 5 folds; IEMOCAP: 5 sessions.
    assert len(lines) == 8 * (1 + 5 + 5)
    for dataset in ("ravdess", "cremad", "iemocap"):
        assert sum(f" {dataset} / " in ln for ln in lines) == 8 * (1 if dataset == "ravdess" else 5)
    assert "88 cells: 88 to run, 0 finished" in proc.stdout
    assert not (tmp_path / "p").exists()
