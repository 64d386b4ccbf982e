"""The partial folder a cache is built in: its lock, its progress log, and the rows workers write.

Why a module of its own: this is the part of :mod:`mmder.data.store` that runs in worker processes
(decode one clip, write its rows into the shared memory-mapped arrays) and the part that makes a
preparation resumable (progress log, reopening what an interrupted run left, compaction). It never
decides what the cache is; the store does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from mmder.data import decode
from mmder.data.corpora import Clip
from mmder.data.extract import present_arrays, process_clip_with_faces
from mmder.data.preprocess import ARRAY_NAMES, ARRAY_STEPS, PreprocessConfig
from mmder.disk import NoSpaceError

try:  # POSIX only; without it two processes preparing the same cache just both do the work
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "PROGRESS",
    "NoSpaceError",
    "locked",
    "open_partial",
    "reserve",
    "prepare_one",
    "close_open",
    "worker_init",
    "compact",
]

PROGRESS = "progress.jsonl"

_OPEN: dict[str, dict[str, np.ndarray]] = {}


def arrays_rw(folder: str) -> dict[str, np.ndarray]:
    if folder not in _OPEN:
        close_open()
        _OPEN[folder] = {n: np.load(os.path.join(folder, f"{n}.npy"), mmap_mode="r+") for n in ARRAY_NAMES}
    return _OPEN[folder]


def close_open() -> None:
    for arrays in _OPEN.values():
        for a in arrays.values():
            a.flush()
    _OPEN.clear()


def prepare_one(i: int, clip: Clip, folder: str, config: PreprocessConfig) -> tuple[int, str | None, dict]:
    """Decode clip ``i`` and write its rows into the memmaps in ``folder``.

    Returns ``(i, reason or None, face record)``. Never raises for a bad clip: every failure becomes
    a reason, so one file cannot stop a corpus (``BaseException`` such as Ctrl-C still stops it).
    """
    try:
        arrays, face = process_clip_with_faces(clip, config)
    except decode.DecodeError as exc:
        return i, exc.reason, {}
    except PermissionError as exc:
        return i, f"permission denied: {exc.filename or exc}", {}
    except Exception as exc:  # noqa: BLE001 - a broken clip must never be fatal
        return i, f"{type(exc).__name__}: {exc}", {}
    mm = arrays_rw(folder)
    for name in present_arrays(clip):  # absent modalities stay zero (and sparse on disk): nothing to write
        mm[name][i] = arrays[name]
    return i, None, face


def worker_init() -> None:
    """Keep each worker single-threaded: the pool is the parallelism."""
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``folder``; yields whether ``folder`` is still that directory.

    (Another process may have finished and renamed it while this one waited.)
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(folder).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        yield same
    finally:
        os.close(fd)


def _read_progress(path: Path, clips: list[Clip]) -> dict[int, dict]:
    """Finished clips recorded by an earlier, interrupted run (lines it could not finish are ignored)."""
    done: dict[int, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            i = int(rec["i"])
        except (ValueError, KeyError, TypeError):
            continue
        if 0 <= i < len(clips) and rec.get("clip_id") == clips[i].clip_id:
            done[i] = rec
    return done


def open_partial(partial: Path, n: int, s: int, clips: list[Clip]) -> dict[int, dict]:
    """Arrays and progress of the partial folder: resumed when they match, else started afresh."""
    done = _read_progress(partial / PROGRESS, clips)
    kept = sum(1 for r in done.values() if r.get("reason") is None)
    ok_rows = {n, kept} if len(done) == n else {n}
    for name in ARRAY_NAMES:
        f = partial / f"{name}.npy"
        try:
            arr = np.load(f, mmap_mode="r")
            ok = (
                arr.dtype == np.uint8
                and arr.shape[1:] == (ARRAY_STEPS[name], s, s, 3)
                and arr.shape[0] in ok_rows
            )
            del arr
        except (OSError, ValueError):
            ok = False
        if not ok:
            break
    else:
        reserve([partial / f"{name}.npy" for name in ARRAY_NAMES])  # an older run's may be sparse
        return done
    # Nothing usable (first run, or a foreign/corrupt partial folder): start from scratch.
    for p in partial.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    for name in ARRAY_NAMES:
        np.lib.format.open_memmap(
            partial / f"{name}.npy", mode="w+", dtype=np.uint8, shape=(n, ARRAY_STEPS[name], s, s, 3)
        ).flush()
    reserve([partial / f"{name}.npy" for name in ARRAY_NAMES])
    return {}


def reserve(paths: list[Path]) -> None:
    """Allocate the disk blocks of the (sparse, memory-mapped) arrays now.

    Why: a memory-mapped array that outgrows the disk does not raise ENOSPC; the process dies with
    SIGBUS on the first page that cannot be backed, saying nothing. Reserved up front, a full disk is
    an error with the folder and the sizes in it, before any clip is decoded.
    """
    need = sum(p.stat().st_size for p in paths)
    for path in paths:
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, path.stat().st_size)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            folder = path.parent.parent
            free = shutil.disk_usage(folder).free
            raise NoSpaceError(
                errno.ENOSPC,
                f"not enough space for the clip cache in {folder}: its arrays need {need / 1e6:.1f} MB, "
                f"{free / 1e6:.1f} MB are free there. Free some space or point $MMDER_CACHE_DIR at a larger "
                "disk; the preparation resumes from what it finished",
            ) from None
        finally:
            os.close(fd)


def compact(folder: Path, keep: list[int], n: int, clips: list[Clip]) -> None:
    """Drop the rows of skipped clips, chunk by chunk (arrays may be larger than memory).

    Only rows with content are copied; the rest stay zero in the new (sparse) file. Idempotent, so
    an interruption half way is resumed: an array already of ``len(keep)`` rows is done.
    """
    for name in ARRAY_NAMES:
        src = np.load(folder / f"{name}.npy", mmap_mode="r")
        if src.shape[0] != n:
            del src
            continue
        dst_path = folder / f"{name}.kept.npy"
        shape = (len(keep), *src.shape[1:])
        dst = np.lib.format.open_memmap(dst_path, mode="w+", dtype=np.uint8, shape=shape)
        reserve([dst_path])
        rows = [(j, i) for j, i in enumerate(keep) if name in present_arrays(clips[i])]
        for a in range(0, len(rows), 64):
            js, iis = zip(*rows[a : a + 64], strict=True)
            dst[list(js)] = src[list(iis)]
        dst.flush()
        del src, dst
        os.replace(dst_path, folder / f"{name}.npy")
