"""Speaker-independent evaluation protocols: which cached clips train and which test, per fold.

A protocol is a small dict (from an experiment file) with a ``kind`` and that kind's keys. Every kind
knows its fold names from the dict alone (:func:`fold_names`), so a sweep can be planned and dry-run
without any data; :func:`make_folds` then applies it to the clips of a cache, deterministically.

* ``{"kind": "speaker_kfold", "folds": k}``: speakers sorted naturally (``spk2`` before ``spk10``)
  and split into ``k`` contiguous groups (sizes differ by at most one); fold ``j`` tests group ``j``.
  With RAVDESS's 24 actors and k = 6 that is the community protocol (actors 1-4, 5-8, ..., 21-24);
  CREMA-D's 5 actor-disjoint folds are k = 5.
* ``{"kind": "explicit", "train": [...], "test": [...]}``: one fold with the given speaker lists;
  clips of speakers in neither list are left out.
* ``{"kind": "ravdess_paper"}``: the paper's single hold-out split, 6 test actors. The authors do not
  publish which; we use actors 19-24 (the last six, three male and three female), all others train.
  ``test_actors`` overrides the list.
* ``{"kind": "leave_one_group_out", "groups": [...]}``: one fold per listed group (IEMOCAP sessions:
  ``Session1`` ... ``Session5``), testing the clips whose ``group`` is that value.
* ``{"kind": "split_files", "dir": DIR}``: fixed lists read from files (:mod:`mmder.data.split_files`;
  EmoBox's layout ``DIR/fold_N/<corpus>_{train,valid,test}_fold_N.jsonl``), one fold per ``fold_N``;
  ``rename: {pattern: replacement}`` rewrites the lists' names before they are looked up.
* ``{"kind": "cross_corpus", "test": LABEL, "labels": {test class: training class}}``: train on every
  clip of this dataset, test on the clips of dataset ``LABEL`` whose class is mapped (the others are
  dropped and counted); ``test_idx`` then indexes that dataset's cache (``Fold.test_source``).

Every kind also accepts ``name`` (a prefix for the fold names). A kind that reads more than the
speakers and groups declares it (``inputs``): ``clips`` (each row's ``clip_id`` and ``label``) or
``test_clips`` (the rows of the test corpus); its cell key hashes ``identity(protocol)`` when it
declares one (the files' digest instead of their folder), else the protocol as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol as TypingProtocol

import numpy as np

from mmder.data import split_files

__all__ = [
    "Fold",
    "PROTOCOLS",
    "fold_names",
    "make_folds",
    "natural_key",
    "protocol_identity",
    "protocol_inputs",
    "register_protocol",
    "split_files_have_validation",
    "cross_corpus_targets",
    "validation_split",
]

RAVDESS_PAPER_TEST_ACTORS = (19, 20, 21, 22, 23, 24)


@dataclass(frozen=True)
class Fold:
    """One train/test split of the cache rows (indices are sorted int64 arrays)."""

    name: str
    train_idx: np.ndarray
    test_idx: np.ndarray
    test_speakers: list[str]
    val_idx: np.ndarray | None = None  # rows the protocol names for validation (split files' valid list)
    test_source: str | None = None  # cross_corpus: the dataset whose cache rows ``test_idx`` index
    notes: tuple[str, ...] = ()  # what a person should hear before the work starts


class ClipRow(TypingProtocol):
    """What a split may read of a cache row or listed clip (``CachedClip`` and ``Clip`` both are)."""

    clip_id: str
    label: str
    speaker: str


SplitFn = Callable[..., list[Fold]]  # (protocol, speakers, groups, **declared inputs) -> folds
NamesFn = Callable[[dict], list[str]]
IdentityFn = Callable[[dict], dict]
INPUTS = ("clips", "test_clips")


@dataclass(frozen=True)
class Protocol:
    split: SplitFn
    names: NamesFn
    keys: frozenset[str]
    inputs: frozenset[str] = frozenset()
    identity: IdentityFn | None = None


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(
    kind: str,
    keys: Sequence[str],
    names: NamesFn,
    *,
    inputs: Sequence[str] = (),
    identity: IdentityFn | None = None,
) -> Callable[[SplitFn], SplitFn]:
    """Register ``split(protocol, speakers, groups, **inputs) -> folds`` for ``kind``.

    ``keys`` are the keys it accepts; ``names(protocol)`` gives its fold names without data.
    ``inputs`` names what else the split reads (``clips``, ``test_clips``: sequences of
    :class:`ClipRow`, one per row), passed as keyword arguments. ``identity(protocol)`` is what a cell
    key hashes of it (left out: the protocol as written, so existing keys never change).
    """
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        raise ValueError(f"protocol {kind!r}: unknown input(s) {unknown}; allowed: {', '.join(INPUTS)}")

    def deco(fn: SplitFn) -> SplitFn:
        keyset = frozenset(keys) | {"kind", "name"}
        PROTOCOLS[kind] = Protocol(fn, names, keyset, frozenset(inputs), identity)
        return fn

    return deco


def natural_key(s: str) -> list:
    """Sort key that orders digit runs by value: ``Actor_2`` < ``Actor_10``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(s)) if t]


