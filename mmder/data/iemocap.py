"""IEMOCAP adapter: one clip per utterance of the dialog recordings, cut by time and by speaker side.

Layout (as published, ``IEMOCAP_full_release``)::

    SessionN/dialog/EmoEvaluation/<dialog>.txt  utterance lines, tab-separated:
        [6.2901 - 8.2357]  Ses01F_impro01_F000  neu  [2.5, 2.5, 2.5]
    SessionN/dialog/avi/DivX/<dialog>.avi       both actors side by side
    SessionN/dialog/wav/<dialog>.wav            the dialog's audio

Each utterance becomes a :class:`~mmder.data.corpora.Clip` of the dialog's avi and wav with ``extra``
``start_s``/``end_s`` (the cache cuts the segment) and ``crop`` (the speaking actor's half).

Which half. The utterance's speaker is the letter after its last underscore (``..._F000``: the
session's female actor); the letter in the dialog name (``Ses01F_...``) names the actor who wore the
motion-capture markers in that dialog. IEMOCAP's documentation does not say which camera is on which
side; public preprocessing scripts crop the marker-wearing actor from the LEFT half and the other one
from the right, and that is the default here (``speaker_side: marker_left``). ``marker_right`` swaps
the halves; ``full`` keeps the whole frame (no crop). Check one dialog of your copy before a long run.

Labels: the usual 4 classes, neutral, happy (happy + excited), angry, sad. Utterances with any other
label (frustrated, surprised, fear, disgust, other, xxx = no agreement) are left out and counted in
``skipped`` with the reason. Speaker = session + actor letter (``Ses01F``); group = ``Session1..5``
for leave-one-session-out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mmder.data.corpora import Clip, CorpusListing, modalities_from_option, register_corpus
from mmder.data.folds import natural_key

__all__ = ["CLASSES_4", "LABEL_MAP_4", "parse_evaluation", "list_iemocap", "SPEAKER_SIDES"]

CLASSES_4 = ("neutral", "happy", "angry", "sad")
LABEL_MAP_4 = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
LABEL_NAMES = {
    "fru": "frustrated",
    "sur": "surprised",
    "fea": "fear",
    "dis": "disgust",
    "oth": "other",
    "xxx": "no majority label",
}
SPEAKER_SIDES = ("marker_left", "marker_right", "full")

_LINE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d*)?)\s*-\s*(?P<end>\d+(?:\.\d*)?)\s*\]\s+(?P<utt>\S+)\s+(?P<label>\S+)"
)
_DIALOG = re.compile(r"^Ses(?P<session>\d{2})(?P<marker>[FM])_")
_UTT_SPEAKER = re.compile(r"_(?P<speaker>[FM])\d*$")


def parse_evaluation(path: Path) -> list[tuple[float, float, str, str]]:
    """``(start_s, end_s, utterance_id, label)`` for each utterance line of an EmoEvaluation file."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LINE.match(line.strip())
        if m:
            out.append((float(m["start"]), float(m["end"]), m["utt"], m["label"]))
    return out


def _half(marker: str, speaker: str, side: str) -> tuple[float, float, float, float] | None:
    if side == "full":
        return None
    left = (speaker == marker) == (side == "marker_left")
    return (0.0, 0.0, 0.5, 1.0) if left else (0.5, 0.0, 1.0, 1.0)


@register_corpus("iemocap", modalities=modalities_from_option, classes=len(CLASSES_4))
def list_iemocap(
    root: Path,
    *,
    speaker_side: Literal["marker_left", "marker_right", "full"] = "marker_left",
    modality: Literal["av", "video", "audio"] = "av",
    sessions: list[int] | None = None,
) -> CorpusListing:
    """IEMOCAP under ``root`` (the folder holding ``Session1`` ... ``Session5``).

    ``speaker_side``: which half of the side-by-side video shows the speaker (see module docstring).
    ``modality``: ``av``, ``video`` or ``audio``. ``sessions``: only these session numbers.
    """
    _check_options(root, speaker_side, modality)
    session_dirs = _session_dirs(root, sessions)
    what = "utterance lines in SessionN/dialog/EmoEvaluation/*.txt"
    listing = CorpusListing(list(CLASSES_4), [], seen=0, seen_what=what)
    seen: set[str] = set()
    for sdir in session_dirs:
        evals = sorted((sdir / "dialog" / "EmoEvaluation").glob("*.txt"), key=lambda p: natural_key(p.name))
        for ev in evals:
            opened = _open_dialog(listing, sdir, ev, modality)
            if opened is None:
                continue
            dialog, rows = opened
            listing.seen = (listing.seen or 0) + len(rows)
            for row in rows:
                problem = _utterance_problem(dialog, row, seen)
                if problem is not None:
                    listing.reject(problem[0], f"{dialog.where}#{row[2]}", problem[1])
                    continue
                seen.add(row[2])
                listing.clips.append(_utterance_clip(dialog, row, modality, speaker_side))
    if not session_dirs:
        listing.rejected["no Session1..Session5 folder below the root"] = 0  # said without a count
    return listing


