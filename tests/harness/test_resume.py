"""A cell resumes from the newest complete checkpoint of any attempt, whatever Ray's snapshot says."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.worker.resume import (
    attempt_run,
    copy_checkpoint,
    discard_attempts,
    drop_older_checkpoints,
    newest_complete_checkpoint,
    prune_cell,
    resume_from,
)
from mmder.train.checkpoint_files import expected_files, listing, manifest_name, write_manifest
from mmder.train.engine import (
    CHECKPOINT_TAG,
    engine_config,
    epoch_checkpoint,
    resume_engine,
    silence_deepspeed_cpu_build,
)

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray's run snapshot: only ever torn here, never read


def fake_checkpoint(path: Path, *, epoch: int, world: int = 1, stage: int = 2) -> Path:
    """A merged checkpoint folder with DeepSpeed's file names and our manifests (no DeepSpeed)."""
    for rank in range(world):
        for name in expected_files(stage, rank, tag=CHECKPOINT_TAG, bf16=False):
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(CHECKPOINT_TAG if name == "latest" else "x" * 100)
    for rank in range(world):  # each rank lists only its own files
        mine = expected_files(stage, rank, tag=CHECKPOINT_TAG, bf16=False)
        others = {p: size for p, size in listing(path).items() if p not in mine}
        write_manifest(
            path,
            rank=rank,
            world_size=world,
            epoch=epoch,
            zero_stage=stage,
            tag=CHECKPOINT_TAG,
            bf16=False,
            before=others,
        )
    return path


def no_ray_checkpoint(monkeypatch: pytest.MonkeyPatch, checkpoint=None) -> None:
    import ray.train

    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: checkpoint)


def test_every_start_of_a_cell_is_a_fresh_run_in_the_cells_folder(tmp_path: Path):
    storage = str(tmp_path / "runs")
    assert attempt_run(storage, "cell-a") == (str(tmp_path / "runs" / "cell-a"), "attempt-000")
    assert attempt_run(storage, "cell-a") == (str(tmp_path / "runs" / "cell-a"), "attempt-001")
    assert (tmp_path / "runs" / "cell-a" / "attempt-001").is_dir()
    (tmp_path / "runs" / "cell-a" / "attempt-007").mkdir()
    assert attempt_run(storage, "cell-a")[1] == "attempt-008"
    assert attempt_run(storage, "cell-b")[1] == "attempt-000"
    # Remote storage cannot be listed: the same run every time, resumed by Ray itself.
    assert attempt_run("s3://bucket/out/", "cell-a") == ("s3://bucket/out/cell-a", "attempt-000")


def test_the_newest_complete_checkpoint_of_any_attempt_wins(tmp_path: Path):
    cell = tmp_path / "cell"
    fake_checkpoint(cell / "attempt-000" / "checkpoint_a", epoch=3)
    newest = fake_checkpoint(cell / "attempt-001" / "checkpoint_a", epoch=4)
    fake_checkpoint(cell / "attempt-001" / "checkpoint_b", epoch=2)  # names do not order epochs
    (cell / "attempt-002" / "checkpoint_c").mkdir(parents=True)  # cut off before any manifest
    (cell / "attempt-002" / SNAPSHOT).write_text('{"checkpoint_res')
    (cell / "attempt-000" / SNAPSHOT).write_text("")
    assert newest_complete_checkpoint(cell, 1) == newest
    assert newest_complete_checkpoint(cell, 2) is None, "a world size of 2 cannot load 1-rank shards"
    assert newest_complete_checkpoint(tmp_path / "nothing-yet", 1) is None


def test_pruning_keeps_the_newest_complete_checkpoint_and_the_cells_own_files(tmp_path: Path):
    cell = tmp_path / "cell"
    (cell / "chaos-done").parent.mkdir(parents=True)
    (cell / "chaos-done").touch()
    fake_checkpoint(cell / "attempt-000" / "checkpoint_1", epoch=1)
    keep = fake_checkpoint(cell / "attempt-001" / "checkpoint_2", epoch=2)
    stray = cell / "attempt-001" / "checkpoint_3"  # uploaded in part before a kill, never registered
    (stray / CHECKPOINT_TAG).mkdir(parents=True)
    (cell / "attempt-001" / SNAPSHOT).write_text("")
    (cell / "attempt-002").mkdir()  # died before its first checkpoint

    removed = prune_cell(cell, 1)
    assert set(removed) == {cell / "attempt-000", cell / "attempt-002", stray}
    assert keep.is_dir() and (cell / "chaos-done").exists() and (cell / "attempt-001" / SNAPSHOT).exists()

    # The run that just finished keeps its folder even when its checkpoint is not the newest.
    (cell / "attempt-003").mkdir()
    assert prune_cell(cell, 1, current="attempt-003") == []
    assert (cell / "attempt-003").is_dir()


