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

Every kind also accepts ``name`` (a prefix for the fold names).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Fold",
    "PROTOCOLS",
    "fold_names",
    "make_folds",
    "natural_key",
    "register_protocol",
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


SplitFn = Callable[[dict, Sequence[str], Sequence[str | None]], list[Fold]]
NamesFn = Callable[[dict], list[str]]


@dataclass(frozen=True)
class Protocol:
    split: SplitFn
    names: NamesFn
    keys: frozenset[str]


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(kind: str, keys: Sequence[str], names: NamesFn) -> Callable[[SplitFn], SplitFn]:
    """Register ``split(protocol, speakers, groups) -> folds`` for ``kind``.

    ``keys`` are the keys it accepts; ``names(protocol)`` gives its fold names without data.
    """

    def deco(fn: SplitFn) -> SplitFn:
        PROTOCOLS[kind] = Protocol(fn, names, frozenset(keys) | {"kind", "name"})
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


def make_folds(
    protocol: dict, speakers: Sequence[str], groups: Sequence[str | None] | None = None
) -> list[Fold]:
    """Folds of ``protocol`` over clips whose speakers (and groups) are given, one entry per cache row.

    Raises ``ValueError`` naming the offending key for a malformed protocol.
    """
    entry = _lookup(protocol)
    kind = protocol["kind"]
    names = entry.names(protocol)
    groups = list(groups) if groups is not None else [None] * len(speakers)
    folds = entry.split(protocol, [str(s) for s in speakers], groups)
    if [f.name for f in folds] != names:
        raise AssertionError(f"protocol {kind!r} made folds {[f.name for f in folds]}, announced {names}")
    for f in folds:
        if len(f.train_idx) == 0 or len(f.test_idx) == 0:
            raise ValueError(f"protocol {kind!r}: fold {f.name} has an empty train or test set")
        if np.intersect1d(f.train_idx, f.test_idx).size:
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
