"""Recipes: names, presets, and the linear probe (frozen encoder, cached features) through ``fit``."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from blob_clips import Blobs

from mmder.config import TrainingConfig
from mmder.models.classifier import build_model
from mmder.presets import PRESETS, preset
from mmder.train.engine import build_optimizer
from mmder.train.loop import fit
from mmder.train.optim import count_trainable, trainable_parameters
from mmder.train.recipes import ProbeHead, parse_recipe, pooled_tokens

ENCODER_PREFIXES = ("patch_embed.", "blocks.")
HEAD_PREFIXES = ("fc_norm.", "head.")


class RedrawnBlobs(Blobs):
    """Items change with the epoch (like RFAS redraws): features must not be cached."""

    redraw_each_epoch = True

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int):
        x, y, idx = super().__getitem__(i)
        return x.roll(self.epoch, dims=-1), y, idx


def model(head_dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("micro", 2, image_size=16, num_frames=4, head_dropout=head_dropout)


def probe_cfg(**kw) -> TrainingConfig:
    base = dict(recipe="linear_probe", epochs=3, batch_size=8, eval_batch_size=16, lr=1e-2, grad_clip=None)
    return TrainingConfig(**{**base, **kw})


def test_parse_recipe_names_and_errors():
    assert parse_recipe("finetune").mode == "finetune" and not parse_recipe("finetune").constant_lr
    lp = parse_recipe("linear_probe")
    assert lp.frozen_encoder and lp.constant_lr and not lp.augment and lp.mode == "linear_probe"
    part = parse_recipe("partial:3")
    assert part.trained_blocks == 3 and part.augment and not part.frozen_encoder
    for bad in ("partial:x", "partial:-1", "probe", ""):
        with pytest.raises(ValueError):
            parse_recipe(bad)


def test_presets_follow_the_paper_and_fit_train_config():
    lp = preset("linear_probe")["training"]
    assert (lp["lr"], lp["weight_decay"], lp["epochs"], lp["batch_size"]) == (1e-2, 0.05, 100, 16)
    ft = preset("finetune", total_batch=64)
    assert ft["training"]["lr"] == pytest.approx(5e-4 * 64 / 256)
    assert ft["model"] == {"drop_path": 0.2, "head_dropout": 0.5}
    assert preset("partial:4")["training"]["recipe"] == "partial:4"
    assert PRESETS["finetune"]["training"]["lr"] == 5e-4, "preset() returns a copy"
    for name in ("linear_probe", "finetune"):
        cfg = TrainingConfig.model_validate(preset(name)["training"])
        assert cfg.recipe == name
    assert TrainingConfig().recipe == "finetune" and TrainingConfig().mixup == TrainingConfig().cutmix == 0.0


def test_linear_probe_of_large_trains_9223_parameters_layernorm_and_linear_only():
    with torch.device("meta"):
        large = build_model("large", 7)
    params = trainable_parameters(large, "linear_probe")
    assert sum(p.numel() for p in params) == count_trainable(large) == 9_223
    trained = {
        n: type(m) for n, m in large.named_modules() if any(p.requires_grad for p in m.parameters(False))
    }
    assert trained == {"fc_norm": torch.nn.LayerNorm, "head": torch.nn.Linear}
    head = ProbeHead(large)
    assert sum(p.numel() for p in head.parameters()) == 9_223
    groups = build_optimizer(head, TrainingConfig(layer_decay=0.75)).param_groups
    assert {g["lr_scale"] for g in groups} == {1.0}, "fc_norm and head sit at the top layer"


def test_pooled_tokens_are_taken_before_fc_norm():
    m = model().eval()
    x = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        assert torch.allclose(m.fc_norm(pooled_tokens(m, x)), m.forward_features(x))
        assert torch.allclose(ProbeHead(m)(pooled_tokens(m, x)), m(x))


def test_linear_probe_refuses_augmentation():
    with pytest.raises(ValueError, match="augmentation"):
        fit(model(), Blobs(8, 0), Blobs(4, 1), 2, probe_cfg(mixup=0.8), report=lambda r, d: None)


@pytest.mark.slow
def test_linear_probe_fit_keeps_the_encoder_bit_identical_and_trains_the_head():
    m = model()
    before = copy.deepcopy(m.state_dict())
    seen = []

    def keep(result, checkpoint_dir):
        assert checkpoint_dir is not None and any(Path(checkpoint_dir).rglob("*.pt"))
        seen.append(result)

    last = fit(m, Blobs(32, 0), Blobs(16, 1), 2, probe_cfg(), report=keep)
    assert [r.epoch for r in seen] == [0, 1, 2]
    assert all(r.lr == 1e-2 for r in seen), "no schedule: constant lr"
    assert last.war == 1.0 and sorted(i for i, _, _ in last.predictions) == list(range(16))
    after = m.state_dict()
    for name, value in after.items():
        if name.startswith(ENCODER_PREFIXES):
            assert torch.equal(value, before[name]), f"{name} changed"
        else:
            assert name.startswith(HEAD_PREFIXES)
            assert not torch.equal(value, before[name]), f"{name} did not train"
    assert all(p.requires_grad == n.startswith(HEAD_PREFIXES) for n, p in m.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("dataset", [Blobs, RedrawnBlobs])
def test_cached_features_train_exactly_like_running_the_encoder_every_epoch(dataset):
    runs = []
    for cache in (True, False):
        m = model(head_dropout=0.3)  # dropout: the head must see the same random stream too
        results = []
        last = fit(
            m,
            dataset(32, 0),
            dataset(16, 1),
            2,
            probe_cfg(cache_features=cache),
            report=lambda r, d, results=results: results.append(r),
        )
        runs.append((m, last, results))
    (m1, last1, res1), (m2, last2, res2) = runs
    for name, value in m1.state_dict().items():
        assert torch.allclose(value, m2.state_dict()[name], atol=1e-5, rtol=0), name
    assert last1.predictions == last2.predictions
    for a, b in zip(res1, res2, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-5)
        assert a.test_loss == pytest.approx(b.test_loss, abs=1e-5)


@pytest.mark.slow
def test_linear_probe_checkpoints_hold_the_head_and_resume_after_the_saved_epoch(tmp_path: Path):
    saved: dict[int, Path] = {}

    def keep(result, checkpoint_dir):
        saved[result.epoch] = Path(shutil.copytree(checkpoint_dir, tmp_path / f"epoch{result.epoch}"))

    straight = model()
    last = fit(straight, Blobs(32, 0), Blobs(16, 1), 2, probe_cfg(), report=keep)
    states = torch.load(next(saved[0].rglob("*model_states.pt")), map_location="cpu", weights_only=False)
    assert set(states["module"]) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}

    resumed, again = [], model()
    out = fit(
        again,
        Blobs(32, 0),
        Blobs(16, 1),
        2,
        probe_cfg(),
        report=lambda r, d: resumed.append(r),
        resume_from=str(saved[0]),
    )
    assert [r.epoch for r in resumed] == [1, 2] and out.resumed_from_epoch == 0
    for name, value in straight.state_dict().items():
        assert torch.allclose(value, again.state_dict()[name], atol=1e-6, rtol=0), name
    assert out.predictions == last.predictions

    done = []
    final = fit(
        model(),
        Blobs(32, 0),
        Blobs(16, 1),
        2,
        probe_cfg(),
        report=lambda r, d: done.append((r, d)),
        resume_from=str(saved[2]),
    )
    assert len(done) == 1 and done[0][1] is None, "a finished checkpoint only re-evaluates"
    assert final.predictions == last.predictions


def _two_rank_worker(rank: int, port: int, out_dir: str) -> None:
    """One of two gloo ranks: a cached and an uncached probe, then what rank 0 saw, to a file."""
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    outputs = {}
    for cache in (True, False):
        m = model(head_dropout=0.3)
        last = fit(
            m,
            Blobs(21, 0),
            Blobs(11, 1),
            2,
            probe_cfg(cache_features=cache, batch_size=4),
            report=lambda r, d: None,
        )
        outputs[cache] = ({k: v.clone() for k, v in m.state_dict().items()}, last.predictions)
    from mmder.train.probe import extract_features

    data = Blobs(21, 0)
    m = model().eval()
    cached = extract_features(
        m, data, probe_cfg(eval_batch_size=4), torch.device("cpu"), torch.float32, epoch=0
    )
    assert cached.indices.tolist() == list(range(21)) and torch.equal(cached.labels, data.y)
    assert torch.allclose(cached.features, pooled_tokens(m, data.x), atol=1e-5, rtol=0)
    torch.save(outputs, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_ranks_gather_features_in_dataset_order(tmp_path: Path):
    """Odd fold sizes over two ranks: the gathered cache trains exactly as the encoder run every epoch."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_rank_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for outputs in ranks:
        (cached, pred_c), (uncached, pred_u) = outputs[True], outputs[False]
        assert pred_c == pred_u and sorted(i for i, _, _ in pred_c) == list(range(11))
        for name, value in cached.items():
            assert torch.allclose(value, uncached[name], atol=1e-5, rtol=0), name
    for name, value in ranks[0][True][0].items():
        assert torch.equal(value, ranks[1][True][0][name]), f"ranks disagree on {name}"
