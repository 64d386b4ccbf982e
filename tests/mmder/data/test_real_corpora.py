"""The RAVDESS and CREMA-D adapters on the shared real files, read in place, and their caches."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmder.data.cache import ClipCache, PreprocessConfig, prepare_corpus
from mmder.data.corpora import available_corpora, list_corpus
from mmder.data.cremad import EMOTIONS as CREMAD_EMOTIONS
from mmder.data.folds import make_folds
from mmder.data.ravdess import parse_name

# RAVDESS's emotion codes (third field of a file name), as its documentation lists them.
RAVDESS_CODES = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
EIGHT = list(RAVDESS_CODES.values())
SEVEN = [e for e in EIGHT if e != "calm"]  # calm merged into neutral


def test_adapters_are_registered() -> None:
    assert {"ravdess", "cremad", "iemocap"} <= set(available_corpora())


def test_ravdess_names() -> None:
    f = parse_name("01-01-07-02-02-01-01_1")  # the shared AV sample's suffix is ignored
    assert f["id"] == "01-01-07-02-02-01-01" and f["modality"] == "av" and f["emotion"] == "disgust"
    assert (f["intensity"], f["statement"], f["repetition"], f["actor"]) == ("strong", "02", "01", "01")
    for bad, why in [
        ("03-01-09-01-01-01-01", "emotion"),
        ("04-01-01-01-01-01-01", "modality"),
        ("03-03-01-01-01-01-01", "channel"),
        ("03-01-01-03-01-01-01", "intensity"),
        ("03-01-01-01-01-01", "7 RAVDESS fields"),
        ("03-01-01-01-01-01-012", "7 RAVDESS fields"),
        ("readme", "7 RAVDESS fields"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_name(bad)


def test_ravdess_720_flac_listing(shared_data: Path) -> None:
    root = shared_data / "ravdess-speech-16k"
    listing = list_corpus("ravdess", root)
    assert listing.classes == EIGHT and listing.skipped == []
    clips = listing.clips
    assert len(clips) == 720 and len({c.clip_id for c in clips}) == 720
    assert all(c.video is None and c.audio and c.audio.endswith(".flac") for c in clips)
    # Labels and fields checked against the file names, independently of the adapter's parser and tables.
    for c in clips:
        fields = Path(c.audio).stem.split("-")
        extra = dict(c.extra)
        assert c.label == RAVDESS_CODES[fields[2]] and c.speaker == f"Actor_{fields[6]}"
        assert Path(c.audio).parent.name == c.speaker  # files sit in their actor's folder
        assert extra["intensity"] == {"01": "normal", "02": "strong"}[fields[3]]
        assert (extra["statement"], extra["repetition"]) == (fields[4], fields[5])
        assert extra["modality"] == "audio" and extra["channel"] == "speech"
        assert extra["gender"] == ("male" if int(fields[6]) % 2 else "female")
    # RAVDESS has no strong neutral: 4 neutral and 8 of each other emotion per actor.
    assert Counter(c.label for c in clips) == {e: (48 if e == "neutral" else 96) for e in EIGHT}
    assert Counter(c.speaker for c in clips) == {f"Actor_{a:02d}": 60 for a in range(1, 13)}
    assert Counter(dict(c.extra)["intensity"] for c in clips) == {"normal": 384, "strong": 336}

    seven = list_corpus("ravdess", root, classes=7)
    assert seven.classes == SEVEN and "calm" not in {c.label for c in seven.clips}
    assert Counter(c.label for c in seven.clips) == {e: (144 if e == "neutral" else 96) for e in SEVEN}
    for a, b in zip(clips, seven.clips, strict=True):
        assert a.clip_id == b.clip_id and b.label == ("neutral" if a.label == "calm" else a.label)

    folds = make_folds({"kind": "speaker_kfold", "folds": 4}, [c.speaker for c in clips])
    assert [f.test_speakers for f in folds][0] == ["Actor_01", "Actor_02", "Actor_03"]
    paper = make_folds({"kind": "ravdess_paper", "test_actors": [11, 12]}, [c.speaker for c in clips])
    assert paper[0].test_speakers == ["Actor_11", "Actor_12"] and len(paper[0].test_idx) == 120


def test_ravdess_options(shared_data: Path, tmp_path: Path) -> None:
    for name in ("Actor_01/03-02-03-01-01-01-01.wav", "Actor_01/02-01-03-01-01-01-01.mp4", "Actor_01/x.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"0")
    (tmp_path / "Actor_01/01-01-07-02-02-01-01.mp4").symlink_to(
        shared_data / "ravdess-av/01-01-07-02-02-01-01_1.mp4"
    )
    (tmp_path / "01-01-07-02-02-01-01_2.mp4").write_bytes(b"0")  # same 7 fields: a duplicate
    (tmp_path / "notes.txt").write_text("not media, not listed")
    auto = list_corpus("ravdess", tmp_path)  # full-AV files exist: the silent copy is left out
    assert [c.clip_id for c in auto.clips] == ["01-01-07-02-02-01-01"]
    assert any(Path(p).name == "02-01-03-01-01-01-01.mp4" and "auto" in r for p, r in auto.skipped)
    listing = list_corpus("ravdess", tmp_path, modality="all")
    assert sorted(c.clip_id for c in listing.clips) == ["01-01-07-02-02-01-01", "02-01-03-01-01-01-01"]
    silent = next(c for c in listing.clips if c.clip_id.startswith("02"))
    assert silent.video and silent.audio is None
    reasons = {Path(p).name: r for p, r in listing.skipped}
    assert "song" in reasons["03-02-03-01-01-01-01.wav"]
    assert "7 RAVDESS fields" in reasons["x.mp4"]
    # the root-level file sorts first, so the one in Actor_01/ is the duplicate
    assert "duplicate of" in reasons["01-01-07-02-02-01-01.mp4"]
    assert "notes.txt" not in reasons
    with_song = list_corpus("ravdess", tmp_path, include_song=True, modality="audio")
    assert [c.clip_id for c in with_song.clips] == ["03-02-03-01-01-01-01"]
    assert [c.clip_id for c in list_corpus("ravdess", tmp_path, modality="av").clips] == [
        "01-01-07-02-02-01-01"
    ]
    with pytest.raises(ValueError, match="classes"):
        list_corpus("ravdess", tmp_path, classes=6)
    with pytest.raises(ValueError, match="modality"):
        list_corpus("ravdess", tmp_path, modality="both")


def test_cremad_listing(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "crema-d"
    listing = list_corpus("cremad", root)
    assert listing.classes == list(CREMAD_EMOTIONS) == ["anger", "disgust", "fear", "happy", "neutral", "sad"]
    av = [c for c in listing.clips if c.video]
    audio_only = [c for c in listing.clips if not c.video]
    assert len(av) == 6 and len(audio_only) == 6 and listing.skipped == []
    for c in av:  # no AudioWAV next to the flv files: the flv's own mp3 track is the audio
        assert c.speaker == "1001" and c.audio == c.video and c.video.endswith(".flv")
        assert dict(c.extra)["audio_source"] == "video track"
    for c in audio_only:
        assert c.speaker == "1002" and c.audio.endswith(".mp3") and dict(c.extra)["audio_source"] == "mp3"
    assert sorted(c.label for c in av) == sorted(CREMAD_EMOTIONS)
    assert dict(av[0].extra)["sentence"] == "DFA" and dict(av[0].extra)["level"] == "unspecified"

    only_av = list_corpus("cremad", root, modality="av")
    assert len(only_av.clips) == 6 and all("without a video" in r for _, r in only_av.skipped)
    only_audio = list_corpus("cremad", root, modality="audio")
    assert len(only_audio.clips) == 12 and all(c.video is None for c in only_audio.clips)
    only_video = list_corpus("cremad", root, modality="video")
    assert len(only_video.clips) == 6 and all(c.audio is None for c in only_video.clips)

    # A wav of the same name wins over the video's track; bad names are skipped with their reason.
    (tmp_path / "VideoFlash").mkdir()
    (tmp_path / "AudioWAV").mkdir()
    (tmp_path / "VideoFlash/1001_DFA_ANG_XX.flv").symlink_to(root / "VideoFlash/1001_DFA_ANG_XX.flv")
    (tmp_path / "AudioWAV/1001_DFA_ANG_XX.wav").write_bytes(b"0")
    (tmp_path / "AudioWAV/1001_DFA_XYZ_XX.wav").write_bytes(b"0")
    (tmp_path / "AudioWAV/1001-DFA.wav").write_bytes(b"0")
    mine = list_corpus("cremad", tmp_path)
    assert [c.clip_id for c in mine.clips] == ["1001_DFA_ANG_XX"]
    assert mine.clips[0].audio.endswith("AudioWAV/1001_DFA_ANG_XX.wav")
    reasons = sorted(r for _, r in mine.skipped)
    assert len(reasons) == 2 and "unknown emotion code 'XYZ'" in reasons[1] and "<actor>_" in reasons[0]


def test_cremad_flv_cache_faces_and_own_audio(shared_data: Path, tmp_path: Path) -> None:
    prepared = prepare_corpus(
        "cremad",
        shared_data / "crema-d",
        tmp_path,
        PreprocessConfig(image_size=112, face="haar"),
        corpus_options={"modality": "av"},
    )
    cache = ClipCache.open(prepared)
    cremad_codes = {
        "ANG": "anger",
        "DIS": "disgust",
        "FEA": "fear",
        "HAP": "happy",
        "NEU": "neutral",
        "SAD": "sad",
    }
    assert len(cache) == 6 and prepared.n_face_fallback == 0 and prepared.n_failed == 0
    assert {c.label for c in cache.clips} == set(cremad_codes.values())
    for c in cache.clips:
        assert c.clip_id.endswith(f"_{c.clip_id.split('_')[2]}_XX") and c.speaker == "1001"
        assert c.label == cremad_codes[c.clip_id[9:12]]
        assert c.has_video and c.has_audio and c.face_crop == "face" and c.face_fraction >= 0.9
    assert cache.video16.shape == (6, 16, 112, 112, 3)
    assert cache.video16.std(axis=(1, 2, 3, 4)).min() > 10
    audio = np.asarray(cache.audio16, dtype=np.float32)
    assert audio.std(axis=(2, 3, 4)).min() >= 0 and audio.std(axis=(1, 2, 3, 4)).min() > 5
    # The face crop is not the whole frame: frames differ from a plain resize of the full frame.
    whole = prepare_corpus(
        "cremad",
        shared_data / "crema-d",
        tmp_path,
        PreprocessConfig(image_size=112, face="none"),
        corpus_options={"modality": "av"},
    )
    assert whole.path != prepared.path
    full = ClipCache.open(whole)
    assert np.abs(full.video16[0].astype(int) - cache.video16[0].astype(int)).mean() > 10
    assert np.array_equal(full.audio16, cache.audio16)  # the audio does not depend on the face mode
    with (prepared.path / "clips.csv").open() as fh:
        boxes = [[float(v) for v in r["face_box"].split()] for r in csv.DictReader(fh)]
    for x0, y0, x1, y1 in boxes:  # a square box inside the 480 x 360 frame, smaller than the frame
        assert (
            0 <= x0 < x1 <= 1
            and 0 <= y0 < y1 <= 1
            and (x1 - x0) * 480 == pytest.approx((y1 - y0) * 360, abs=2)
        )
        assert (y1 - y0) < 0.95
    meta_faces = cache.meta["faces"]
    assert (
        meta_faces["mode"] == "haar" and meta_faces["n_searched"] == 6 and meta_faces["mean_fraction"] >= 0.9
    )


def test_ravdess_av_mp4_clip(shared_data: Path, tmp_path: Path) -> None:
    prepared = prepare_corpus(
        "ravdess", shared_data / "ravdess-av", tmp_path, PreprocessConfig(image_size=64, face="haar")
    )
    cache = ClipCache.open(prepared)
    assert len(cache) == 1
    c = cache.clips[0]
    assert (c.clip_id, c.label, c.speaker) == ("01-01-07-02-02-01-01", "disgust", "Actor_01")
    assert c.has_video and c.has_audio and c.face_crop == "face" and c.face_fraction >= 0.9
    assert cache.video16[0].std() > 10 and cache.audio16[0].std() > 5 and cache.audio8[0].std() > 5
    folds = make_folds({"kind": "ravdess_paper", "test_actors": [1]}, cache.speakers + ["Actor_02"])
    assert folds[0].test_idx.tolist() == [0]  # the actor number is read from "Actor_01"
