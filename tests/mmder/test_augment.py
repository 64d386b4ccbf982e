"""Video mixup / cutmix: the box is cut in H x W on every frame, targets are smoothed and mixed."""

from __future__ import annotations

import pytest
import torch

from mmder.train.augment import VideoMixup, smooth_one_hot, soft_target_cross_entropy


def _batch(b: int = 4, t: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    # every clip constant at its own value, so each pixel tells which clip it came from
    x = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1, 1).expand(b, 3, t, size, size).clone()
    return x, torch.arange(b) % 3


def test_smooth_one_hot_matches_timm_convention():
    t = smooth_one_hot(torch.tensor([0, 2]), 4, smoothing=0.1)
    assert t.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert t[0].tolist() == pytest.approx([0.925, 0.025, 0.025, 0.025])
    assert t[1, 2] == pytest.approx(0.925)


def test_cutmix_uses_the_same_hw_box_on_every_frame_and_channel():
    x, y = _batch()
    mix = VideoMixup(3, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, seed=3)
    for _ in range(20):
        out, target = mix(x, y)
        assert torch.equal(x, _batch()[0]), "the input batch is left alone"
        from_partner = out != x  # clips i and B-1-i differ everywhere
        box = from_partner[:, 0, 0]  # (B, H, W) of the first frame and channel
        assert torch.equal(from_partner, box[:, None, None].expand_as(from_partner)), "one box for all T, C"
        assert torch.equal(out[from_partner], x.flip(0)[from_partner])
        area = box[0].float().mean().item()
        lam = 1.0 - area  # corrected to the box actually cut
        expected = lam * smooth_one_hot(y, 3) + (1 - lam) * smooth_one_hot(y.flip(0), 3)
        assert torch.allclose(target, expected)
        if 0 < area < 1:
            rows, cols = box[0].any(1), box[0].any(0)
            assert box[0].sum() == rows.sum() * cols.sum(), "a rectangle"


def test_mixup_blends_with_the_reversed_batch_and_its_labels():
    x, y = _batch()
    mix = VideoMixup(3, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, seed=0)
    out, target = mix(x, y)
    lam = float((out[0, 0, 0, 0, 0] - x[-1, 0, 0, 0, 0]) / (x[0, 0, 0, 0, 0] - x[-1, 0, 0, 0, 0]))
    assert 0.0 < lam < 1.0
    assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0))
    expected = lam * smooth_one_hot(y, 3, 0.1) + (1 - lam) * smooth_one_hot(y.flip(0), 3, 0.1)
    assert torch.allclose(target, expected, atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(4))


def test_switch_prob_picks_both_kinds_and_prob_zero_leaves_batches_alone():
    mix = VideoMixup(3, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, seed=1)
    kinds = {mix.draw()[1] for _ in range(50)}
    assert kinds == {True, False}
    off = VideoMixup(3, prob=0.0, label_smoothing=0.1)
    assert not off.active
    x, y = _batch()
    out, target = off(x, y)
    assert torch.equal(out, x) and torch.allclose(target, smooth_one_hot(y, 3, 0.1))
    assert not VideoMixup(3, mixup_alpha=0.0, cutmix_alpha=0.0).active


def test_reseed_replays_the_stream_and_odd_batches_work():
    x, y = _batch(b=5)
    a = VideoMixup(3, seed=0)
    a.reseed([7, 0, 2])
    first = [a(x, y) for _ in range(3)]
    a.reseed([7, 0, 2])
    again = [a(x, y) for _ in range(3)]
    for (x1, t1), (x2, t2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(t1, t2)


def test_soft_target_cross_entropy_equals_hard_ce_on_one_hot():
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    hard = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
    soft = soft_target_cross_entropy(logits, smooth_one_hot(y, 4, 0.1))
    assert soft == pytest.approx(float(hard), rel=1e-6)


def test_rejects_non_video_input():
    with pytest.raises(ValueError):
        VideoMixup(3)(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
