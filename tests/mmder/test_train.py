"""The training loop without Ray: a real DeepSpeed engine on CPU (gloo, one process)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from mmder.model import build_model
from mmder.train import TrainConfig, fit, lr_factor


class Blobs(Dataset):
    """Two classes told apart by brightness: learnable in a couple of epochs by any model."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 3, 4, 16, 16, generator=g) * 0.3 + (self.y.float() * 2 - 1).view(
            -1, 1, 1, 1, 1
        )

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), i


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("micro", 2, image_size=16, num_frames=4)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    f = [lr_factor(s, total_steps=100, warmup_steps=10, min_ratio=0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[-1] == pytest.approx(0.01, abs=2e-3)


@pytest.mark.slow
def test_fit_learns_saves_every_epoch_and_resumes_after_the_saved_epoch(tmp_path: Path):
    cfg = TrainConfig(epochs=3, batch_size=8, eval_batch_size=16, lr=3e-3, warmup_epochs=0, zero_stage=2)
    saved: dict[int, Path] = {}
    results = []

    def keep(result, checkpoint_dir):
        results.append(result)
        saved[result.epoch] = Path(shutil.copytree(checkpoint_dir, tmp_path / f"epoch{result.epoch}"))

    last = fit(model(), Blobs(32, 0), Blobs(16, 1), 2, cfg, report=keep)
    assert [r.epoch for r in results] == [0, 1, 2]
    assert last.war == 1.0, "two brightness blobs are trivially separable"
    assert sorted(i for i, _, _ in last.predictions) == list(range(16)), "every test clip once, none twice"
    assert sum(map(sum, last.confusion)) == 16

    resumed = []
    again = fit(
        model(),
        Blobs(32, 0),
        Blobs(16, 1),
        2,
        cfg,
        report=lambda r, d: resumed.append(r),
        resume_from=str(saved[0]),
    )
    assert [r.epoch for r in resumed] == [1, 2], "epoch 0 is in the checkpoint and is not trained again"
    assert again.resumed_from_epoch == 0

    done = []
    final = fit(
        model(),
        Blobs(32, 0),
        Blobs(16, 1),
        2,
        cfg,
        report=lambda r, d: done.append((r, d)),
        resume_from=str(saved[2]),
    )
    assert len(done) == 1 and done[0][1] is None, "a finished checkpoint only re-evaluates"
    assert final.war == last.war