def test_nothing_is_pruned_without_a_complete_checkpoint(tmp_path: Path):
    cell = tmp_path / "cell"
    (cell / "attempt-000" / "checkpoint_1").mkdir(parents=True)
    (cell / "checkpoint_2026-11-24_01-00-00.000001").mkdir()  # the older layout: run named by the key
    assert prune_cell(cell, 1) == []
    assert (cell / "attempt-000" / "checkpoint_1").is_dir()


@pytest.mark.parametrize("remote", [False, True])
def test_a_stale_cell_loses_every_checkpoint_so_its_rerun_starts_at_epoch_0(tmp_path: Path, remote: bool):
    cell = tmp_path / "runs" / "cell"
    fake_checkpoint(cell / "attempt-000" / "checkpoint_1", epoch=9)  # the older cell's last epoch
    (cell / "chaos-done").touch()  # the cell's own files (and its owner lock) stay
    # file:// takes the remote path (pyarrow's filesystem, as Ray writes it), where only attempt-000 exists
    storage = (tmp_path / "runs").as_uri() if remote else str(tmp_path / "runs")
    if not remote:
        fake_checkpoint(cell / "attempt-001" / "checkpoint_2", epoch=10)
    assert newest_complete_checkpoint(cell, 1) is not None

    assert discard_attempts(storage, "cell") == (1 if remote else 2)
    assert newest_complete_checkpoint(cell, 1) is None
    assert sorted(p.name for p in cell.iterdir()) == ["chaos-done"]
    assert discard_attempts(storage, "cell") == 0
    assert discard_attempts(storage, "never-ran") == 0


def test_resume_prefers_rays_checkpoint_then_the_disk_then_a_fresh_start(tmp_path, monkeypatch):
    from ray.train import Checkpoint

    storage = tmp_path / "runs"
    no_ray_checkpoint(monkeypatch)
    with resume_from(str(storage), "cell", 1) as folder:
        assert folder is None, "nothing anywhere: a fresh start"
    on_disk = fake_checkpoint(storage / "cell" / "attempt-000" / "checkpoint_1", epoch=1)
    with resume_from(str(storage), "cell", 1) as folder:
        assert folder == str(on_disk)
    with resume_from("s3://bucket/runs", "cell", 1) as folder:
        assert folder is None, "remote storage: only Ray's own checkpoint"

    rays = fake_checkpoint(storage / "cell" / "attempt-001" / "checkpoint_2", epoch=2)
    no_ray_checkpoint(monkeypatch, Checkpoint.from_directory(str(rays)))
    with resume_from(str(storage), "cell", 1) as folder:
        assert Path(folder) == rays, "after a worker-group restart, the attempt's own checkpoint"
    with resume_from("s3://bucket/runs", "cell", 1) as folder:
        assert Path(folder) == rays


def test_a_newer_complete_checkpoint_on_disk_beats_the_older_one_ray_registered(tmp_path, monkeypatch):
    # A node dies after its worker uploaded epochs 2 and 3 whole but before Train's controller polled
    # their reports: Ray hands back epoch 1, and resuming there would train epochs 2 and 3 again.
    from ray.train import Checkpoint

    storage = tmp_path / "runs"
    rays = fake_checkpoint(storage / "cell" / "attempt-000" / "checkpoint_1", epoch=1)
    newest = fake_checkpoint(storage / "cell" / "attempt-000" / "checkpoint_3", epoch=3)
    (storage / "cell" / "attempt-000" / "checkpoint_4" / CHECKPOINT_TAG).mkdir(parents=True)  # cut off
    no_ray_checkpoint(monkeypatch, Checkpoint.from_directory(str(rays)))
    with resume_from(str(storage), "cell", 1) as folder:
        assert folder == str(newest)


def test_no_project_module_imports_rays_private_packages():
    private = re.compile(r"^\s*(from|import)\s+ray(\.\w+)*\._internal\b|ray(\.\w+)*\._internal\.", re.M)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("harness", "mmder")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if private.search(path.read_text())
    ]
    assert offenders == []


# --- real DeepSpeed engines ---------------------------------------------------------------------------

SHARD = {  # a file only that stage writes, the one cut in half
    2: f"{CHECKPOINT_TAG}/zero_pp_rank_0_mp_rank_00_optim_states.pt",
    3: f"{CHECKPOINT_TAG}/zero_pp_rank_0_mp_rank_00_model_states.pt",
}


def tiny_engine(stage: int, seed: int = 0):
    """A DeepSpeed engine over a two-layer net after one step (so the optimizer has state)."""
    import deepspeed

    silence_deepspeed_cpu_build()
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    config = engine_config(batch_size=2, zero_stage=stage, precision="fp32", grad_clip=None)
    engine, *_ = deepspeed.initialize(model=net, optimizer=optimizer, config=config)
    engine.backward(engine(torch.randn(2, 8)).pow(2).mean())
    engine.step()
    return engine


