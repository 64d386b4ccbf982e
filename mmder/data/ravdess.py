"""RAVDESS adapter: clips, labels and actors from the seven fields of the official file names.

``MM-CC-EE-II-SS-RR-AA.ext``: modality (01 full-AV, 02 video-only, 03 audio-only), vocal channel
(01 speech, 02 song), emotion (01 neutral ... 08 surprised), intensity (01 normal, 02 strong),
statement (01 "Kids are talking by the door", 02 "Dogs are sitting by the door"), repetition (01, 02),
actor (01..24; odd male, even female). Files may sit in the official ``Actor_XX/`` folders or
anywhere below the root. A suffix after the seven fields (``..-01_1.mp4``, as in re-encoded copies)
is ignored. Full-AV ``01`` files give video and audio from the same mp4; ``02`` files are silent
video; ``03`` files are audio (wav, flac, ...).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from mmder.data.corpora import (
    Clip,
    CorpusListing,
    classes_option,
    modalities_from_option,
    register_corpus,
    walk_files,
)
from mmder.data.folds import natural_key

__all__ = ["EMOTIONS", "EMOTIONS_7", "parse_name", "list_ravdess"]

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
# The paper's (authors' code) 7 classes: calm merged into neutral.
EMOTIONS_7 = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")

MODALITIES = {"01": "av", "02": "video", "03": "audio"}
CHANNELS = {"01": "speech", "02": "song"}
INTENSITIES = {"01": "normal", "02": "strong"}
VIDEO_EXTS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".flv"})
AUDIO_EXTS = frozenset({".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"})

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})(?:[^0-9].*)?$")


def parse_name(stem: str) -> dict[str, str]:
    """The fields of a RAVDESS file name (without extension); ``ValueError`` says what is wrong."""
    m = _NAME.match(stem)
    if not m:
        raise ValueError("name does not have the 7 RAVDESS fields MM-CC-EE-II-SS-RR-AA")
    mod, chan, emo, inten, stmt, rep, actor = m.groups()
    if mod not in MODALITIES:
        raise ValueError(f"unknown modality field {mod!r} (01 AV, 02 video, 03 audio)")
    if chan not in CHANNELS:
        raise ValueError(f"unknown vocal channel field {chan!r} (01 speech, 02 song)")
    if not 1 <= int(emo) <= len(EMOTIONS):
        raise ValueError(f"unknown emotion field {emo!r} (01..08)")
    if inten not in INTENSITIES:
        raise ValueError(f"unknown intensity field {inten!r} (01 normal, 02 strong)")
    if stmt not in ("01", "02") or rep not in ("01", "02"):
        raise ValueError(f"unknown statement/repetition fields {stmt!r}/{rep!r} (01 or 02)")
    if not 1 <= int(actor) <= 99:
        raise ValueError(f"unknown actor field {actor!r}")
    return {
        "id": "-".join(m.groups()),
        "modality": MODALITIES[mod],
        "channel": CHANNELS[chan],
        "emotion": EMOTIONS[int(emo) - 1],
        "intensity": INTENSITIES[inten],
        "statement": stmt,
        "repetition": rep,
        "actor": actor,
    }


_NOT_RAVDESS = "not named like RAVDESS (MM-CC-EE-II-SS-RR-AA, e.g. 03-01-05-01-02-01-12.wav)"


@register_corpus("ravdess", modalities=modalities_from_option, classes=classes_option)
def list_ravdess(
    root: Path,
    *,
    classes: Literal[7, 8] = 8,
    modality: Literal["auto", "av", "video", "audio", "all"] = "auto",
    include_song: bool = False,
) -> CorpusListing:
    """RAVDESS under ``root``.

    ``classes``: 8 (the corpus's emotions) or 7 (calm merged into neutral, as the paper).
    ``modality``: ``av`` (full-AV 01 files), ``video`` (02), ``audio`` (03), ``all`` (every file
    found) or ``auto`` (default): the full-AV files when there are any, else all that exist. Why
    ``auto``: the official video download holds a full-AV and a silent copy of every performance, and
    listing both would count each visual clip twice and make every audio setting fail on the silent
    ones. ``include_song``: also the song recordings (channel 02). Speaker = ``Actor_XX`` and
    ``extra`` holds modality, channel, intensity, statement, repetition and gender. Files that do
    not parse, that a filter leaves out, or that repeat a clip are listed in ``skipped``.
    """
    _check_options(root, classes, modality)
    files = walk_files(root)
    listing = CorpusListing(list(EMOTIONS if classes == 8 else EMOTIONS_7), [], seen=len(files))
    parsed = _parse_files(listing, root, files)
    chosen, why = _resolve_modality(modality, parsed, include_song)
    seen: dict[str, str] = {}
    for path, where, f in parsed:
        problem = _file_problem(
            path, f, seen, chosen=chosen, asked=modality, why=why, include_song=include_song
        )
        if problem is not None:
            listing.reject(problem[0], where, problem[1])
            continue
        seen[f["id"]] = where
        listing.clips.append(_clip(f, where, classes))
    return listing


def _check_options(root: Path, classes: int, modality: str) -> None:
    """Refuse unknown options and a missing root before anything is listed."""
    if classes not in (7, 8):
        raise ValueError(f"ravdess: classes must be 7 or 8, got {classes!r}")
    if modality not in ("auto", "av", "video", "audio", "all"):
        raise ValueError(f"ravdess: modality must be auto, av, video, audio or all, got {modality!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"ravdess: no folder {root}")


def _parse_files(
    listing: CorpusListing, root: Path, files: list[Path]
) -> list[tuple[Path, str, dict[str, str]]]:
    """(path, absolute path, name fields) of each media file, in natural order; the rest go to ``listing``."""
    parsed: list[tuple[Path, str, dict[str, str]]] = []
    for path in sorted(files, key=lambda p: natural_key(str(p.relative_to(root)))):
        if path.suffix.lower() not in VIDEO_EXTS | AUDIO_EXTS or not path.is_file():
            listing.reject("not audio or video files (READMEs, checksums, ...)")
            continue
        where = str(path.absolute())
        try:
            parsed.append((path, where, parse_name(path.stem)))
        except ValueError as exc:
            listing.reject(_NOT_RAVDESS, where, f"name {path.name!r}: {exc}")
    return parsed


def _resolve_modality(
    modality: str, parsed: list[tuple[Path, str, dict[str, str]]], include_song: bool
) -> tuple[str, str]:
    """The modality to keep, ``auto`` resolved on the files found, and the reason to give for leaving out."""
    if modality != "auto":
        return modality, f"modality: {modality}"
    has_av = any(f["modality"] == "av" and (include_song or f["channel"] == "speech") for _, _, f in parsed)
    why = "modality: auto keeps the full-AV files when there are any; modality: all keeps every file"
    return ("av" if has_av else "all"), why


def _file_problem(
    path: Path,
    f: dict[str, str],
    seen: dict[str, str],
    *,
    chosen: str,
    asked: str,
    why: str,
    include_song: bool,
) -> tuple[str, str] | None:
    """(kind, reason) when a parsed file is no clip here: filtered out, a wrong extension or a repeat."""
    ext = path.suffix.lower()
    if f["channel"] == "song" and not include_song:
        reason = "song recording (vocal channel 02) left out; include_song: true keeps it"
        return "song files left out (include_song: false)", reason
    if chosen != "all" and f["modality"] != chosen:
        kind = f"{f['modality']} files left out (modality: {asked})"
        return kind, f"modality {f['modality']} left out ({why})"
    if f["modality"] == "audio" and ext not in AUDIO_EXTS:
        reason = f"audio-only file (modality 03) with a video extension {ext}"
        return "audio-only files with a video extension", reason
    if f["modality"] != "audio" and ext not in VIDEO_EXTS:
        reason = f"video file (modality {f['modality']}) with an audio extension {ext}"
        return "video files with an audio extension", reason
    if f["id"] in seen:
        return "repeats of a clip (same 7 fields)", f"duplicate of {seen[f['id']]} (same 7 fields)"
    return None


def _clip(f: dict[str, str], where: str, classes: int) -> Clip:
    """The clip of one kept file; with 7 classes calm is neutral (``extra`` keeps the corpus's emotion)."""
    label = f["emotion"]
    if classes == 7 and label == "calm":
        label = "neutral"
    gender = "male" if int(f["actor"]) % 2 else "female"
    return Clip(
        clip_id=f["id"],
        video=where if f["modality"] in ("av", "video") else None,
        audio=where if f["modality"] in ("av", "audio") else None,
        label=label,
        speaker=f"Actor_{f['actor']}",
        extra=(
            ("modality", f["modality"]),
            ("channel", f["channel"]),
            ("emotion", f["emotion"]),
            ("intensity", f["intensity"]),
            ("statement", f["statement"]),
            ("repetition", f["repetition"]),
            ("gender", gender),
        ),
    )
