"""Disk space said plainly: an error that names the folder, what is needed and what is free."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

__all__ = ["NoSpaceError", "folder_bytes", "require_space", "write_atomic"]


class NoSpaceError(OSError):
    """A folder cannot hold what is about to be written there: raised before the write starts."""


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file of this process beside it: a reader (or another
    writer) never sees half a file, whatever moment a process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def folder_bytes(folder: str | os.PathLike[str]) -> int:
    """The bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def require_space(folder: str | os.PathLike[str], need: int, what: str, hint: str) -> None:
    """Raise NoSpaceError when ``folder``'s file system has less than ``need`` bytes free.

    Why before, not on ENOSPC: a copy cut off by a full disk leaves a half-written checkpoint beside
    the good one and an error from deep inside a library; said first, nothing is half written.
    """
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    if free < need:
        raise NoSpaceError(
            errno.ENOSPC,
            f"not enough space for {what} in {folder}: it needs {need / 1e6:.1f} MB, "
            f"{free / 1e6:.1f} MB are free there. {hint}",
        )
