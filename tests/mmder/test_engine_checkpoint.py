"""Per-rank checkpoint manifests: what DeepSpeed writes per ZeRO stage, and what counts as complete."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmder.train.checkpoint_files import (
    checkpoint_complete,
    checkpoint_epoch,
    checkpoint_problems,
    expected_files,
    manifest_name,
    write_manifest,
)
from mmder.train.engine import CHECKPOINT_TAG, engine_config, epoch_checkpoint, silence_deepspeed_cpu_build

STAGES = (0, 1, 2, 3)


def fake_checkpoint(path: Path, *, world: int, stage: int, epoch: int = 0, bf16: bool = False) -> Path:
    """A merged checkpoint folder as Ray leaves it, with the files DeepSpeed would write (no DeepSpeed)."""
    for rank in range(world):
        part = path.parent / f"{path.name}.rank{rank}"
        for name in expected_files(stage, rank, tag=CHECKPOINT_TAG, bf16=bf16):
            (part / name).parent.mkdir(parents=True, exist_ok=True)
            (part / name).write_text(CHECKPOINT_TAG if name == "latest" else f"rank {rank} " * 50)
        part.mkdir(parents=True, exist_ok=True)
        write_manifest(
            part, rank=rank, world_size=world, epoch=epoch, zero_stage=stage, tag=CHECKPOINT_TAG, bf16=bf16
        )
        shutil.copytree(part, path, dirs_exist_ok=True)
        shutil.rmtree(part)
    return path


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("world", [1, 2])
def test_a_whole_checkpoint_is_complete_for_its_own_world_size_only(tmp_path: Path, stage: int, world: int):
    path = fake_checkpoint(tmp_path / "checkpoint_000000", world=world, stage=stage, epoch=4)
    assert checkpoint_problems(path, world) == []
    assert checkpoint_epoch(path, world) == 4
    assert not checkpoint_complete(path, 3 - world), (
        "ZeRO shards are per rank: another world size can't load it"
    )


def test_a_file_cut_in_half_or_missing_makes_it_incomplete(tmp_path: Path):
    path = fake_checkpoint(tmp_path / "c", world=2, stage=3)
    shard = path / CHECKPOINT_TAG / "zero_pp_rank_1_mp_rank_00_model_states.pt"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert any("not" in p and "bytes" in p for p in checkpoint_problems(path, 2))
    shard.unlink()
    assert any("missing" in p for p in checkpoint_problems(path, 2))
    assert checkpoint_epoch(path, 2) is None


def test_a_missing_torn_or_foreign_manifest_makes_it_incomplete(tmp_path: Path):
    path = fake_checkpoint(tmp_path / "c", world=2, stage=2)
    manifest = path / manifest_name(1, 2)
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    assert not checkpoint_complete(path, 2)
    manifest.unlink()
    assert "rank 1" in checkpoint_problems(path, 2)[0]
    other = json.loads(text) | {"rank": 0}  # rank 0's manifest under rank 1's name
    manifest.write_text(json.dumps(other))
    assert not checkpoint_complete(path, 2)


def test_ranks_must_agree_and_deepspeeds_names_must_be_there(tmp_path: Path):
    path = fake_checkpoint(tmp_path / "c", world=2, stage=2, epoch=3)
    manifest = path / manifest_name(1, 2)
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(data | {"epoch": 2}))
    assert any("disagree on epoch" in p for p in checkpoint_problems(path, 2))

    # A manifest that lists no shard (a save that wrote nothing) is caught by the stage's file names.
    manifest.write_text(json.dumps(data | {"files": {}}))
    assert any("zero_pp_rank_1" in p for p in checkpoint_problems(path, 2))

    manifest.write_text(json.dumps(data))
    (path / "latest").write_text("other")  # the tag's size, another tag
    assert not checkpoint_complete(path, 2)


def test_the_expected_names_follow_the_stage_and_precision():
    assert expected_files(0, 1, tag="t", bf16=False) == set()
    assert expected_files(2, 1, tag="t", bf16=True) == {"t/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"}
    assert expected_files(3, 0, tag="t", bf16=False) == {
        "latest",
        "t/zero_pp_rank_0_mp_rank_00_model_states.pt",
        "t/zero_pp_rank_0_mp_rank_00_optim_states.pt",
    }


# --- real DeepSpeed engines ---------------------------------------------------------------------------


def tiny_engine(stage: int, precision: str = "fp32"):
    """A DeepSpeed engine over a two-layer net after one step (so the optimizer has state)."""
    import deepspeed

    silence_deepspeed_cpu_build()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    config = engine_config(batch_size=2, zero_stage=stage, precision=precision, grad_clip=None)
    engine, *_ = deepspeed.initialize(model=net, optimizer=optimizer, config=config)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    x = torch.randn(2, 8, dtype=dtype)
    engine.backward(engine(x).float().pow(2).mean())
    engine.step()
    return engine


def save_like_ray(engine, epoch: int, destination: Path) -> dict[str, int]:
    """Every rank saves into its own temp folder and copies it into ``destination`` (Ray's merge)."""
    with epoch_checkpoint(engine, epoch) as folder:
        mine = json.loads((Path(folder) / manifest_name(dist.get_rank(), dist.get_world_size())).read_text())
        shutil.copytree(folder, destination, dirs_exist_ok=True)
    return mine["files"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(rank: int, port: int, out: str, precision: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    dist.init_process_group("gloo")
    written = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # epoch_checkpoint warns on unexpected names
        for stage in STAGES:
            written[stage] = sorted(
                save_like_ray(tiny_engine(stage, precision), 0, Path(out) / f"stage{stage}")
            )
            dist.barrier()
    Path(out, f"rank{rank}.json").write_text(json.dumps(written))
    dist.barrier()
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: gloo's C++ threads freed during finalisation can abort
    # the process (SIGABRT, 'terminate called without an active exception') after every check passed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_two_ranks(target, *args) -> None:
    """Two gloo processes running ``target(rank, port, *args)``; fails if either fails."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=target, args=(rank, port, *args)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0, 0]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_deepspeed_writes_the_expected_files_per_stage_on_one_rank(tmp_path: Path, precision: str):
    from mmder.train.engine import ensure_process_group

    ensure_process_group("gloo")
    for stage in STAGES:
        dest = tmp_path / f"stage{stage}"
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            files = save_like_ray(tiny_engine(stage, precision), 7, dest)
        assert expected_files(stage, 0, tag=CHECKPOINT_TAG, bf16=precision == "bf16") <= set(files)
        # what a resume needs and nothing else: not DeepSpeed's copies of its conversion scripts
        assert not {"zero_to_fp32.py", "zero_to_torch.py"} & set(files)
        assert not list(dest.glob("zero_to_*.py"))
        assert checkpoint_problems(dest, 1) == []
        assert checkpoint_epoch(dest, 1) == 7


@pytest.mark.slow
def test_each_of_two_ranks_records_only_its_own_files_and_the_merge_is_complete(tmp_path: Path):
    run_two_ranks(_two_ranks, str(tmp_path), "fp32")
    written = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for stage in STAGES:
        dest = tmp_path / f"stage{stage}"
        for rank in range(2):
            files = set(written[rank][str(stage)])
            assert expected_files(stage, rank, tag=CHECKPOINT_TAG, bf16=False) <= files
            other = 1 - rank
            assert not any(f"zero_pp_rank_{other}_" in f for f in files), "another rank's shard"
        assert set(written[1][str(stage)]).isdisjoint(written[0][str(stage)])
        if stage == 0:
            assert written[1]["0"] == [], "ZeRO-0: rank 1 writes nothing"
        assert checkpoint_problems(dest, 2) == []
        (dest / manifest_name(1, 2)).unlink()  # (c) one rank's manifest lost -> incomplete
        assert not checkpoint_complete(dest, 2)
