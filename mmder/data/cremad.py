"""CREMA-D adapter: ``VideoFlash/*.flv`` clips with their ``AudioWAV``/``AudioMP3`` audio, matched by name.

Names are ``<actor>_<sentence>_<emotion>_<level>`` (``1001_DFA_ANG_XX``): actor 1001..1091, one of
12 sentences, emotion ANG DIS FEA HAP NEU SAD, level LO MD HI or XX (unspecified). The audio of a
clip is the wav of the same name, else the mp3, else the flv's own mp3 track (the official flv files
carry one), so a copy without the audio folders still gives audio-visual clips. Audio files without
a video give audio-only clips. Files are searched anywhere below the root, so the usual folders are
found whether or not the corpus was unpacked exactly as published.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from mmder.data.corpora import Clip, CorpusListing, modalities_from_option, register_corpus, walk_files
from mmder.data.folds import natural_key

__all__ = ["EMOTIONS", "CODES", "parse_name", "list_cremad"]

CODES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
EMOTIONS = ("anger", "disgust", "fear", "happy", "neutral", "sad")
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified", "X": "unspecified"}
VIDEO_EXTS = (".flv", ".mp4")
AUDIO_EXTS = (".wav", ".mp3")  # preference order when both exist

_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")


def parse_name(stem: str) -> dict[str, str]:
    """The fields of a CREMA-D file name (without extension); ``ValueError`` says what is wrong."""
    m = _NAME.match(stem)
    if not m:
        raise ValueError("name is not <actor>_<sentence>_<emotion>_<level>, e.g. 1001_DFA_ANG_XX")
    actor, sentence, code, level = m.groups()
    if code not in CODES:
        raise ValueError(f"unknown emotion code {code!r} (one of {', '.join(CODES)})")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r} (LO, MD, HI or XX)")
    return {
        "actor": actor,
        "sentence": sentence,
        "emotion": EMOTIONS[CODES.index(code)],
        "level": LEVELS[level],
    }


@register_corpus("cremad", modalities=modalities_from_option, classes=6)
def list_cremad(root: Path, *, modality: Literal["av", "video", "audio", "all"] = "all") -> CorpusListing:
    """CREMA-D under ``root``.

    ``modality``: ``av`` (clips with a video; audio from the wav/mp3 or the video's own track),
    ``video`` (video only), ``audio`` (audio only: the audio file, or the video's track when there is
    none) or ``all`` (``av`` plus audio-only clips for audio files that have no video).
    Speaker = the actor id (``1001``); ``extra`` holds sentence, level and where the audio came from.
    """
    if modality not in ("av", "video", "audio", "all"):
        raise ValueError(f"cremad: modality must be av, video, audio or all, got {modality!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"cremad: no folder {root}")
    videos: dict[str, Path] = {}
    audios: dict[str, Path] = {}
    files = sorted(walk_files(root), key=lambda p: natural_key(str(p)))
    listing = CorpusListing(list(EMOTIONS), [], seen=len(files))
    for p in files:
        ext = p.suffix.lower()
        table = videos if ext in VIDEO_EXTS else audios if ext in AUDIO_EXTS else None
        if table is None or not p.is_file():
            listing.reject("not audio or video files (READMEs, checksums, ...)")
            continue
        prev = table.get(p.stem)
        if prev is None:
            table[p.stem] = p
            continue
        kinds = VIDEO_EXTS if table is videos else AUDIO_EXTS
        first, second = sorted([prev, p], key=lambda q: (kinds.index(q.suffix.lower()), natural_key(str(q))))
        table[p.stem] = first
        reason = f"another file of the same name is used: {first.absolute()}"
        listing.reject("files of the same name as another", str(second.absolute()), reason)
    clips = listing.clips
    for stem in sorted(set(videos) | set(audios), key=natural_key):
        video, audio = videos.get(stem), audios.get(stem)
        where = str((video or audio).absolute())
        try:
            f = parse_name(stem)
        except ValueError as exc:
            n = 2 if video is not None and audio is not None else 1
            kind = "not named like CREMA-D (<actor>_<sentence>_<emotion>_<level>, e.g. 1001_DFA_ANG_XX)"
            listing.reject(kind, where, f"name {stem!r}: {exc}")
            listing.rejected[kind] += n - 1  # the video and audio file of one name are one entry
            continue
        if video is None and modality in ("av", "video"):
            reason = f"audio without a video left out (modality: {modality})"
            listing.reject(f"audio files without a video left out (modality: {modality})", where, reason)
            continue
        if video is not None and audio is None and modality != "video":
            audio, source = video, "video track"
        else:
            source = "video track" if audio is None else audio.suffix.lower().lstrip(".")
        v = str(video.absolute()) if video is not None and modality in ("av", "video", "all") else None
        a = str(audio.absolute()) if audio is not None and modality != "video" else None
        clips.append(
            Clip(
                clip_id=stem,
                video=v,
                audio=a,
                label=f["emotion"],
                speaker=f["actor"],
                extra=(
                    ("sentence", f["sentence"]),
                    ("level", f["level"]),
                    ("audio_source", source if a is not None else "none"),
                ),
            )
        )
    return listing
