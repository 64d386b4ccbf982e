"""`mmder bench fit`: one cell of an experiment through fit without Ray, then resumed from a checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import main

EXPERIMENT = """
name: fit-smoke
datasets:
  - corpus: synthetic
    name: synthetic
    synthetic: {clips_per_class: 2, speakers: 4, seed: 0}
    protocol: {kind: speaker_kfold, folds: 2}
grid: {settings: [FSLF], seeds: [0]}
preprocess: {image_size: 32, face: none}
model: {size: micro}
training: {epochs: 3, batch_size: 8, lr: 3.0e-3, warmup_epochs: 0, zero_stage: 2}
"""


@pytest.mark.slow
def test_bench_fit_trains_a_cell_and_the_resumed_run_continues_from_the_checkpoint(tmp_path: Path):
    experiment = tmp_path / "fit.yaml"
    experiment.write_text(EXPERIMENT)
    out = tmp_path / "out"
    code = main(["bench", "fit", str(experiment), "--setting", "FSLF", "--workdir", str(out)])
    figures = json.loads((out / "figures.json").read_text())
    assert code == 0
    assert figures["loss_fell"] and len(figures["train_losses"]) == 3
    assert figures["resumed_epochs"] == [1, 2] and figures["resumed_from_epoch"] == 0
    # on a CPU the resumed run is the uninterrupted one, to the last bit
    assert figures["resumed_last_train_loss"] == figures["uninterrupted_last_train_loss"]
    assert figures["resumed_last_war"] == figures["uninterrupted_last_war"]
    assert sorted(p.name for p in out.glob("epoch-*")) == ["epoch-0", "epoch-1", "epoch-2"]


def test_reading_a_prepared_cache_needs_no_pyav():
    """A GPU machine without PyAV can train from a cache prepared elsewhere."""
    code = (
        "import sys; sys.modules['av'] = None\n"
        "from mmder.data.cache import ClipCache\n"
        "from mmder.data.dataset import FusedClipDataset\n"
        "import harness.worker.cell_data, harness.bench.fit\n"
        "from mmder.data import decode\n"
        "try:\n"
        "    decode.read_audio('missing.wav')\n"
        "except ImportError as exc:\n"
        "    print(exc.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "av", "decoding a file still needs PyAV, and says so"


def test_bench_fit_refuses_a_cell_the_experiment_lacks_and_a_run_with_nothing_to_resume(tmp_path, capsys):
    experiment = tmp_path / "fit.yaml"
    experiment.write_text(EXPERIMENT)
    out = str(tmp_path / "out")
    assert main(["bench", "fit", str(experiment), "--setting", "CFAS", "--workdir", out]) == 2
    assert "'CFAS'" in capsys.readouterr().err
    assert (
        main(["bench", "fit", str(experiment), "--setting", "FSLF", "--epochs", "1", "--workdir", out]) == 2
    )
    assert "resume_after" in capsys.readouterr().err
    assert not (tmp_path / "out" / "epoch-0").exists(), "refused before any training"