@dataclass(frozen=True)
class _Dialog:
    """One dialog's recording: its name, session, marker-wearing actor, media files and evaluation file."""

    name: str
    session: str  # two digits, as in the dialog name
    marker: str  # F or M
    avi: Path
    wav: Path
    group: str  # SessionN
    where: str  # the EmoEvaluation file, absolute


def _check_options(root: Path, speaker_side: str, modality: str) -> None:
    """Refuse unknown options and a missing root before anything is listed."""
    if speaker_side not in SPEAKER_SIDES:
        raise ValueError(
            f"iemocap: speaker_side must be one of {', '.join(SPEAKER_SIDES)}, got {speaker_side!r}"
        )
    if modality not in ("av", "video", "audio"):
        raise ValueError(f"iemocap: modality must be av, video or audio, got {modality!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"iemocap: no folder {root}")


def _session_dirs(root: Path, sessions: list[int] | None) -> list[Path]:
    """The ``Session*`` folders in natural order, only the ``sessions`` asked for when given."""
    session_dirs = sorted((p for p in root.glob("Session*") if p.is_dir()), key=lambda p: natural_key(p.name))
    if sessions is None:
        return session_dirs
    wanted = {int(s) for s in sessions}
    return [p for p in session_dirs if p.name[len("Session") :].isdigit() and int(p.name[7:]) in wanted]


def _open_dialog(
    listing: CorpusListing, sdir: Path, ev: Path, modality: str
) -> tuple[_Dialog, list[tuple[float, float, str, str]]] | None:
    """The dialog of evaluation file ``ev`` and its utterance lines; None (and why, in ``listing``) when
    its name, its media files for ``modality`` or its lines are not usable."""
    name = ev.stem
    where = str(ev.absolute())
    m = _DIALOG.match(name)
    if not m:
        listing.reject(
            "dialogs not named Ses<NN><F|M>_...", where, f"dialog name {name!r} is not Ses<NN><F|M>_..."
        )
        return None
    avi = sdir / "dialog" / "avi" / "DivX" / f"{name}.avi"
    wav = sdir / "dialog" / "wav" / f"{name}.wav"
    need = {"av": (avi, wav), "video": (avi,), "audio": (wav,)}[modality]
    missing = [p for p in need if not p.is_file()]
    if missing:
        reason = f"dialog {name}: file not found: {missing[0]}"
        listing.reject(f"dialogs without their {'/'.join(p.suffix for p in need)} file", where, reason)
        return None
    try:
        rows = parse_evaluation(ev)
    except OSError as exc:
        listing.reject("unreadable EmoEvaluation files", where, f"cannot read: {exc}")
        return None
    if not rows:
        listing.reject("EmoEvaluation files without an utterance line", where, "no utterance line found")
        return None
    return _Dialog(name, m["session"], m["marker"], avi, wav, sdir.name, where), rows


def _utterance_problem(
    dialog: _Dialog, row: tuple[float, float, str, str], seen: set[str]
) -> tuple[str, str] | None:
    """(kind, reason) when an utterance line cannot be a clip: label, speaker, time range or a repeat."""
    start, end, utt, raw = row
    if raw not in LABEL_MAP_4:
        reason = f"label {raw!r} ({LABEL_NAMES.get(raw, raw)}) not in the 4-class map"
        return "utterances with a label outside the 4 classes", reason
    if _UTT_SPEAKER.search(utt) is None or not utt.startswith(dialog.name):
        return "utterance ids without a speaker", f"utterance id {utt!r} does not name its speaker"
    if end - start <= 0:
        return "utterances with an empty time range", f"empty time range [{start} - {end}]"
    if utt in seen:
        return "repeated utterance ids", f"duplicate utterance id {utt!r}"
    return None


def _utterance_clip(
    dialog: _Dialog, row: tuple[float, float, str, str], modality: str, speaker_side: str
) -> Clip:
    """The clip of a usable utterance line: the dialog's media, cut to its time range and speaker's half."""
    start, end, utt, raw = row
    su = _UTT_SPEAKER.search(utt)
    assert su is not None  # _utterance_problem checked it
    speaker = su["speaker"]
    extra: list[tuple[str, object]] = [("start_s", start), ("end_s", end)]
    crop = _half(dialog.marker, speaker, speaker_side)
    if crop is not None and modality != "audio":
        extra.append(("crop", crop))
    extra += [("dialog", dialog.name), ("raw_label", raw)]
    return Clip(
        clip_id=utt,
        video=str(dialog.avi.absolute()) if modality != "audio" else None,
        audio=str(dialog.wav.absolute()) if modality != "video" else None,
        label=LABEL_MAP_4[raw],
        speaker=f"Ses{dialog.session}{speaker}",
        group=dialog.group,
        extra=tuple(extra),
    )
