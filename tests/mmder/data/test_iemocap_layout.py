"""IEMOCAP on a hand-made session in the official layout: segments, labels, speakers, sessions, halves."""

from __future__ import annotations

import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmder.data.cache import ClipCache, PreprocessConfig, prepare_corpus
from mmder.data.corpora import list_corpus
from mmder.data.folds import make_folds
from mmder.data.iemocap import CLASSES_4, parse_evaluation

FPS = 25.0
SECONDS = 10
W, H = 64, 32  # two 32 x 32 halves
LEFT_RGB, RIGHT_RGB = (0, 0, 255), (255, 0, 0)  # blue actor on the left, red on the right


def _write_dialog_avi(path: Path) -> None:
    """Left half blue, right half red; rows 0-3 carry the frame number as grey level (a clock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert out.isOpened()
    for i in range(int(FPS * SECONDS)):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[:, : W // 2] = LEFT_RGB
        rgb[:, W // 2 :] = RIGHT_RGB
        rgb[:4] = i
        out.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out.release()


def _write_wav(path: Path, sr: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(SECONDS * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(x.tobytes())


def _session(root: Path, n: int, dialog: str, lines: list[str]) -> None:
    d = root / f"Session{n}" / "dialog"
    (d / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
    header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    body = "".join(f"{ln}\nC-E1:\tNeutral;\t()\nA-E1:\tval 3; act 2; dom  2;\t()\n\n" for ln in lines)
    (d / "EmoEvaluation" / f"{dialog}.txt").write_text(header + body)
    _write_dialog_avi(d / "avi" / "DivX" / f"{dialog}.avi")
    _write_wav(d / "wav" / f"{dialog}.wav")


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("IEMOCAP_full_release")
    _session(
        root,
        1,
        "Ses01F_impro01",
        [
            "[0.5000 - 2.0000]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]",
            "[2.5000 - 4.0000]\tSes01F_impro01_M000\texc\t[3.5000, 3.0000, 3.0000]",
            "[4.2000 - 5.5000]\tSes01F_impro01_F001\tfru\t[2.0000, 3.5000, 3.5000]",
            "[6.0000 - 7.5000]\tSes01F_impro01_M001\tang\t[1.5000, 4.0000, 4.5000]",
            "[7.6000 - 8.0000]\tSes01F_impro01_F002\txxx\t[2.5000, 2.5000, 2.5000]",
        ],
    )
    _session(
        root,
        2,
        "Ses02M_script01_1",
        [
            "[1.0000 - 2.5000]\tSes02M_script01_1_F000\tsad\t[2.0000, 2.0000, 2.0000]",
            "[3.0000 - 4.5000]\tSes02M_script01_1_M000\thap\t[4.0000, 3.0000, 3.0000]",
        ],
    )
    (root / "Session3" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (root / "Session3" / "dialog" / "EmoEvaluation" / "Ses03F_impro02.txt").write_text(
        "[1.0 - 2.0]\tSes03F_impro02_F000\tneu\t[2, 2, 2]\n"
    )  # its avi and wav are missing
    return root


def test_evaluation_lines(iemocap_root: Path) -> None:
    rows = parse_evaluation(iemocap_root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt")
    assert rows[0] == (0.5, 2.0, "Ses01F_impro01_F000", "neu") and len(rows) == 5


def test_listing(iemocap_root: Path) -> None:
    listing = list_corpus("iemocap", iemocap_root)
    assert listing.classes == list(CLASSES_4) == ["neutral", "happy", "angry", "sad"]
    got = {c.clip_id: (c.label, c.speaker, c.group) for c in listing.clips}
    assert got == {
        "Ses01F_impro01_F000": ("neutral", "Ses01F", "Session1"),
        "Ses01F_impro01_M000": ("happy", "Ses01M", "Session1"),  # excited counts as happy
        "Ses01F_impro01_M001": ("angry", "Ses01M", "Session1"),
        "Ses02M_script01_1_F000": ("sad", "Ses02F", "Session2"),
        "Ses02M_script01_1_M000": ("happy", "Ses02M", "Session2"),
    }
    first = listing.clips[0]
    extra = dict(first.extra)
    assert (extra["start_s"], extra["end_s"]) == (0.5, 2.0)
    assert first.video.endswith("Session1/dialog/avi/DivX/Ses01F_impro01.avi")
    assert first.audio.endswith("Session1/dialog/wav/Ses01F_impro01.wav")
    reasons = [r for _, r in listing.skipped]
    assert any("'fru' (frustrated) not in the 4-class map" in r for r in reasons)
    assert any("'xxx' (no majority label)" in r for r in reasons)
    assert any("Ses03F_impro02" in r and "file not found" in r for r in reasons)
    assert len(reasons) == 3

    # The marker-wearing actor (dialog letter) is on the left by default.
    crops = {c.clip_id: dict(c.extra)["crop"] for c in listing.clips}
    left, right = (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)
    assert crops["Ses01F_impro01_F000"] == left and crops["Ses01F_impro01_M000"] == right
    assert crops["Ses02M_script01_1_F000"] == right and crops["Ses02M_script01_1_M000"] == left
    swapped = list_corpus("iemocap", iemocap_root, speaker_side="marker_right")
    assert dict(swapped.clips[0].extra)["crop"] == right
    full = list_corpus("iemocap", iemocap_root, speaker_side="full")
    assert all("crop" not in dict(c.extra) for c in full.clips)
    assert len(list_corpus("iemocap", iemocap_root, sessions=[2]).clips) == 2
    with pytest.raises(ValueError, match="speaker_side"):
        list_corpus("iemocap", iemocap_root, speaker_side="left")

    folds = make_folds(
        {"kind": "leave_one_group_out", "groups": ["Session1", "Session2"]},
        [c.speaker for c in listing.clips],
        [c.group for c in listing.clips],
    )
    assert [f.test_idx.tolist() for f in folds] == [[0, 1, 2], [3, 4]]


def _mean_rgb(frames: np.ndarray) -> np.ndarray:
    return frames[:, 8:, :, :].reshape(-1, 3).mean(axis=0)  # below the clock rows


def test_segments_and_speaker_halves_in_the_cache(iemocap_root: Path, tmp_path: Path) -> None:
    prepared = prepare_corpus("iemocap", iemocap_root, tmp_path, PreprocessConfig(image_size=32))
    cache = ClipCache.open(prepared)
    assert [c.clip_id for c in cache.clips][:2] == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]
    assert prepared.n_prepared == 5 and prepared.n_skipped == 3
    by_id = {c.clip_id: c.index for c in cache.clips}
    for clip_id, colour in [
        ("Ses01F_impro01_F000", LEFT_RGB),
        ("Ses01F_impro01_M000", RIGHT_RGB),
        ("Ses02M_script01_1_F000", RIGHT_RGB),
        ("Ses02M_script01_1_M000", LEFT_RGB),
    ]:
        rgb = _mean_rgb(cache.video16[by_id[clip_id]])
        assert np.abs(rgb - np.array(colour)).max() < 40, (clip_id, rgb)
    # The clock: frames come from inside [start, end) of each utterance (frame = 25 * seconds).
    for clip_id, (start, end) in {
        "Ses01F_impro01_F000": (0.5, 2.0),
        "Ses01F_impro01_M001": (6.0, 7.5),
    }.items():
        clock = cache.video16[by_id[clip_id]][:, :3, :, :].mean(axis=(1, 2, 3))
        assert start * FPS - 4 <= clock.min() and clock.max() <= end * FPS + 4, (clip_id, clock)
        assert clock[-1] - clock[0] > 0.6 * (end - start) * FPS  # spread over the segment
    assert cache.audio16.std(axis=(1, 2, 3, 4)).min() > 5

    whole = prepare_corpus(
        "iemocap",
        iemocap_root,
        tmp_path,
        PreprocessConfig(image_size=32),
        corpus_options={"speaker_side": "full"},
    )
    both = ClipCache.open(whole).video16[0][:, 8:]
    assert np.abs(both[:, :, :16].reshape(-1, 3).mean(0) - LEFT_RGB).max() < 40
    assert np.abs(both[:, :, 16:].reshape(-1, 3).mean(0) - RIGHT_RGB).max() < 40


def test_no_face_falls_back_to_a_recorded_centre_crop(iemocap_root: Path, tmp_path: Path) -> None:
    prepared = prepare_corpus(
        "iemocap",
        iemocap_root,
        tmp_path,
        PreprocessConfig(image_size=32, face="haar"),
        corpus_options={"sessions": [2]},
    )
    assert prepared.n_prepared == 2 and prepared.n_face_fallback == 2
    cache = ClipCache.open(prepared)
    for c in cache.clips:
        assert c.face_crop == "centre" and c.face_fraction == 0.0 and "centre crop" in c.face_note
    text = (prepared.path / "clips.csv").read_text()
    assert "centre" in text and "face found in 0 of 16 frames" in text
