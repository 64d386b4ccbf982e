"""The protocol line says how the encoder started and over how many seeds (issue 33, item 3)."""

from __future__ import annotations

import pytest

from harness.results.board_protocol import DatasetInfo, encoder_start, protocol_note


@pytest.mark.parametrize(
    ("pretrained", "training", "said"),
    [
        (None, "fine-tuned", "trained from scratch"),
        (None, "frozen", "frozen encoder from scratch (random)"),
        ("mae", "fine-tuned", "fine-tuned, MAE pre-trained in this sweep"),
        ("mae", "frozen", "frozen encoder, MAE pre-trained in this sweep"),
        ("/models/videomae_k400.pth", "fine-tuned", "fine-tuned from checkpoint videomae_k400.pth"),
        ("ckpt/videomae_k400.pth", "frozen", "frozen encoder from checkpoint videomae_k400.pth"),
    ],
)
def test_the_protocol_line_says_how_the_encoder_started(pretrained, training, said):
    info = DatasetInfo("synthetic", 6, 2, training, encoder=encoder_start(pretrained), seeds=1)
    line = protocol_note("synthetic", info)
    assert line == f"synthetic  (synthetic, 6 classes, 2 folds, {said}, 1 seed)"
    if pretrained is None:
        assert "fine-tuned" not in line  # a model trained from random weights is not fine-tuned


def test_the_protocol_line_counts_seeds_and_folds():
    info = DatasetInfo("ravdess", 8, 1, "fine-tuned", encoder=encoder_start("mae"), seeds=3)
    assert (
        "(ravdess, 8 classes, 1 fold, fine-tuned, MAE pre-trained in this sweep, 3 seeds)"
        in protocol_note("ds", info)
    )
    unknown = DatasetInfo("ravdess", 8, 3, "fine-tuned")  # a hand-made info: only what it knows
    assert protocol_note("ds", unknown) == "ds  (ravdess, 8 classes, 3 folds, fine-tuned)"


@pytest.mark.parametrize(
    ("experiment", "said"),
    [
        ("quickstart", "trained from scratch, 1 seed"),
        ("quickstart-mae", "fine-tuned, MAE pre-trained in this sweep, 1 seed"),
        ("ravdess-audio", "fine-tuned, MAE pre-trained in this sweep, 3 seeds"),
        ("paper", "frozen encoder from checkpoint videomae_vit_l_k400_finetuned.pth, 1 seed"),
    ],
)
def test_shipped_experiments_say_how_their_encoder_started(experiment, said, tmp_path):
    from pathlib import Path

    from harness.experiment.loading import load_experiment
    from harness.results.leaderboard import collect_runs

    root = Path(__file__).resolve().parents[2]
    exp = collect_runs(load_experiment(root / "experiments" / f"{experiment}.yaml"), tmp_path)
    for name, info in exp.datasets.items():
        assert said in protocol_note(name, info)
