"""Fixed train/validation/test lists read from files: the layout, the reading, the digest.

Why: benchmarks such as EmoBox publish their folds as files, and a result is only comparable when it
used the same clips. One layout is read (EmoBox's)::

    DIR/label_map.json                       optional: {"Surprised": "Surprise", ...}, emo -> label
    DIR/fold_1/<corpus>_train_fold_1.jsonl   one JSON object a line
    DIR/fold_1/<corpus>_valid_fold_1.jsonl   optional: the validation list (the epoch is chosen on it)
    DIR/fold_1/<corpus>_test_fold_1.jsonl
    DIR/fold_2/...

(``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` inside ``fold_N/`` are read as well). A line's
columns: ``key`` (the clip's id), ``wav`` (its file; its name without folders and extension is the
clip id when ``key`` is not), ``emo`` (its label, through ``label_map.json`` when that names it);
other columns (EmoBox's ``dataset``, ``length``, ``sample_rate``, ...) are ignored. A line names the
corpus clip whose id equals its ``key``, else the stem of its ``wav``. The labels a cell learns are
the corpus's (one class list for every protocol and the shared cache); ``emo`` is compared with them
and a disagreement is reported, not used.

:mod:`mmder.data.folds` registers the ``split_files`` protocol on these functions; this module only
reads files (no numpy, no registry), so it imports nothing of ours.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = ["ROLES", "Entry", "fold_folders", "fold_files", "read_entries", "read_label_map", "files_digest"]

ROLES = ("train", "valid", "test")
_FOLD = re.compile(r"^fold_(\d+)$")
_CACHE: dict[tuple[str, int, int], list[Entry]] = {}
_DIGESTS: dict[tuple, str] = {}


@dataclass(frozen=True)
class Entry:
    """One line of a list: which clip, its label as written, and where it was written."""

    key: str | None
    wav: str | None
    emo: str | None
    where: str  # "fold_1/x_train_fold_1.jsonl:12"

    @property
    def stem(self) -> str | None:
        """The ``wav``'s file name without folders and extension (EmoBox's keys prefix the corpus)."""
        if not self.wav:
            return None
        name = PureWindowsPath(self.wav).name if "\\" in self.wav else PurePosixPath(self.wav).name
        return name.rsplit(".", 1)[0] if "." in name else name

    @property
    def shown(self) -> str:
        return f"{self.where} ({self.key or self.wav})"


def fold_folders(root: Path) -> list[tuple[int, Path]]:
    """``(N, DIR/fold_N)`` in the order of N; ValueError when ``root`` is no folder or holds none."""
    if not root.is_dir():
        raise ValueError(f"protocol 'split_files': 'dir' {str(root)!r} is not a folder")
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _FOLD.match(p.name)))
    if not found:
        raise ValueError(
            f"protocol 'split_files': 'dir' {str(root)!r} holds no fold_N folders "
            "(EmoBox's layout: fold_1/<corpus>_train_fold_1.jsonl, fold_1/<corpus>_test_fold_1.jsonl, ...)"
        )
    return found


def fold_files(folder: Path, n: int) -> dict[str, Path]:
    """role -> list file of ``fold_N``; a missing train or test list, or two of one role, is an error."""
    out: dict[str, Path] = {}
    for role in ROLES:
        pattern = re.compile(rf"^(?:.+_)?{role}(?:_fold_{n})?\.jsonl$")
        hits = sorted(p for p in folder.iterdir() if p.is_file() and pattern.match(p.name))
        if len(hits) > 1:
            raise ValueError(
                f"protocol 'split_files': {folder} holds {len(hits)} {role} lists "
                f"({', '.join(p.name for p in hits)}); keep one"
            )
        if hits:
            out[role] = hits[0]
        elif role != "valid":
            raise ValueError(
                f"protocol 'split_files': {folder} has no {role} list (<corpus>_{role}_fold_{n}.jsonl)"
            )
    return out


def read_entries(path: Path) -> list[Entry]:
    """Every line of a list file (read once per file version); a bad line is a ValueError naming it."""
    stat = path.stat()
    cached = _CACHE.get((str(path), stat.st_mtime_ns, stat.st_size))
    if cached is not None:
        return cached
    entries = []
    shown = f"{path.parent.name}/{path.name}"
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{shown}:{n}"
        try:
            row = json.loads(line)
        except ValueError as err:
            raise ValueError(f"protocol 'split_files': {where}: not a JSON object ({err})") from None
        if not isinstance(row, dict):
            raise ValueError(f"protocol 'split_files': {where}: not a JSON object")
        key, wav, emo = (row.get(c) for c in ("key", "wav", "emo"))
        if not key and not wav:
            raise ValueError(f"protocol 'split_files': {where}: names no clip (neither 'key' nor 'wav')")
        entries.append(Entry(_text(key), _text(wav), _text(emo), where))
    _CACHE[(str(path), stat.st_mtime_ns, stat.st_size)] = entries
    return entries


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def read_label_map(root: Path) -> dict[str, str]:
    """``DIR/label_map.json`` (emo as written -> label), or {} when there is none."""
    path = root / "label_map.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"protocol 'split_files': {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"protocol 'split_files': {path}: must map label strings to label strings")
    return {str(k): str(v) for k, v in data.items()}


def files_digest(root: Path) -> str:
    """Digest of every list file and the label map, by their names under ``root`` and their bytes:
    an edited list makes new cells, a moved folder does not."""
    paths = [root / "label_map.json"] if (root / "label_map.json").is_file() else []
    for n, folder in fold_folders(root):
        paths += fold_files(folder, n).values()
    version = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    if version not in _DIGESTS:  # every cell's key asks: each file version is read once
        h = hashlib.sha256()
        for path in paths:
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
        _DIGESTS[version] = h.hexdigest()[:16]
    return _DIGESTS[version]
