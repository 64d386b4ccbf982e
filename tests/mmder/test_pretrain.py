"""MAE pre-training loop: the loss falls, resume continues after the saved epoch, the encoder exports."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from mmder.models.checkpoints import load_pretrained
from mmder.models.classifier import build_model
from mmder.models.mae import build_pretrainer
from mmder.train.pretrain import PretrainConfig, export_encoder, pretrain

SIZE, FRAMES, PATCH = 32, 4, 8  # 2 x 4 x 4 = 32 tubelets


class DriftingPattern(Dataset):
    """A fixed smooth pattern drifting one pixel per frame, tinted per clip by a positive colour.

    Random but structured: after VideoMAE's per-tubelet normalisation a masked tubelet's target depends
    only on where it is, so a micro model learns it in a few dozen steps, while predicting zero (or
    the untrained model) scores about 1.
    """

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        colour = torch.rand(n, 3, generator=g) * 0.8 + 0.2
        yy = torch.arange(SIZE, dtype=torch.float32).view(-1, 1)
        xx = torch.arange(SIZE, dtype=torch.float32).view(1, -1)
        pattern = torch.sin(0.7 * xx + 0.3 * yy) + torch.cos(0.45 * yy)  # (H, W)
        frames = torch.stack([pattern.roll(t, dims=1) for t in range(FRAMES)])  # (T, H, W)
        self.x = colour.view(n, 3, 1, 1, 1) * frames

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], -1, i  # unlabeled: the label is ignored


def pretrainer() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_pretrainer("micro", image_size=SIZE, num_frames=FRAMES, patch_size=PATCH)


def cfg(**kw) -> PretrainConfig:
    base = dict(epochs=8, batch_size=4, lr=5e-3, min_lr=1e-4, warmup_epochs=1)  # mask ratio 0.9
    return PretrainConfig(**{**base, **kw})


def test_config_defaults_follow_videomae(monkeypatch):
    c = PretrainConfig()
    assert (c.mask_ratio, c.weight_decay, c.lr) == (0.9, 0.05, None)
    assert c.peak_lr(world_size=4) == pytest.approx(1.5e-4 * 8 * 4 / 256)
    assert PretrainConfig(lr=1e-3).peak_lr(8) == 1e-3
    # auto precision: bf16 where a GPU is visible, fp32 on a CPU-only machine; a named one is kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert PretrainConfig(precision="auto").resolved_precision() == "bf16"
    assert PretrainConfig(precision="fp16").resolved_precision() == "fp16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert PretrainConfig(precision="auto").resolved_precision() == "fp32"


def test_export_encoder_loads_exactly_into_a_classifier(tmp_path: Path):
    pre = pretrainer()
    with torch.no_grad():  # move away from the init so equality means something
        for p in pre.parameters():
            p.add_(torch.randn_like(p))
    path = export_encoder(pre, tmp_path / "enc" / "encoder.pth")
    clf = build_model("micro", 7, image_size=SIZE, num_frames=FRAMES, patch_size=PATCH)
    report = load_pretrained(clf, path)
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert not report.unexpected
    exported = pre.encoder_state_dict()
    own = clf.state_dict()
    assert set(exported) == {k for k in own if not k.startswith(("fc_norm.", "head."))}
    for name, value in exported.items():
        assert torch.equal(own[name], value), name


@pytest.mark.slow
def test_loss_falls_and_resume_continues_after_the_saved_epoch(tmp_path: Path):
    data = DriftingPattern(32, 0)
    saved: dict[int, Path] = {}
    results = []

    def keep(result, checkpoint_dir):
        results.append(result)
        saved[result.epoch] = Path(shutil.copytree(checkpoint_dir, tmp_path / f"epoch{result.epoch}"))

    straight = pretrainer()
    last = pretrain(straight, data, cfg(), report=keep)
    losses = [r.loss for r in results]
    assert [r.epoch for r in results] == list(range(8)) and last.is_last
    assert all(math.isfinite(v) for v in losses)
    assert losses[0] > 0.9 and losses[-1] < 0.5, f"no better than predicting zero: {losses}"
    assert losses[-1] < min(losses[:3]), losses

    clf = build_model("micro", 2, image_size=SIZE, num_frames=FRAMES, patch_size=PATCH)
    load_pretrained(clf, export_encoder(straight, tmp_path / "encoder.pth"))
    for name, value in straight.encoder_state_dict().items():
        assert torch.equal(clf.state_dict()[name], value), name

    resumed = []
    again = pretrainer()
    out = pretrain(again, data, cfg(), report=lambda r, d: resumed.append((r, d)), resume_from=str(saved[2]))
    assert [r.epoch for r, _ in resumed] == [3, 4, 5, 6, 7] and out.resumed_from_epoch == 2
    assert all(d is not None for _, d in resumed), "a checkpoint every epoch"
    assert [r.loss for r, _ in resumed] == pytest.approx(losses[3:], rel=1e-5), "same masks, same batches"
    for name, value in straight.state_dict().items():
        assert torch.allclose(value, again.state_dict()[name], atol=1e-6), name

    done = []
    pretrain(pretrainer(), data, cfg(), report=lambda r, d: done.append(d), resume_from=str(saved[7]))
    assert done == [None], "a finished checkpoint trains nothing"


@pytest.mark.slow
def test_perturbed_pretraining_sees_other_clips_and_a_resume_replays_the_same_perturbations(tmp_path: Path):
    data = DriftingPattern(16, 0)
    plain = cfg(epochs=3)
    perturbed = cfg(epochs=3, freq_warp=0.2, time_shift=1)
    assert set(plain.model_dump()) == set(perturbed.model_dump())
    runs: dict[str, list[float]] = {}
    saved: dict[int, Path] = {}

    def keep(result, checkpoint_dir):
        runs.setdefault("perturbed", []).append(result.loss)
        saved[result.epoch] = Path(shutil.copytree(checkpoint_dir, tmp_path / f"epoch{result.epoch}"))

    pretrain(pretrainer(), data, plain, report=lambda r, d: runs.setdefault("plain", []).append(r.loss))
    pretrain(pretrainer(), data, perturbed, report=keep)
    assert runs["perturbed"][0] != pytest.approx(runs["plain"][0], rel=1e-4), "the MAE saw the same clips"

    again: list[float] = []
    resume = str(saved[0])
    pretrain(pretrainer(), data, perturbed, report=lambda r, d: again.append(r.loss), resume_from=resume)
    assert again == pytest.approx(runs["perturbed"][1:], rel=1e-5), "the same perturbations after a resume"
