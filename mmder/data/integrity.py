"""A prepared cache checks itself: array sizes always, and a cheap sampled checksum of each array.

Why: caches live for months on shared or network disks; a copy cut short by a full disk or an
interrupted ``rsync`` leaves ``.npy`` files that memory-map without complaint and feed zeros, or
crash deep in a DataLoader worker with a bus error. Checking on open turns that into one clear
error naming the file. The checksum reads only a strided sample (the first and last MiB and up to 16
MiB spread between), so it stays cheap for arrays of many gigabytes while catching truncation,
overwritten regions and a swapped file. Caches written before these records existed are checked
by size alone (from the ``.npy`` header and the clip count).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from mmder.data.preprocess import ARRAY_NAMES, ARRAY_STEPS

__all__ = ["DamagedCacheError", "SAMPLE_SCHEME", "sampled_checksum", "array_records", "verify_cache"]

SAMPLE_SCHEME = "blake2b128-1MiB-first-last-16"  # recorded in meta.json; a different one is not checked
_BLOCK = 1 << 20
_SPREAD = 16


class DamagedCacheError(Exception):
    """A cache file whose size or content does not match what was recorded when it was prepared."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"damaged cache file {self.path}: {reason}; delete its folder "
            f"({Path(self.path).parent}) or run the preparation again, which rebuilds it"
        )


def _sample_blocks(size: int) -> list[int]:
    n = max(1, math.ceil(size / _BLOCK))
    stride = max(1, math.ceil(n / _SPREAD))
    return sorted({0, n - 1, *range(0, n, stride)})


def sampled_checksum(path: str | os.PathLike) -> str:
    """blake2b of the file's size and of the 1 MiB blocks :func:`_sample_blocks` picks."""
    size = os.stat(path).st_size
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        for b in _sample_blocks(size):
            fh.seek(b * _BLOCK)
            h.update(fh.read(_BLOCK))
    return h.hexdigest()


def array_records(folder: Path) -> dict[str, dict]:
    """Per array: its size in bytes and sampled checksum, as meta.json records them."""
    return {
        name: {
            "bytes": (folder / f"{name}.npy").stat().st_size,
            "checksum": sampled_checksum(folder / f"{name}.npy"),
            "checksum_scheme": SAMPLE_SCHEME,
        }
        for name in ARRAY_NAMES
    }


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a ``.npy`` file (nothing but the header is read)."""
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        return tuple(shape), dtype, fh.tell()


def verify_cache(folder: str | os.PathLike, meta: dict, *, checksums: bool = True) -> None:
    """Raise :class:`DamagedCacheError` naming the first array that does not match ``meta``.

    Sizes are always checked (the ``.npy`` header against the clip count and image size, and the
    file against its header); ``checksums`` also compares the sampled checksum where meta.json
    recorded one.
    """
    folder = Path(folder)
    s = int(meta["config"]["image_size"])
    n = int(meta["n_prepared"])
    records = meta.get("arrays") or {}
    for name in ARRAY_NAMES:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise DamagedCacheError(path, "file missing")
        try:
            shape, dtype, offset = _header(path)
        except (OSError, ValueError, EOFError) as exc:
            raise DamagedCacheError(path, f"unreadable .npy header ({exc})") from exc
        want = (n, ARRAY_STEPS[name], s, s, 3)
        if shape != want or dtype != np.uint8:
            raise DamagedCacheError(path, f"holds {dtype} {shape}, expected uint8 {want}")
        size = path.stat().st_size
        expected = offset + math.prod(shape)
        rec = records.get(name) or {}
        if size != expected or size != rec.get("bytes", size):
            raise DamagedCacheError(path, f"{size} bytes, expected {expected} (truncated or cut short?)")
        if checksums and rec.get("checksum") and rec.get("checksum_scheme") == SAMPLE_SCHEME:
            if sampled_checksum(path) != rec["checksum"]:
                raise DamagedCacheError(path, "content differs from when it was prepared (checksum mismatch)")