def save_two_epochs(stage: int, attempt: Path) -> None:
    """Epochs 0 and 1 saved as Ray lays them out: every rank's folder merged into checkpoint_00000N."""
    engine = tiny_engine(stage)
    for epoch in (0, 1):
        with epoch_checkpoint(engine, epoch) as folder:
            shutil.copytree(folder, attempt / f"checkpoint_00000{epoch}", dirs_exist_ok=True)
        dist.barrier()


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_a_torn_snapshot_and_a_cut_shard_never_block_a_resume(tmp_path, monkeypatch, stage: int):
    from mmder.train.engine import ensure_process_group

    ensure_process_group("gloo")
    no_ray_checkpoint(monkeypatch)
    storage, key = tmp_path / "runs", "cell"
    cell = storage / key
    save_two_epochs(stage, cell / "attempt-000")
    (cell / "attempt-000" / SNAPSHOT).write_text("")  # torn: Ray would refuse to restore this run
    (cell / "attempt-001").mkdir()  # a later attempt that died before its first checkpoint
    (cell / "attempt-001" / SNAPSHOT).write_text('{"checkpoint_results": [{"checkpoint_dir_na')

    # (a) the newest epoch, and an engine resumes after it
    newest = cell / "attempt-000" / "checkpoint_000001"
    assert newest_complete_checkpoint(cell, 1) == newest
    with resume_from(str(storage), key, 1) as folder:
        assert folder == str(newest)
        assert resume_engine(tiny_engine(stage, seed=1), folder) == (2, 1)

    # (b) one shard of the newest cut in half: the older, complete one
    cut_in_half(newest / SHARD[stage])
    older = newest_complete_checkpoint(cell, 1)
    assert older == cell / "attempt-000" / "checkpoint_000000"
    assert resume_engine(tiny_engine(stage, seed=1), str(older)) == (1, 0)

    # (d) nothing complete left: a fresh start
    (older / manifest_name(0, 1)).unlink()
    with resume_from(str(storage), key, 1) as folder:
        assert folder is None
    assert resume_engine(tiny_engine(stage, seed=1), None) == (0, None)


def _two_ranks(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    dist.init_process_group("gloo")
    seen = {}
    for stage in (2, 3):
        cell = Path(out) / f"stage{stage}"
        save_two_epochs(stage, cell / "attempt-000")
        if rank == 0:
            (cell / "attempt-000" / SNAPSHOT).write_text("{")
        dist.barrier()
        whole = newest_complete_checkpoint(cell, 2)
        dist.barrier()
        if rank == 0:  # (c) rank 1's manifest of the newest checkpoint is lost
            (cell / "attempt-000" / "checkpoint_000001" / manifest_name(1, 2)).unlink()
        dist.barrier()
        chosen = newest_complete_checkpoint(cell, 2)
        resumed = resume_engine(tiny_engine(stage, seed=1), str(chosen) if chosen else None)
        seen[stage] = {
            "whole": whole.name if whole else None,
            "chosen": chosen.name if chosen else None,
            "resumed": list(resumed),
            "as_one_rank": str(newest_complete_checkpoint(cell, 1)),
        }
        dist.barrier()
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: gloo's C++ threads freed during finalisation can abort
    # the process (SIGABRT, 'terminate called without an active exception') after every check passed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.slow
def test_two_ranks_resume_from_the_newest_checkpoint_that_has_every_ranks_manifest(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_two_ranks, args=(rank, port, str(tmp_path))) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0, 0]
    for rank in range(2):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for stage in ("2", "3"):
            assert seen[stage]["whole"] == "checkpoint_000001", (rank, stage)
            assert seen[stage]["chosen"] == "checkpoint_000000", (rank, stage)
            assert seen[stage]["resumed"] == [1, 0], (rank, stage)
            assert seen[stage]["as_one_rank"] == "None", "a 2-rank checkpoint is no use to 1 rank"


def test_a_lane_copies_a_checkpoint_manifest_last_and_drops_only_older_complete_epochs(tmp_path, monkeypatch):
    from mmder.train.checkpoint_files import checkpoint_epoch

    attempt = tmp_path / "runs" / "cell-a" / "attempt-000"
    old = fake_checkpoint(attempt / "checkpoint_epoch-0001", epoch=1)
    copied: list[str] = []
    real_copy = shutil.copy2
    monkeypatch.setattr(
        shutil, "copy2", lambda src, dst: (copied.append(Path(dst).name), real_copy(src, dst))
    )
    source = fake_checkpoint(tmp_path / "local", epoch=2)
    copy_checkpoint(source, attempt / "checkpoint_epoch-0002")
    assert copied[-1] == manifest_name(0, 1) and copied.count(manifest_name(0, 1)) == 1, copied
    assert checkpoint_epoch(attempt / "checkpoint_epoch-0002", 1) == 2
    (attempt / "checkpoint_epoch-0003").mkdir()  # another rank still copying: no manifest yet
    assert drop_older_checkpoints(attempt, 1) == [old]
    assert sorted(p.name for p in attempt.iterdir()) == ["checkpoint_epoch-0002", "checkpoint_epoch-0003"]