def _lookup(protocol: dict) -> Protocol:
    if not isinstance(protocol, dict):
        raise ValueError(f"protocol must be a mapping, got {type(protocol).__name__}")
    if "kind" not in protocol:
        raise ValueError(f"protocol: missing key 'kind' (one of {', '.join(sorted(PROTOCOLS))})")
    kind = protocol["kind"]
    if kind not in PROTOCOLS:
        raise ValueError(f"protocol: unknown 'kind' {kind!r}; allowed: {', '.join(sorted(PROTOCOLS))}")
    entry = PROTOCOLS[kind]
    unknown = sorted(set(protocol) - entry.keys)
    if unknown:
        raise ValueError(
            f"protocol {kind!r}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(entry.keys))}"
        )
    return entry


def fold_names(protocol: dict) -> list[str]:
    """The protocol's fold names, from the protocol alone (validates it; ValueError names the key)."""
    return _lookup(protocol).names(protocol)


def protocol_identity(protocol: dict) -> dict:
    """What a cell key hashes of ``protocol``: the kind's ``identity`` or, for most kinds, the protocol."""
    entry = _lookup(protocol)
    return entry.identity(protocol) if entry.identity is not None else protocol


def protocol_inputs(protocol: dict) -> frozenset[str]:
    """What the protocol's split reads beyond speakers and groups (``clips``, ``test_clips``)."""
    return _lookup(protocol).inputs


def make_folds(
    protocol: dict,
    speakers: Sequence[str],
    groups: Sequence[str | None] | None = None,
    *,
    clips: Sequence[ClipRow] | None = None,
    test_clips: Sequence[ClipRow] | None = None,
) -> list[Fold]:
    """Folds of ``protocol`` over clips whose speakers (and groups) are given, one entry per cache row.

    ``clips`` (the rows themselves) and ``test_clips`` (the test corpus's rows) are read by the kinds
    that declare them (``split_files``, ``cross_corpus``); the others ignore them.
    Raises ``ValueError`` naming the offending key for a malformed protocol.
    """
    entry = _lookup(protocol)
    kind = protocol["kind"]
    names = entry.names(protocol)
    groups = list(groups) if groups is not None else [None] * len(speakers)
    given = {"clips": clips, "test_clips": test_clips}
    lacking = sorted(n for n in entry.inputs if given[n] is None)
    if lacking:
        raise ValueError(f"protocol {kind!r} reads the rows' clip ids and labels: pass {', '.join(lacking)}")
    inputs = {n: given[n] for n in entry.inputs}
    folds = entry.split(protocol, [str(s) for s in speakers], groups, **inputs)
    if [f.name for f in folds] != names:
        raise AssertionError(f"protocol {kind!r} made folds {[f.name for f in folds]}, announced {names}")
    for f in folds:
        if len(f.train_idx) == 0 or len(f.test_idx) == 0:
            raise ValueError(f"protocol {kind!r}: fold {f.name} has an empty train or test set")
        if f.test_source is None and np.intersect1d(f.train_idx, f.test_idx).size:
            raise ValueError(f"protocol {kind!r}: fold {f.name} trains and tests on the same clips")
    return folds


