"""One registry of corpus adapters: each turns a folder on disk into a list of labelled clips.

An adapter is a function ``(root: Path, **options) -> CorpusListing`` registered under a name with
:func:`register_corpus`; :func:`list_corpus` is the only entry point the rest of the project uses.
Adapters only *list* files (and stat them); decoding happens later in :mod:`mmder.data.cache`, which
skips broken media with a reason. Entries an adapter cannot use (missing file, unknown label,
duplicate id) go to ``CorpusListing.skipped`` as ``(path, reason)`` instead of failing.

Adapters also say what they saw (``CorpusListing.seen`` and per-reason counts in ``rejected``), so
a root that lists nothing fails with :class:`EmptyCorpusError` saying why, and declare their options
with types, so :func:`corpus_options_model` and :func:`corpus_modalities` can check an experiment's
``datasets[].options`` without any data. :func:`walk_files` lists folders the way every adapter
should: following symbolic links (cluster data folders often are links), hidden entries left out.

Built in here: ``synthetic`` (the corpus of :mod:`mmder.data.synthetic`) and ``manifest`` (a user's
CSV). Adapters for the real corpora live in their own small modules (``mmder/data/ravdess.py``,
``cremad.py``, ``iemocap.py``, ...) listed in ``_ADAPTER_MODULES``; they are imported on first use
so that importing this module stays cheap and free of cycles.
"""

from __future__ import annotations

import csv
import difflib
import importlib
import importlib.util
import inspect
import json
import os
import statistics
import typing
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "Clip",
    "CorpusListing",
    "CORPORA",
    "EmptyCorpusError",
    "register_corpus",
    "corpus_options_model",
    "corpus_classes",
    "corpus_modalities",
    "classes_option",
    "modalities_from_option",
    "walk_files",
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
    """What an adapter found: the class names in label-index order, the clips, and what it skipped.

    ``seen`` counts what the adapter looked at (``seen_what``: files, manifest rows, ...; None when
    an adapter does not count) and ``rejected`` how many of those it left out per short reason, so
    an empty listing can say why. ``notes`` are warnings for a person (e.g. a label on suspiciously
    few clips). None of these enter the cache key; ``skipped`` (path, reason) does.
    """

    classes: list[str]
    clips: list[Clip]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seen: int | None = None
    seen_what: str = "files"
    rejected: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def reject(self, kind: str, where: str | None = None, reason: str | None = None) -> None:
        """Count one entry left out as ``kind``; with ``where``, also list it in ``skipped``."""
        self.rejected[kind] = self.rejected.get(kind, 0) + 1
        if where is not None:
            self.skipped.append((where, reason or kind))


class EmptyCorpusError(ValueError):
    """A corpus root that exists but lists no usable clip; the message says what was seen and why."""

    def __init__(self, corpus: str, root: str | os.PathLike, listing: CorpusListing) -> None:
        self.corpus, self.root, self.listing = corpus, str(root), listing
        super().__init__(f"corpus {corpus!r} at {root} lists no usable clip: {describe_rejections(listing)}")


def describe_rejections(listing: CorpusListing) -> str:
    """``saw 12 files: 10 not named like ..., 2 song files left out (...)``, from the listing's counts."""
    kinds = listing.rejected or Counter(reason for _, reason in listing.skipped)
    parts = [f"{n} {kind}" if n else kind for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:8]]
    if len(kinds) > 8:
        parts.append(f"{sum(sorted(kinds.values())[:-8])} for {len(kinds) - 8} other reasons")
    if listing.seen is None:
        head = f"left out {len(listing.skipped)} entries"
    elif listing.seen == 0:
        head = f"saw no {listing.seen_what}"
    else:
        head = f"saw {listing.seen} {listing.seen_what}"
    return head + (": " + ", ".join(parts) if parts else "")


CorpusAdapter = Callable[..., CorpusListing]
ModalitiesFn = Callable[[Mapping[str, Any]], frozenset[str]]
ClassesFn = Callable[[Mapping[str, Any]], "int | None"]
CORPORA: dict[str, CorpusAdapter] = {}
_MODALITIES: dict[str, ModalitiesFn] = {}
_CLASSES: dict[str, ClassesFn] = {}
BOTH: frozenset[str] = frozenset({"video", "audio"})

# Modules that register more adapters when imported (one small module per real corpus).
_ADAPTER_MODULES: tuple[str, ...] = (
    "mmder.data.ravdess",
    "mmder.data.cremad",
    "mmder.data.iemocap",
)


def register_corpus(
    name: str, modalities: ModalitiesFn | None = None, classes: int | ClassesFn | None = None
) -> Callable[[CorpusAdapter], CorpusAdapter]:
    """Decorator: register ``fn(root, **options) -> CorpusListing`` under ``name``.

    ``modalities(options)`` says which of ``video``/``audio`` the corpus can feed with those
    (validated, defaults filled) options; None: both. ``classes``: how many classes it has, or a
    function of the options that says so (None: known only once listed), for protocol notes that must
    not need the data (the leaderboard's chance level and reference comparisons).
    """

    def deco(fn: CorpusAdapter) -> CorpusAdapter:
        if name in CORPORA and CORPORA[name] is not fn:
            raise ValueError(f"corpus adapter {name!r} is already registered")
        CORPORA[name] = fn
        if classes is not None:
            _CLASSES[name] = classes if callable(classes) else (lambda options, n=classes: n)
        if modalities is not None:
            _MODALITIES[name] = modalities
        else:
            _MODALITIES.pop(name, None)
        return fn

    return deco


def modalities_from_option(options: Mapping[str, Any]) -> frozenset[str]:
    """For adapters with a ``modality`` option: ``audio`` and ``video`` feed one, the rest both."""
    mode = options.get("modality")
    return frozenset({mode}) if mode in ("audio", "video") else BOTH


def walk_files(root: Path) -> list[Path]:
    """Every non-hidden file below ``root``, following directory links (each real folder once).

    Why not ``Path.rglob``: before Python 3.13 it does not enter linked folders, and on clusters
    corpus folders are often links. A link back to an ancestor is cut instead of looping. Paths are
    ``root``-relative as found (links are not resolved), hidden files and folders are left out.
    """
    out: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:  # reached again through a link: a loop or a duplicate
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath)
        out.extend(base / f for f in sorted(filenames) if not f.startswith("."))
    return out


def _load_adapter_modules() -> None:
    for mod in _ADAPTER_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


def available_corpora() -> list[str]:
    """Names accepted by :func:`list_corpus`."""
    _load_adapter_modules()
    return sorted(CORPORA)


def _adapter(name: str) -> CorpusAdapter:
    if name not in CORPORA:
        _load_adapter_modules()
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; allowed: {', '.join(sorted(CORPORA))}")
    return CORPORA[name]


def corpus_options_model(name: str) -> type[BaseModel]:
    """A pydantic model of corpus ``name``'s options, built from its adapter's keyword-only parameters.

    Why: the harness validates an experiment's ``datasets[].options`` before any data is at hand.
    Unknown keys are rejected (``extra="forbid"``) unless the adapter takes ``**options``.
    """
    from pydantic import ConfigDict, create_model

    fn = _adapter(name)
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation that does not resolve: accept any value there
        hints = {}
    params = inspect.signature(fn).parameters
    fields: dict[str, Any] = {
        k: (hints.get(k, Any), ... if p.default is inspect.Parameter.empty else p.default)
        for k, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    config = ConfigDict(extra="allow" if takes_any else "forbid", frozen=True)
    return create_model(f"{name.title()}Options", __config__=config, **fields)


def corpus_classes(name: str, options: Mapping[str, Any] | None = None) -> int | None:
    """How many classes corpus ``name`` has with ``options`` (validated first); None when unknown."""
    opts = corpus_options_model(name).model_validate(dict(options or {})).model_dump()
    fn = _CLASSES.get(name)
    return fn(opts) if fn is not None else None


def classes_option(options: Mapping[str, Any]) -> int | None:
    """For adapters whose ``classes`` option is the count (RAVDESS: 7 or 8) or the class list."""
    value = options.get("classes")
    return len(value) if isinstance(value, list | tuple) else value


def corpus_modalities(name: str, options: Mapping[str, Any] | None = None) -> frozenset[str]:
    """Which of ``video``/``audio`` corpus ``name`` can feed with ``options`` (validated first)."""
    opts = corpus_options_model(name).model_validate(dict(options or {})).model_dump()
    fn = _MODALITIES.get(name)
    return frozenset(fn(opts)) if fn is not None else BOTH


def list_corpus(name: str, root: str | os.PathLike, **options: object) -> CorpusListing:
    """List corpus ``name`` found at ``root`` with adapter ``options``.

    Raises ``KeyError`` (listing the allowed names) for an unknown corpus, ``ValueError`` (listing
    the allowed options) for an option the adapter does not take, and :class:`EmptyCorpusError`
    (saying what the adapter saw and why it left each kind out) when the root lists no usable clip.
    """
    fn = _adapter(name)
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = [k for k in options if k not in allowed]
    if unknown and not takes_any:
        raise ValueError(
            f"corpus {name!r} does not take option(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    listing = fn(Path(root), **options)
    if not listing.clips:
        raise EmptyCorpusError(name, root, listing)
    return listing


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
    listing = CorpusListing(class_list, [], seen=len(rows), seen_what="manifest rows")
    if classes is None:
        listing.notes = _label_notes(Counter(r["label"] for r in rows if r["label"]))
    clips = listing.clips
    seen: set[str] = set()
    for n, r in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them
        where = f"{path}:{n}"
        video, audio = _resolve(base, r.get("video")), _resolve(base, r.get("audio"))
        if not r["clip_id"]:
            listing.reject("rows with an empty clip_id", where, "empty clip_id")
            continue
        if r["clip_id"] in seen:
            listing.reject("repeated clip_ids", where, f"duplicate clip_id {r['clip_id']!r}")
            continue
        if not r["label"] or r["label"] not in known:
            reason = f"label {r['label']!r} not in classes"
            listing.reject(
                f"labels not in classes ({', '.join(class_list)})", video or audio or where, reason
            )
            continue
        if video is None and audio is None:
            listing.reject("rows without a video or audio path", where, "no video and no audio path")
            continue
        absent = [p for p in (video, audio) if p is not None and not Path(p).is_file()]
        if absent:
            listing.reject("media files not found", absent[0], "file not found")
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
    return listing


def _label_notes(counts: Counter[str]) -> list[str]:
    """Without a declared class list every label is a class: show them, flag the suspiciously rare."""
    if not counts:
        return []
    found = ", ".join(f"{label} ({n})" for label, n in sorted(counts.items()))
    notes = [f"no class list declared (options: classes); found {len(counts)} classes: {found}"]
    median = statistics.median(counts.values())
    for label, n in sorted(counts.items()):
        if n * 10 <= median:
            close = difflib.get_close_matches(label, [c for c in counts if c != label], n=1)
            hint = f" (a typo of {close[0]!r}?)" if close else ""
            notes.append(
                f"label {label!r} is on {n} clip{'s' if n != 1 else ''} only, while the median class has "
                f"{median:g}{hint}; declare options.classes to reject labels that are not classes"
            )
    return notes


@register_corpus("manifest", classes=classes_option)
def list_manifest(root: Path, *, classes: list[str] | None = None) -> CorpusListing:
    """A user's manifest CSV: ``root`` is the CSV file or a folder holding ``manifest.csv``."""
    csv_path = root / "manifest.csv" if root.is_dir() else root
    if not csv_path.is_file():
        raise FileNotFoundError(f"no manifest CSV at {csv_path}")
    return read_manifest(csv_path, classes=classes)


@register_corpus("synthetic", classes=6)  # 3 visual x 2 audio groups
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
