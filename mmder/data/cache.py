"""Open a prepared cache: the read side the datasets use, and the names the rest of the project imports.

Why: training reads the same decoded arrays for every fold, setting and seed, memory-mapped. A cache
is written by :func:`~mmder.data.store.prepare_corpus` (re-exported here); :class:`ClipCache` opens
it read-only after a self-check (:func:`~mmder.data.integrity.verify_cache`), so a truncated or
overwritten array fails with :class:`DamagedCacheError` naming the file instead of feeding zeros.

The data path is split by job: :mod:`~mmder.data.preprocess` (settings and folder key),
:mod:`~mmder.data.extract` (one clip -> arrays), :mod:`~mmder.data.store` and
:mod:`~mmder.data.partial` (the resumable on-disk folder), :mod:`~mmder.data.integrity` (self-check)
and this module. ``from mmder.data.cache import ClipCache, PreprocessConfig, prepare_corpus`` keeps
working.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmder.data.integrity import DamagedCacheError, verify_cache
from mmder.data.preprocess import (
    ARRAY_NAMES,
    CACHE_VERSION,
    FACE_MODES,
    PreprocessConfig,
    cache_key,
    partial_path,
)
from mmder.data.store import PreparedCache, prepare_corpus

__all__ = [
    "CACHE_VERSION",
    "FACE_MODES",
    "ARRAY_NAMES",
    "PreprocessConfig",
    "PreparedCache",
    "CachedClip",
    "ClipCache",
    "DamagedCacheError",
    "prepare_corpus",
    "cache_key",
    "partial_path",
]


@dataclass(frozen=True)
class CachedClip:
    """One row of ``clips.csv``; ``index`` is the row in the arrays.

    ``face_fraction`` is the share of sampled frames with a detected face and ``face_crop`` is
    ``"face"`` or ``"centre"`` (fallback) for ``face='haar'``; None and ``""`` otherwise.
    """

    index: int
    clip_id: str
    label: str
    label_index: int
    speaker: str
    group: str | None
    has_video: bool
    has_audio: bool
    face_fraction: float | None = None
    face_crop: str = ""
    face_note: str = ""


class ClipCache:
    """A prepared cache, opened read-only: classes, clip records and four memory-mapped arrays.

    Arrays open lazily and are dropped when pickled, so a dataset holding this object can go to
    DataLoader workers (or Ray) without copying gigabytes; each process maps the files itself.
    """

    def __init__(self, path: Path, classes: list[str], clips: list[CachedClip], meta: dict) -> None:
        self.path = path
        self.classes = classes
        self.clips = clips
        self.meta = meta
        self._arrays: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, path: str | os.PathLike | PreparedCache, *, checksums: bool = True) -> ClipCache:
        """Open the cache folder at ``path`` (or a :class:`PreparedCache`) after its self-check.

        Raises :class:`DamagedCacheError` naming the first array whose size (always checked) or
        sampled checksum (``checksums``; caches without one are checked by size) does not match.
        """
        p = Path(path.path if isinstance(path, PreparedCache) else path)
        meta_path = p / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{p} is not a complete cache (no meta.json)")
        meta = json.loads(meta_path.read_text())
        verify_cache(p, meta, checksums=checksums)
        classes = json.loads((p / "classes.json").read_text())
        with (p / "clips.csv").open(newline="", encoding="utf-8") as fh:
            clips = [
                CachedClip(
                    index=int(r["index"]),
                    clip_id=r["clip_id"],
                    label=r["label"],
                    label_index=int(r["label_index"]),
                    speaker=r["speaker"],
                    group=r["group"] or None,
                    has_video=r["has_video"] == "1",
                    has_audio=r["has_audio"] == "1",
                    face_fraction=float(r["face_fraction"]) if r.get("face_fraction") else None,
                    face_crop=r.get("face_crop") or "",
                    face_note=r.get("face_note") or "",
                )
                for r in csv.DictReader(fh)
            ]
        return cls(p, classes, clips, meta)

    def __len__(self) -> int:
        return len(self.clips)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def array(self, name: str) -> np.ndarray:
        """One of ``video16``, ``video8``, ``audio16``, ``audio8``, memory-mapped read-only."""
        if name not in ARRAY_NAMES:
            raise KeyError(f"unknown array {name!r}; allowed: {', '.join(ARRAY_NAMES)}")
        if name not in self._arrays:
            self._arrays[name] = np.load(self.path / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    @property
    def video16(self) -> np.ndarray:
        return self.array("video16")

    @property
    def video8(self) -> np.ndarray:
        return self.array("video8")

    @property
    def audio16(self) -> np.ndarray:
        return self.array("audio16")

    @property
    def audio8(self) -> np.ndarray:
        return self.array("audio8")

    @property
    def labels(self) -> np.ndarray:
        """Label index per row (int64)."""
        return np.array([c.label_index for c in self.clips], dtype=np.int64)

    @property
    def speakers(self) -> list[str]:
        """Speaker per row, for :func:`mmder.data.folds.make_folds`."""
        return [c.speaker for c in self.clips]

    @property
    def image_size(self) -> int:
        return int(self.meta["config"]["image_size"])