def _fold(name: str, speakers: Sequence[str], train: set[str], test: set[str]) -> Fold:
    spk = np.asarray(speakers, dtype=object)
    train_idx = np.flatnonzero(np.isin(spk, list(train))).astype(np.int64)
    test_idx = np.flatnonzero(np.isin(spk, list(test))).astype(np.int64)
    return Fold(name, train_idx, test_idx, sorted(test, key=natural_key))


def _kfold_count(protocol: dict) -> int:
    k = protocol.get("folds")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"protocol 'speaker_kfold': 'folds' must be an integer of at least 2, got {k!r}")
    return k


def _kfold_names(protocol: dict) -> list[str]:
    prefix = protocol.get("name", "fold")
    return [f"{prefix}{j + 1}" for j in range(_kfold_count(protocol))]


@register_protocol("speaker_kfold", keys=("folds",), names=_kfold_names)
def _speaker_kfold(protocol: dict, speakers: Sequence[str], groups: Sequence[str | None]) -> list[Fold]:
    k = _kfold_count(protocol)
    unique = sorted(set(speakers), key=natural_key)
    if k > len(unique):
        raise ValueError(
            f"protocol 'speaker_kfold': 'folds' must be between 2 and {len(unique)} (the speakers), got {k}"
        )
    split = np.array_split(np.array(unique, dtype=object), k)
    names = _kfold_names(protocol)
    folds = []
    for name, g in zip(names, split, strict=True):
        test = {str(s) for s in g}
        folds.append(_fold(name, speakers, set(unique) - test, test))
    return folds


def _speaker_list(protocol: dict, key: str, known: set[str]) -> set[str]:
    value = protocol.get(key)
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ValueError(f"protocol 'explicit': {key!r} must be a non-empty list of speakers, got {value!r}")
    out = {str(v) for v in value}
    unknown = sorted(out - known, key=natural_key)
    if unknown:
        raise ValueError(f"protocol 'explicit': {key!r} names unknown speaker(s) {unknown}")
    return out


def _explicit_names(protocol: dict) -> list[str]:
    for key in ("train", "test"):
        value = protocol.get(key)
        if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
            raise ValueError(
                f"protocol 'explicit': {key!r} must be a non-empty list of speakers, got {value!r}"
            )
    return [protocol.get("name", "explicit")]


@register_protocol("explicit", keys=("train", "test"), names=_explicit_names)
def _explicit(protocol: dict, speakers: Sequence[str], groups: Sequence[str | None]) -> list[Fold]:
    known = set(speakers)
    train = _speaker_list(protocol, "train", known)
    test = _speaker_list(protocol, "test", known)
    both = sorted(train & test, key=natural_key)
    if both:
        raise ValueError(f"protocol 'explicit': speaker(s) {both} are in both 'train' and 'test'")
    return [_fold(_explicit_names(protocol)[0], speakers, train, test)]


def _actor_number(speaker: str) -> int | None:
    digits = re.findall(r"\d+", speaker)
    return int(digits[-1]) if digits else None


def _ravdess_paper_names(protocol: dict) -> list[str]:
    actors = protocol.get("test_actors", list(RAVDESS_PAPER_TEST_ACTORS))
    if not isinstance(actors, list | tuple) or not actors or not all(isinstance(a, int) for a in actors):
        raise ValueError(
            f"protocol 'ravdess_paper': 'test_actors' must be a list of actor numbers, got {actors!r}"
        )
    return [protocol.get("name", "paper-holdout")]


@register_protocol("ravdess_paper", keys=("test_actors",), names=_ravdess_paper_names)
def _ravdess_paper(protocol: dict, speakers: Sequence[str], groups: Sequence[str | None]) -> list[Fold]:
    actors = set(protocol.get("test_actors", RAVDESS_PAPER_TEST_ACTORS))
    unique = set(speakers)
    test = {s for s in unique if _actor_number(s) in actors}
    return [_fold(_ravdess_paper_names(protocol)[0], speakers, unique - test, test)]


