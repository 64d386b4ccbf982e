"""The training loop without Ray: a real DeepSpeed engine on CPU (gloo, one process)."""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import pytest
import torch
from blob_clips import Blobs
from pydantic import ValidationError

from mmder.config import TrainingConfig
from mmder.models.classifier import build_model
from mmder.train.engine import lr_factor
from mmder.train.loop import _mixer, fit


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
    cfg = TrainingConfig(epochs=3, batch_size=8, eval_batch_size=16, lr=3e-3, warmup_epochs=0, zero_stage=2)
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


def _expected_lr(cfg: TrainingConfig, group_name: str, step: int, steps_per_epoch: int, depth: int) -> float:
    """VideoMAE's layer-wise decay: lr_group = lr * schedule(step) * layer_decay ** (L + 1 - layer_id)."""
    lid = int(group_name.split("_")[1])  # "layer_<id>_<decay|no_decay>"
    factor = lr_factor(
        step,
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
        min_ratio=cfg.min_lr / cfg.lr,
    )
    return cfg.lr * factor * cfg.layer_decay ** (depth + 1 - lid)


def test_new_fields_default_to_the_old_behaviour():
    cfg = TrainingConfig()
    assert (cfg.recipe, cfg.mixup, cfg.cutmix, cfg.layer_decay) == ("finetune", 0.0, 0.0, 1.0)
    assert _mixer(cfg, 2) is None, "no mixup object, hence plain (label-smoothed) cross-entropy"
    with pytest.raises(ValidationError, match="unknown"):
        TrainingConfig.model_validate({"recipe": "partial:1", "mixup": 0.8, "unknown": 1})


@pytest.mark.slow
def test_engine_groups_follow_the_layer_decay_formula_after_every_step():
    from mmder.train.engine import build_engine

    cfg = TrainingConfig(epochs=2, batch_size=4, lr=1e-3, min_lr=1e-5, warmup_epochs=1, layer_decay=0.75)
    m = model()
    engine, optimizer, _ = build_engine(m, cfg, steps_per_epoch=3)
    names = {g["group_name"] for g in optimizer.param_groups}
    assert {int(n.split("_")[1]) for n in names} == {0, 1, 2, 3}
    data = Blobs(4, 0)
    x = data.x.to(engine.device)
    y = data.y.to(engine.device)
    for step in range(1, 6):
        loss = torch.nn.functional.cross_entropy(engine(x), y)
        engine.backward(loss)
        engine.step()
        for g in optimizer.param_groups:  # the engine's (ZeRO) optimizer's groups, as AdamW reads them
            want = _expected_lr(cfg, g["group_name"], step, 3, m.depth)
            assert g["lr"] == pytest.approx(want, rel=1e-9), (step, g["group_name"])


@pytest.mark.slow
def test_fit_finetune_with_layer_decay_mixup_and_cutmix_reports_group_lrs():
    cfg = TrainingConfig(
        epochs=2,
        batch_size=8,
        lr=3e-3,
        warmup_epochs=0.5,
        layer_decay=0.7,
        mixup=0.8,
        cutmix=1.0,
        label_smoothing=0.1,
    )
    results = []
    m = model()
    fit(m, Blobs(32, 0), Blobs(16, 1), 2, cfg, report=lambda r, d: results.append(r))
    assert [r.epoch for r in results] == [0, 1]
    steps = 4  # 32 clips / batch 8, one rank
    for r in results:
        assert math.isfinite(r.train_loss)
        assert set(r.group_lrs) >= {"layer_0_decay", "layer_3_no_decay"}
        for name, lr in r.group_lrs.items():
            assert lr == pytest.approx(_expected_lr(cfg, name, (r.epoch + 1) * steps, steps, m.depth)), name
        assert r.lr == pytest.approx(max(r.group_lrs.values())) == r.group_lrs["layer_3_no_decay"]


@pytest.mark.slow
def test_partial_recipe_trains_only_the_last_blocks_and_the_head():
    m = model()
    before = copy.deepcopy(m.state_dict())
    cfg = TrainingConfig(recipe="partial:1", epochs=1, batch_size=8, lr=3e-3, warmup_epochs=0)
    fit(m, Blobs(16, 0), Blobs(8, 1), 2, cfg, report=lambda r, d: None)
    after = m.state_dict()
    for name, value in after.items():
        frozen = name.startswith(("patch_embed.", "blocks.0."))
        assert torch.equal(value, before[name]) == frozen, name
