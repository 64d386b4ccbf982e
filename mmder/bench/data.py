"""Throughput of the data path, as plain functions (no Ray, no MLflow): preparing and reading clips.

Why per core: preparation parallelises over processes and reading over DataLoader workers, so the
useful figure for sizing a job is clips per second per busy core. Both benchmarks pin torch and
OpenCV to one thread in the measuring process, so "cores" is the number of processes doing the work
(``workers`` for a pool, else 1).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

# Before torch makes its first tensor (see mmder.data.dataset): huge pages for large CPU tensors.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from mmder.data.cache import ClipCache, PreprocessConfig, prepare_corpus  # noqa: E402
from mmder.data.dataset import FusedClipDataset  # noqa: E402

__all__ = ["bench_prepare", "bench_loader"]


def _single_thread() -> tuple[int, int]:
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    return before


def bench_prepare(
    corpus: str,
    root: str | os.PathLike,
    *,
    image_size: int = 224,
    face: str = "haar",
    workers: int = 1,
    limit: int | None = None,
    corpus_options: dict | None = None,
    start_method: str = "spawn",
) -> dict:
    """Prepare ``corpus`` (its first ``limit`` clips) into a fresh temporary cache and time it.

    Returns clips (decoded: prepared + failed), seconds, clips/s and clips/s per core, and what was
    skipped. The time includes listing the corpus and, for ``workers > 1``, starting the processes.
    """
    tmp = Path(tempfile.mkdtemp(prefix="mmder-bench-prepare-"))
    before = _single_thread()
    try:
        config = PreprocessConfig(image_size=image_size, face=face)
        t0 = time.perf_counter()
        prepared = prepare_corpus(
            corpus,
            root,
            tmp,
            config,
            corpus_options=corpus_options,
            workers=workers,
            start_method=start_method,
            limit=limit,
        )
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
        shutil.rmtree(tmp, ignore_errors=True)
    n = prepared.n_prepared + prepared.n_failed
    cores = max(1, workers)
    return {
        "corpus": corpus,
        "clips": n,
        "prepared": prepared.n_prepared,
        "skipped": prepared.n_skipped,
        "face_fallback": prepared.n_face_fallback,
        "image_size": image_size,
        "face": face,
        "workers": workers,
        "seconds": round(seconds, 3),
        "clips_per_s": round(n / seconds, 2),
        "clips_per_s_per_core": round(n / seconds / cores, 2),
    }


def bench_loader(
    cache_path: str | os.PathLike,
    setting: str = "FSLF",
    *,
    batch_size: int = 16,
    workers: int = 0,
    seconds: float = 5.0,
    indices: list[int] | np.ndarray | None = None,
    output: str = "float32",
) -> dict:
    """Read ``FusedClipDataset`` batches of the cache through a DataLoader for about ``seconds``.

    Returns clips/s and clips/s per core (cores = ``workers``, or 1 when reading in this process).
    The first batch (worker start-up, page cache) is not timed. ``output="uint8"`` times the
    unnormalised uint8 items (normalised later on the device).
    """
    cache = ClipCache.open(cache_path)
    if indices is None:
        indices = np.arange(len(cache))
    ds = FusedClipDataset(cache, indices, setting, output=output)
    before = _single_thread()
    try:
        loader = DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=_worker_single_thread if workers > 0 else None,
            drop_last=False,
        )
        shape = None
        n = 0
        it = iter(_forever(loader))
        first = next(it)
        shape = tuple(first[0].shape)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            x, _, _ = next(it)
            n += x.shape[0]
        dt = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
    cores = max(1, workers)
    return {
        "cache": str(cache_path),
        "setting": setting,
        "output": output,
        "image_size": cache.image_size,
        "batch_shape": shape,
        "batch_size": batch_size,
        "workers": workers,
        "clips": n,
        "seconds": round(dt, 3),
        "clips_per_s": round(n / dt, 1),
        "clips_per_s_per_core": round(n / dt / cores, 1),
    }


def _worker_single_thread(_: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _forever(loader: DataLoader):
    while True:
        yield from loader
