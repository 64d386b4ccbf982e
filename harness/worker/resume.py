"""Where a cell resumes from, through Ray's public API and our own checkpoint manifests only.

Each start of a cell's Tune trial is a new Train run, ``attempt-NNN``, inside the cell's folder::

    <storage>/<cell key>/         the cell's folder (also holds worker.py's ``chaos-done`` marker)
        attempt-000/              one Ray Train run: RunConfig(storage_path=<storage>/<key>, name=attempt-000)
            checkpoint_manager_snapshot.json, ...   Ray's own files, never read here
            checkpoint_<time>/    one epoch: every rank's DeepSpeed files + manifest-rank<r>-of<w>.json
        attempt-001/ ...

Within one attempt, Ray Train's FailureConfig restarts hand the attempt's checkpoint to the workers
(``ray.train.get_checkpoint()``). A new attempt asks Ray to restore nothing: its workers pick the
newest complete checkpoint of any attempt from disk (:mod:`mmder.train.checkpoint_files` decides "complete"),
so a torn Ray snapshot in an old attempt never blocks a cell, and a checkpoint uploaded whole just
before a kill (but never registered by Ray) is still used.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from mmder.train.checkpoint_files import checkpoint_epoch, is_manifest

ATTEMPT_PREFIX = "attempt-"
_ATTEMPT = re.compile(rf"{ATTEMPT_PREFIX}(\d+)")
CHECKPOINT_GLOB = "checkpoint_*"  # Ray Train's checkpoint folder names


def is_remote(storage_path: str) -> bool:
    """A URI (``s3://...``): no local disk to search, list or prune."""
    return "://" in storage_path


def attempt_number(path: Path) -> int | None:
    match = _ATTEMPT.fullmatch(path.name)
    return int(match.group(1)) if match else None


def attempts(cell_dir: Path) -> list[Path]:
    """The cell's attempt folders, oldest first."""
    if not cell_dir.is_dir():
        return []
    found = [(attempt_number(p), p) for p in cell_dir.iterdir() if p.is_dir()]
    return [p for n, p in sorted((n, p) for n, p in found if n is not None)]


def attempt_run(storage_path: str, key: str) -> tuple[str, str]:
    """(storage_path for RunConfig, name for RunConfig) of a fresh attempt of this cell.

    Locally the attempt's folder is created here (an exclusive ``mkdir``), so two starts never share
    a number. On remote storage (``s3://``) the name is always ``attempt-000``: nothing can be listed,
    so the cell resumes the Ray way (same run name, Ray's snapshot), which an object store cannot
    tear because it replaces objects whole.
    """
    if is_remote(storage_path):
        return f"{storage_path.rstrip('/')}/{key}", f"{ATTEMPT_PREFIX}000"
    cell_dir = Path(storage_path) / key
    cell_dir.mkdir(parents=True, exist_ok=True)
    numbers = [attempt_number(p) for p in attempts(cell_dir)]
    n = max((x for x in numbers if x is not None), default=-1) + 1
    while True:
        name = f"{ATTEMPT_PREFIX}{n:03d}"
        try:
            (cell_dir / name).mkdir()
            return str(cell_dir), name
        except FileExistsError:
            n += 1


def newest_complete_checkpoint(cell_dir: Path, world_size: int) -> Path | None:
    """The complete checkpoint of the highest epoch in any attempt (ties: the later attempt), or None.

    Checkpoints of another world size do not count: DeepSpeed's ZeRO shards are per rank.
    """
    best: tuple[int, int, str] | None = None
    best_path = None
    for attempt in attempts(cell_dir):
        number = attempt_number(attempt) or 0
        for path in attempt.glob(CHECKPOINT_GLOB):
            epoch = checkpoint_epoch(path, world_size) if path.is_dir() else None
            if epoch is None:
                continue
            rank = (epoch, number, path.name)
            if best is None or rank > best:
                best, best_path = rank, path
    return best_path


@contextlib.contextmanager
def resume_from(
    storage_path: str, key: str, world_size: int, ray_checkpoint: bool = True
) -> Iterator[str | None]:
    """The folder to resume from, inside a Train worker: the newest complete checkpoint (highest epoch)
    among Ray Train's checkpoint of this attempt (``ray.train.get_checkpoint()``, after a worker-group
    restart) and those of any attempt of the cell on disk; None when there is none.

    Ray's checkpoint can be older than the disk's: Train's controller registers a report only when it
    next polls the workers, so the epochs a worker uploaded whole just before its node died are on disk
    but not in Ray's list (the node-loss test resumed from epoch 1 with epoch 3 complete on disk). On
    remote storage (``s3://``) the disk cannot be searched: only Ray's checkpoint is used (the attempt
    there is always the same run, see :func:`attempt_run`). ``ray_checkpoint=False`` (a lane, whose Train
    run holds the checkpoints of several cells): the disk only.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint() if ray_checkpoint else None
    remote = is_remote(storage_path)
    found = None if remote else newest_complete_checkpoint(Path(storage_path) / key, world_size)
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            rays_epoch = checkpoint_epoch(folder, world_size)
            found_epoch = checkpoint_epoch(found, world_size) if found is not None else None
            if found_epoch is None or (rays_epoch is not None and rays_epoch >= found_epoch):
                yield folder
                return
    if found is not None:
        print(f"[{key}] resuming from {found.parent.name}/{found.name}", flush=True)
    yield str(found) if found is not None else None


def copy_checkpoint(source: str | Path, target: Path) -> None:
    """Copy this rank's checkpoint files into ``target`` (a lane cell's ``checkpoint_*`` folder), its
    manifest last, so a copy cut short never reads as complete (:mod:`mmder.train.checkpoint_files`)."""
    source = Path(source)
    files = (p for p in source.rglob("*") if p.is_file())
    for path in sorted(files, key=lambda p: is_manifest(p.relative_to(source).as_posix())):
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


def drop_older_checkpoints(attempt: Path, world_size: int) -> list[Path]:
    """Remove the checkpoints of the attempt older than its newest complete one (never an incomplete
    one: another rank may still be copying it). Rank 0 of a lane calls it after each epoch's report."""
    newest = newest_complete_checkpoint(attempt.parent, world_size)
    if newest is None or newest.parent != attempt:
        return []
    newest_epoch = checkpoint_epoch(newest, world_size)
    removed = []
    for path in attempt.glob(CHECKPOINT_GLOB):
        epoch = checkpoint_epoch(path, world_size) if path.is_dir() and path != newest else None
        if epoch is not None and newest_epoch is not None and epoch < newest_epoch:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def drop_checkpoints(attempt: Path) -> None:
    """A finished cell's checkpoints in a lane, as soon as its run is finished: 10,000 micro cells
    otherwise hold 12 GB until their lane ends. Its marks stay, so a restarted lane skips it."""
    for path in attempt.glob(CHECKPOINT_GLOB):
        shutil.rmtree(path, ignore_errors=True)


