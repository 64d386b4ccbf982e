"""One registry of corpus adapters: each turns a folder on disk into a list of labelled clips.

An adapter is a function ``(root: Path, **options) -> CorpusListing`` registered under a name with
:func:`register_corpus`; :func:`list_corpus` is the only entry point the rest of the project uses.
Adapters only *list* files (and stat them); decoding happens later in :mod:`mmder.data.cache`, which
skips broken media with a reason. Entries an adapter cannot use (missing file, unknown label,
duplicate id) go to ``CorpusListing.skipped`` as ``(path, reason)`` instead of failing.

Built in here: ``synthetic`` (the corpus of :mod:`mmder.data.synthetic`) and ``manifest`` (a user's
CSV). Adapters for the real corpora live in their own small modules (``mmder/data/ravdess.py``,
``cremad.py``, ``iemocap.py``, ...) listed in ``_ADAPTER_MODULES``; they are imported on first use
so that importing this module stays cheap and free of cycles.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Clip",
    "CorpusListing",
    "CORPORA",
    "register_corpus",
    "list_corpus",
    "available_corpora",
    "read_manifest",
]


@dataclass(frozen=True)
class Clip:
    """One labelled clip. Paths are absolute strings; ``None`` when the corpus lacks that modality.

    ``group`` is an optional grouping coarser than the speaker (e.g. an IEMOCAP session).
    ``extra`` holds adapter-specific ``(key, value)`` pairs that the cache honours where it knows
    them: ``("start_s", float)``/``("end_s", float)`` cut a segment of a longer recording and
    ``("crop", (x0, y0, x1, y1))`` (fractions of the frame) crops the video before resizing.
    """

    clip_id: str
    video: str | None
    audio: str | None
    label: str
    speaker: str
    group: str | None = None
    extra: tuple = ()


@dataclass
class CorpusListing:
    """What an adapter found: the class names in label-index order, the clips, and what it skipped."""

    classes: list[str]
    clips: list[Clip]
    skipped: list[tuple[str, str]] = field(default_factory=list)


CorpusAdapter = Callable[..., CorpusListing]
CORPORA: dict[str, CorpusAdapter] = {}

# Modules that register more adapters when imported (one small module per real corpus).
_ADAPTER_MODULES: tuple[str, ...] = (
    "mmder.data.ravdess",
    "mmder.data.cremad",
    "mmder.data.iemocap",
)


def register_corpus(name: str) -> Callable[[CorpusAdapter], CorpusAdapter]:
    """Decorator: register ``fn(root, **options) -> CorpusListing`` under ``name``."""

    def deco(fn: CorpusAdapter) -> CorpusAdapter:
        if name in CORPORA and CORPORA[name] is not fn:
            raise ValueError(f"corpus adapter {name!r} is already registered")
        CORPORA[name] = fn
        return fn

    return deco


def _load_adapter_modules() -> None:
    for mod in _ADAPTER_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


def available_corpora() -> list[str]:
    """Names accepted by :func:`list_corpus`."""
    _load_adapter_modules()
    return sorted(CORPORA)


def list_corpus(name: str, root: str | os.PathLike, **options: object) -> CorpusListing:
    """List corpus ``name`` found at ``root`` with adapter ``options``.

    Raises ``KeyError`` (listing the allowed names) for an unknown corpus and ``ValueError``
    (listing the allowed options) for an option the adapter does not take.
    """
    if name not in CORPORA:
        _load_adapter_modules()
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; allowed: {', '.join(sorted(CORPORA))}")
    fn = CORPORA[name]
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = [k for k in options if k not in allowed]
    if unknown and not takes_any:
        raise ValueError(
            f"corpus {name!r} does not take option(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    return fn(Path(root), **options)


# --------------------------------------------------------------------------------------------------
# manifest CSVs (the user's own corpus, and the synthetic one)
# --------------------------------------------------------------------------------------------------

_REQUIRED = ("clip_id", "video", "audio", "label", "speaker")


def _resolve(base: Path, value: str | None) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    p = Path(value).expanduser()
    return str((p if p.is_absolute() else base / p).resolve())


def read_manifest(
    csv_path: str | os.PathLike,
    *,
    classes: list[str] | None = None,
    extra_columns: tuple[str, ...] = (),
) -> CorpusListing:
    """Read a manifest CSV (columns ``clip_id, video, audio, label, speaker`` and optional ``group``).

    Relative paths are resolved against the CSV's folder; an empty ``video`` or ``audio`` cell means
    the clip lacks that modality. ``classes`` fixes the label order (default: sorted unique labels).
    Rows with a missing file, no media at all, a label outside ``classes`` or a repeated ``clip_id``
    are skipped with a reason. ``extra_columns`` are copied into ``Clip.extra``.
    """
    path = Path(csv_path).resolve()
    base = path.parent
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in _REQUIRED if c not in columns]
        if missing:
            raise ValueError(f"{path}: manifest lacks column(s) {', '.join(missing)}")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    if classes is not None:
        class_list = [str(c) for c in classes]
        if len(set(class_list)) != len(class_list):
            raise ValueError(f"classes has duplicates: {class_list}")
    else:
        class_list = sorted({r["label"] for r in rows if r["label"]})
    known = set(class_list)
    clips: list[Clip] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, r in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them
        where = f"{path}:{n}"
        video, audio = _resolve(base, r.get("video")), _resolve(base, r.get("audio"))
        if not r["clip_id"]:
            skipped.append((where, "empty clip_id"))
            continue
        if r["clip_id"] in seen:
            skipped.append((where, f"duplicate clip_id {r['clip_id']!r}"))
            continue
        if not r["label"] or r["label"] not in known:
            skipped.append((video or audio or where, f"label {r['label']!r} not in classes"))
            continue
        if video is None and audio is None:
            skipped.append((where, "no video and no audio path"))
            continue
        absent = [p for p in (video, audio) if p is not None and not Path(p).is_file()]
        if absent:
            skipped.append((absent[0], "file not found"))
            continue
        seen.add(r["clip_id"])
        clips.append(
            Clip(
                clip_id=r["clip_id"],
                video=video,
                audio=audio,
                label=r["label"],
                speaker=r["speaker"],
                group=r.get("group") or None,
                extra=tuple((c, r.get(c, "")) for c in extra_columns),
            )
        )
    return CorpusListing(classes=class_list, clips=clips, skipped=skipped)


@register_corpus("manifest")
def list_manifest(root: Path, *, classes: list[str] | None = None) -> CorpusListing:
    """A user's manifest CSV: ``root`` is the CSV file or a folder holding ``manifest.csv``."""
    csv_path = root / "manifest.csv" if root.is_dir() else root
    if not csv_path.is_file():
        raise FileNotFoundError(f"no manifest CSV at {csv_path}")
    return read_manifest(csv_path, classes=classes)


@register_corpus("synthetic")
def list_synthetic(root: Path) -> CorpusListing:
    """The corpus written by :func:`mmder.data.synthetic.generate_corpus` (classes in index order)."""
    meta_path = root / "synthetic.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} holds no synthetic corpus (no synthetic.json); run generate_corpus")
    meta = json.loads(meta_path.read_text())
    listing = read_manifest(
        root / "manifest.csv", classes=list(meta["classes"]), extra_columns=("visual_group", "audio_group")
    )
    listing.clips = [
        Clip(c.clip_id, c.video, c.audio, c.label, c.speaker, c.group, tuple((k, int(v)) for k, v in c.extra))
        for c in listing.clips
    ]
    return listing