def _group_names(protocol: dict) -> list[str]:
    value = protocol.get("groups")
    if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) < 2:
        raise ValueError(
            "protocol 'leave_one_group_out': 'groups' must list at least 2 groups (e.g. IEMOCAP sessions), "
            f"got {value!r}"
        )
    return [str(g) for g in value]


@register_protocol("leave_one_group_out", keys=("groups",), names=_group_names)
def _leave_one_group_out(protocol: dict, speakers: Sequence[str], groups: Sequence[str | None]) -> list[Fold]:
    names = _group_names(protocol)
    clip_groups = np.asarray([str(g) if g is not None else "" for g in groups], dtype=object)
    folds = []
    for name in names:
        test_mask = clip_groups == name
        train_mask = np.isin(clip_groups, names) & ~test_mask
        test_speakers = sorted({speakers[i] for i in np.flatnonzero(test_mask)}, key=natural_key)
        folds.append(
            Fold(
                name,
                np.flatnonzero(train_mask).astype(np.int64),
                np.flatnonzero(test_mask).astype(np.int64),
                test_speakers,
            )
        )
    return folds


def _split_root(protocol: dict) -> Path:
    value = protocol.get("dir")
    if not isinstance(value, str) or not value:
        raise ValueError(f"protocol 'split_files': 'dir' must be the folder of the list files, got {value!r}")
    return Path(value).expanduser()