def discard_attempts(storage_path: str, key: str) -> int:
    """Remove every attempt of the cell (its checkpoints); returns how many went. The cell's folder, its
    owner lock and markers stay. Call only while the cell is owned and none of its runs is alive.

    For a stale cell: its checkpoints were made from older data or code, so its rerun must start from
    epoch 0. Resuming them would train (or, after the last epoch, merely re-evaluate) the old cell and
    log it as today's. On remote storage the one attempt a cell has there (``attempt-000``) is deleted
    through pyarrow's filesystem, the one Ray Train writes it with.
    """
    if is_remote(storage_path):
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(f"{storage_path.rstrip('/')}/{key}/{ATTEMPT_PREFIX}000")
        if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return 0
        fs.delete_dir(path)
        return 1
    found = attempts(Path(storage_path) / key)
    for attempt in found:
        shutil.rmtree(attempt)
    return len(found)


def prune_cell(cell_dir: Path, world_size: int, current: str | None = None) -> list[Path]:
    """Remove what no resume will read; returns the removed paths. Call only while no attempt runs.

    With a complete checkpoint somewhere, every attempt other than the one holding it (and other than
    ``current``, the attempt whose run just finished) goes, and inside the kept attempts every
    ``checkpoint_*`` folder but that checkpoint: older epochs and stray, unregistered uploads cut off
    by a kill. Ray's snapshot is never read, so a stray is recognised as "not the newest complete".
    Without any complete checkpoint nothing is removed (an older layout, or a kill before the first
    epoch: nothing proves what is safe to drop). The newest complete checkpoint stays on disk always.
    """
    newest = newest_complete_checkpoint(cell_dir, world_size)
    if newest is None:
        return []
    removed = []
    for attempt in attempts(cell_dir):
        if attempt != newest.parent and attempt.name != current:
            shutil.rmtree(attempt, ignore_errors=True)
            removed.append(attempt)
            continue
        for path in attempt.glob(CHECKPOINT_GLOB):
            if path.is_dir() and path != newest:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed
