"""A damaged cache is found on open, naming the file, and prepared again instead of feeding zeros."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmder.data.cache import ClipCache, DamagedCacheError, PreprocessConfig, prepare_corpus

CONFIG = PreprocessConfig(image_size=16)


def _prepare(synthetic_root: Path, cache_root: Path):
    return prepare_corpus("synthetic", synthetic_root, cache_root, CONFIG, limit=6)


def test_truncated_array_is_named_then_rebuilt(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    prepared = _prepare(synthetic_root, tmp_path)
    meta = json.loads((prepared.path / "meta.json").read_text())
    assert meta["arrays"]["video16"]["bytes"] == (prepared.path / "video16.npy").stat().st_size
    before = ClipCache.open(prepared)
    video16 = np.array(before.video16)
    del before
    target = prepared.path / "video16.npy"
    with target.open("r+b") as fh:
        fh.truncate(target.stat().st_size - 1000)
    with pytest.raises(DamagedCacheError, match="video16.npy") as err:
        ClipCache.open(prepared.path)
    assert "truncated" in str(err.value)
    again = prepare_corpus("synthetic", synthetic_root, tmp_path, CONFIG, limit=6)
    assert again.path == prepared.path
    assert "video16.npy is damaged" in capsys.readouterr().out
    rebuilt = ClipCache.open(again)
    assert np.array_equal(rebuilt.video16, video16)


def test_overwritten_bytes_fail_the_checksum(synthetic_root: Path, tmp_path: Path) -> None:
    prepared = _prepare(synthetic_root, tmp_path)
    target = prepared.path / "audio8.npy"
    size = target.stat().st_size
    with target.open("r+b") as fh:  # same size, different content
        fh.seek(size // 2)
        fh.write(b"\xff" * 64)
    with pytest.raises(DamagedCacheError, match="audio8.npy.*checksum"):
        ClipCache.open(prepared.path)
    assert len(ClipCache.open(prepared.path, checksums=False)) == 6  # sizes alone still agree


def test_cache_from_before_the_checksums_still_opens(synthetic_root: Path, tmp_path: Path) -> None:
    prepared = _prepare(synthetic_root, tmp_path)
    meta_path = prepared.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["arrays"]  # as written by the previous version
    meta_path.write_text(json.dumps(meta))
    assert len(ClipCache.open(prepared.path)) == 6
    assert prepare_corpus("synthetic", synthetic_root, tmp_path, CONFIG, limit=6) == prepared
    target = prepared.path / "audio16.npy"
    with target.open("r+b") as fh:  # the size, read from the .npy header, is checked all the same
        fh.truncate(target.stat().st_size // 2)
    with pytest.raises(DamagedCacheError, match="audio16.npy"):
        ClipCache.open(prepared.path)
