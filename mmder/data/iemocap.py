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
    if speaker_side not in SPEAKER_SIDES:
        raise ValueError(
            f"iemocap: speaker_side must be one of {', '.join(SPEAKER_SIDES)}, got {speaker_side!r}"
        )
    if modality not in ("av", "video", "audio"):
        raise ValueError(f"iemocap: modality must be av, video or audio, got {modality!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"iemocap: no folder {root}")
    session_dirs = sorted((p for p in root.glob("Session*") if p.is_dir()), key=lambda p: natural_key(p.name))
    if sessions is not None:
        wanted = {int(s) for s in sessions}
        session_dirs = [
            p for p in session_dirs if p.name[len("Session") :].isdigit() and int(p.name[7:]) in wanted
        ]
    what = "utterance lines in SessionN/dialog/EmoEvaluation/*.txt"
    listing = CorpusListing(list(CLASSES_4), [], seen=0, seen_what=what)
    clips = listing.clips
    seen: set[str] = set()
    for sdir in session_dirs:
        group = sdir.name
        evals = sorted((sdir / "dialog" / "EmoEvaluation").glob("*.txt"), key=lambda p: natural_key(p.name))
        for ev in evals:
            dialog = ev.stem
            where = str(ev.absolute())
            m = _DIALOG.match(dialog)
            if not m:
                listing.reject(
                    "dialogs not named Ses<NN><F|M>_...",
                    where,
                    f"dialog name {dialog!r} is not Ses<NN><F|M>_...",
                )
                continue
            avi = sdir / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
            wav = sdir / "dialog" / "wav" / f"{dialog}.wav"
            need = {"av": (avi, wav), "video": (avi,), "audio": (wav,)}[modality]
            missing = [p for p in need if not p.is_file()]
            if missing:
                reason = f"dialog {dialog}: file not found: {missing[0]}"
                listing.reject(
                    f"dialogs without their {'/'.join(p.suffix for p in need)} file", where, reason
                )
                continue
            try:
                rows = parse_evaluation(ev)
            except OSError as exc:
                listing.reject("unreadable EmoEvaluation files", where, f"cannot read: {exc}")
                continue
            if not rows:
                listing.reject(
                    "EmoEvaluation files without an utterance line", where, "no utterance line found"
                )
                continue
            listing.seen = (listing.seen or 0) + len(rows)
            for start, end, utt, raw in rows:
                label = LABEL_MAP_4.get(raw)
                su = _UTT_SPEAKER.search(utt)
                if label is None:
                    name = LABEL_NAMES.get(raw, raw)
                    reason = f"label {raw!r} ({name}) not in the 4-class map"
                    listing.reject("utterances with a label outside the 4 classes", f"{where}#{utt}", reason)
                    continue
                if su is None or not utt.startswith(dialog):
                    reason = f"utterance id {utt!r} does not name its speaker"
                    listing.reject("utterance ids without a speaker", f"{where}#{utt}", reason)
                    continue
                if end - start <= 0:
                    reason = f"empty time range [{start} - {end}]"
                    listing.reject("utterances with an empty time range", f"{where}#{utt}", reason)
                    continue
                if utt in seen:
                    reason = f"duplicate utterance id {utt!r}"
                    listing.reject("repeated utterance ids", f"{where}#{utt}", reason)
                    continue
                seen.add(utt)
                speaker = su["speaker"]
                extra: list[tuple[str, object]] = [("start_s", start), ("end_s", end)]
                crop = _half(m["marker"], speaker, speaker_side)
                if crop is not None and modality != "audio":
                    extra.append(("crop", crop))
                extra += [("dialog", dialog), ("raw_label", raw)]
                clips.append(
                    Clip(
                        clip_id=utt,
                        video=str(avi.absolute()) if modality != "audio" else None,
                        audio=str(wav.absolute()) if modality != "video" else None,
                        label=label,
                        speaker=f"Ses{m['session']}{speaker}",
                        group=group,
                        extra=tuple(extra),
                    )
                )
    if not session_dirs:
        listing.rejected["no Session1..Session5 folder below the root"] = 0  # said without a count
    return listing