def _rename(protocol: dict) -> list[tuple[re.Pattern, str]]:
    """``rename: {pattern: replacement}``: regular expressions applied to a line's names before they
    are looked up (RAVDESS's full-AV clips for EmoBox's audio-only names: ``{"^03-": "01-"}``)."""
    value = protocol.get("rename", {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"protocol 'split_files': 'rename' must map patterns to replacements, got {value!r}")
    try:
        return [(re.compile(k), v) for k, v in value.items()]
    except re.error as err:
        raise ValueError(f"protocol 'split_files': 'rename' holds a bad pattern: {err}") from None


def _split_files_names(protocol: dict) -> list[str]:
    root = _split_root(protocol)
    _rename(protocol)
    folders = split_files.fold_folders(root)
    for n, folder in folders:
        split_files.fold_files(folder, n)  # each fold has its train and test list
    prefix = protocol.get("name")
    return [f"{prefix}{n}" if prefix else folder.name for n, folder in folders]


def _split_files_identity(protocol: dict) -> dict:
    """The lists' digest instead of their folder: an edited list makes new cells, a moved one not."""
    identity = {k: v for k, v in protocol.items() if k != "dir"}
    identity["files"] = split_files.files_digest(_split_root(protocol))
    return identity


def split_files_have_validation(protocol: dict) -> bool:
    """Whether a ``split_files`` protocol's folds carry validation lists (False for other kinds)."""
    if protocol.get("kind") != "split_files":
        return False
    folders = split_files.fold_folders(_split_root(protocol))
    return any("valid" in split_files.fold_files(folder, n) for n, folder in folders)


@register_protocol(
    "split_files",
    keys=("dir", "rename"),
    names=_split_files_names,
    inputs=("clips",),
    identity=_split_files_identity,
)
def _split_files(
    protocol: dict, speakers: Sequence[str], groups: Sequence[str | None], *, clips: Sequence[ClipRow]
) -> list[Fold]:
    root = _split_root(protocol)
    rows = {c.clip_id: i for i, c in enumerate(clips)}
    rename = _rename(protocol)
    label_map = split_files.read_label_map(root)
    folds = []
    for name, (n, folder) in zip(_split_files_names(protocol), split_files.fold_folders(root), strict=True):
        files = split_files.fold_files(folder, n)
        named = {  # role -> (entry, its row or None)
            role: [(e, _row_of(e, rows, rename)) for e in split_files.read_entries(path)]
            for role, path in files.items()
        }
        _no_missing(named, clips)
        idx = {
            role: np.unique(np.asarray([r for _, r in pairs], dtype=np.int64))
            for role, pairs in named.items()
        }
        spk = {role: {speakers[i] for i in ix} for role, ix in idx.items()}
        for role in ("train", "valid"):
            shared = sorted(spk.get(role, set()) & spk["test"], key=natural_key)
            if shared:
                raise ValueError(
                    f"protocol 'split_files': {folder.name}: test speaker(s) {shared} also appear in its "
                    f"{role} list ({files[role].name}); a test speaker must be held out of training and "
                    "validation"
                )
        notes = _label_notes(folder.name, named, clips, label_map)
        test_speakers = sorted(spk["test"], key=natural_key)
        folds.append(Fold(name, idx["train"], idx["test"], test_speakers, idx.get("valid"), notes=notes))
    return folds


def _row_of(
    entry: split_files.Entry, rows: dict[str, int], rename: list[tuple[re.Pattern, str]]
) -> int | None:
    """The row a line names: the clip whose id is its ``key``, else its ``wav``'s stem (renamed first)."""
    for name in (entry.key, entry.stem):
        if name is None:
            continue
        for pattern, replacement in rename:
            name = pattern.sub(replacement, name)
        if name in rows:
            return rows[name]
    return None


def _no_missing(named: dict[str, list], clips: Sequence[ClipRow]) -> None:
    """Every line names a clip of the corpus; the error names the lines that do not."""
    missing = [e.shown for pairs in named.values() for e, row in pairs if row is None]
    if missing:
        like = ", ".join(c.clip_id for c in list(clips)[:3])
        raise ValueError(
            f"protocol 'split_files': {len(missing)} clip(s) named in the lists are not in the corpus, e.g. "
            f"{'; '.join(missing[:3])}. A line names the clip whose id is its 'key', else its 'wav' file "
            f"name without extension (after 'rename'); this corpus's clip ids look like {like}"
        )


def _label_notes(
    fold: str, named: dict[str, list], clips: Sequence[ClipRow], label_map: dict[str, str]
) -> tuple[str, ...]:
    """A note when listed ``emo`` values disagree with the corpus's labels (which are the ones used)."""
    differ: dict[tuple[str, str], int] = {}
    for pairs in named.values():
        for e, row in pairs:
            if e.emo is None:
                continue
            label = clips[row].label
            said = {e.emo.lower(), label_map.get(e.emo, e.emo).lower()}
            if label.lower() not in said:
                differ[(e.emo, label)] = differ.get((e.emo, label), 0) + 1
    if not differ:
        return ()
    pairs = ", ".join(f"{emo!r} on {n} clip(s) labelled {lab!r}" for (emo, lab), n in sorted(differ.items()))
    return (
        f"{fold}: the lists' emo differs from the corpus's label ({pairs}); the corpus's labels are used",
    )


def _cross_labels(protocol: dict) -> dict[str, str]:
    value = protocol.get("labels")
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise ValueError(
            "protocol 'cross_corpus': 'labels' must map each test-corpus class to a training class "
            f"({{test class: training class, ...}}), got {value!r}"
        )
    return value


def _cross_corpus_names(protocol: dict) -> list[str]:
    test = protocol.get("test")
    if not isinstance(test, str) or not test:
        raise ValueError(
            f"protocol 'cross_corpus': 'test' must name the dataset tested on (its name), got {test!r}"
        )
    _cross_labels(protocol)
    return [protocol.get("name", f"cross-{test}")]


def _cross_corpus_identity(protocol: dict) -> dict:
    """The label map, not the test dataset's display name (the cell key hashes that dataset itself)."""
    return {k: v for k, v in protocol.items() if k != "test"}


@register_protocol(
    "cross_corpus",
    keys=("test", "labels"),
    names=_cross_corpus_names,
    inputs=("clips", "test_clips"),
    identity=_cross_corpus_identity,
)
def _cross_corpus(
    protocol: dict,
    speakers: Sequence[str],
    groups: Sequence[str | None],
    *,
    clips: Sequence[ClipRow],
    test_clips: Sequence[ClipRow],
) -> list[Fold]:
    labels, test = _cross_labels(protocol), protocol["test"]
    trained = {c.label for c in clips}
    tested = {c.label for c in test_clips}
    unknown = sorted(set(labels) - tested)
    if unknown:
        raise ValueError(
            f"protocol 'cross_corpus': 'labels' maps class(es) {unknown} that dataset {test!r} does not "
            f"have; its classes: {', '.join(sorted(tested))}"
        )
    untrained = sorted(set(labels.values()) - trained)
    if untrained:
        raise ValueError(
            f"protocol 'cross_corpus': 'labels' maps to class(es) {untrained} that the training corpus has "
            f"no clip of; its classes: {', '.join(sorted(trained))}"
        )
    test_idx = np.asarray([i for i, c in enumerate(test_clips) if c.label in labels], dtype=np.int64)
    dropped: dict[str, int] = {}
    for c in test_clips:
        if c.label not in labels:
            dropped[c.label] = dropped.get(c.label, 0) + 1
    notes = ()
    if dropped:
        counts = ", ".join(f"{label} ({n})" for label, n in sorted(dropped.items()))
        notes = (
            f"cross_corpus: {sum(dropped.values())} test clip(s) of {test!r} dropped, their class is not in "
            f"'labels': {counts}",
        )
    test_speakers = sorted({test_clips[i].speaker for i in test_idx}, key=natural_key)
    train_idx = np.arange(len(clips), dtype=np.int64)
    name = _cross_corpus_names(protocol)[0]
    return [Fold(name, train_idx, test_idx, test_speakers, test_source=test, notes=notes)]


def cross_corpus_targets(
    protocol: dict, train_classes: Sequence[str], test_classes: Sequence[str]
) -> list[int]:
    """cross_corpus: per test-corpus class index, the training class index it counts as (-1: dropped)."""
    labels = _cross_labels(protocol)
    index = {c: i for i, c in enumerate(train_classes)}
    return [index[labels[c]] if c in labels and labels[c] in index else -1 for c in test_classes]


def validation_split(
    speakers: Sequence[str], train_idx: np.ndarray, count: int | float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training rows into (train, validation) by speaker, never sharing one.

    ``count`` >= 1 holds out that many speakers; 0 < ``count`` < 1 holds out that share of them
    (at least one). Which speakers is drawn from ``seed`` over the naturally sorted speaker list, so
    the split is the same on every machine; RAVDESS actors alternate male/female, and the draw keeps
    both sexes in the validation set whenever it holds two or more (odd and even numbers are drawn in
    turn). At least one speaker always stays for training. Indices come back sorted (int64). A model
    selected on the validation rows never looks at the fold's test speakers.
    """
    rows = np.asarray(train_idx, dtype=np.int64)
    spk = np.asarray([str(speakers[i]) for i in rows], dtype=object)
    unique = sorted(set(spk.tolist()), key=natural_key)
    if isinstance(count, bool) or count <= 0:
        raise ValueError(f"validation count must be > 0 (speakers, or a share below 1), got {count!r}")
    k = int(count) if count >= 1 else max(1, int(round(count * len(unique))))
    if k >= len(unique):
        raise ValueError(
            f"cannot hold out {k} validation speaker(s) from {len(unique)} training speaker(s): "
            "at least one must stay for training"
        )
    rng = np.random.default_rng([seed, 0x7A1])
    halves = [unique[0::2], unique[1::2]]  # alternate speakers (RAVDESS: male / female actors)
    order = [list(rng.permutation(len(h))) for h in halves]
    chosen: list[str] = []
    turn = int(rng.integers(2))
    while len(chosen) < k:
        if order[turn]:
            chosen.append(halves[turn][order[turn].pop(0)])
        turn = 1 - turn
    val_mask = np.isin(spk, chosen)
    return np.sort(rows[~val_mask]), np.sort(rows[val_mask])
