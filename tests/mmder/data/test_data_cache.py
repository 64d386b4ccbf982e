"""The prepared cache: round trip, reuse without decoding, skipped clips, atomic writes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmder.data import decode, store
from mmder.data.cache import ClipCache, PreprocessConfig, cache_key, prepare_corpus
from mmder.data.corpora import list_corpus
from mmder.data.synthetic import CLASSES


def test_round_trip(synthetic_cache: ClipCache, synthetic_root: Path) -> None:
    listing = list_corpus("synthetic", synthetic_root)
    n = len(listing.clips)
    assert len(synthetic_cache) == n and synthetic_cache.classes == list(CLASSES)
    for name, steps in (("video16", 16), ("video8", 8), ("audio16", 16), ("audio8", 8)):
        arr = synthetic_cache.array(name)
        assert arr.shape == (n, steps, 64, 64, 3) and arr.dtype == np.uint8
        assert isinstance(arr, np.memmap) and not arr.flags.writeable
        assert arr[n - 1].std() > 5  # real content in the last row too
    assert [c.clip_id for c in synthetic_cache.clips] == [c.clip_id for c in listing.clips]
    first = synthetic_cache.clips[0]
    assert first.index == 0 and first.label_index == CLASSES.index(first.label)
    assert first.has_video and first.has_audio and first.group is None
    assert synthetic_cache.image_size == 64
    # the 8-frame sequence spans the clip like the 16-frame one: its frames are among them or close
    assert not np.array_equal(synthetic_cache.video8[0, 0], synthetic_cache.video8[0, -1])
    with (synthetic_cache.path / "skipped.csv").open() as fh:
        assert list(csv.reader(fh)) == [["path", "reason"]]


def test_second_call_reuses_without_decoding(
    synthetic_cache: ClipCache, synthetic_root: Path, synthetic_cache_root: Path, monkeypatch
) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(decode, "read_video_frames", boom)
    monkeypatch.setattr(decode, "read_audio", boom)
    again = prepare_corpus("synthetic", synthetic_root, synthetic_cache_root, PreprocessConfig(image_size=64))
    assert again.path == synthetic_cache.path and again.n_prepared == len(synthetic_cache)


def test_key_changes_with_config_and_files(synthetic_root: Path, tmp_path: Path) -> None:
    base = PreprocessConfig(image_size=64)
    assert base.fingerprint() == PreprocessConfig(image_size=64).fingerprint()
    assert base.fingerprint() != PreprocessConfig(image_size=64, colormap="gray").fingerprint()
    listing = list_corpus("synthetic", synthetic_root)
    key = cache_key("synthetic", listing, {}, base)
    assert key == cache_key("synthetic", list_corpus("synthetic", synthetic_root), {}, base)
    assert key != cache_key("synthetic", listing, {}, PreprocessConfig(image_size=32))
    assert key != cache_key("synthetic", listing, {"x": 1}, base)
    listing.clips = listing.clips[:-1]
    assert key != cache_key("synthetic", listing, {}, base)
    with pytest.raises(ValueError, match="face"):
        PreprocessConfig(face="retina")
    with pytest.raises(ValueError, match="bogus"):
        PreprocessConfig.model_validate({"image_size": 32, "bogus": 1})


def _manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["clip_id", "video", "audio", "label", "speaker"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_broken_clips_are_skipped_with_reasons(
    tmp_path: Path, synthetic_root: Path, shared_data: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "zero.mp4").write_bytes(b"")
    (media / "notes.wav").write_text("this is a text file, not audio\n")
    good = sorted((synthetic_root / "video").glob("*.mp4"))[0]
    good_wav = synthetic_root / "audio" / (good.stem + ".wav")
    flv = shared_data / "crema-d/VideoFlash/1001_DFA_ANG_XX.flv"
    mp3 = shared_data / "crema-d/AudioMP3/1002_DFA_SAD_XX.mp3"
    flac = sorted((shared_data / "ravdess-speech-16k/Actor_02").glob("*.flac"))[0]
    rows = [
        {"clip_id": "ok", "video": str(good), "audio": str(good_wav), "label": "a", "speaker": "s1"},
        {"clip_id": "zero", "video": "media/zero.mp4", "audio": str(good_wav), "label": "a", "speaker": "s1"},
        {"clip_id": "text", "video": "", "audio": "media/notes.wav", "label": "b", "speaker": "s2"},
        {"clip_id": "flv", "video": str(flv), "audio": str(flv), "label": "b", "speaker": "s2"},
        {"clip_id": "mp3", "video": "", "audio": str(mp3), "label": "a", "speaker": "s3"},
        {"clip_id": "flac", "video": "", "audio": str(flac), "label": "b", "speaker": "s3"},
        {"clip_id": "gone", "video": "media/gone.mp4", "audio": "", "label": "a", "speaker": "s3"},
    ]
    csv_path = _manifest(tmp_path / "manifest.csv", rows)
    prepared = prepare_corpus("manifest", csv_path, tmp_path / "cache", PreprocessConfig(image_size=32))
    assert prepared.n_prepared == 4 and prepared.n_skipped == 3
    with prepared.skip_report.open() as fh:
        reasons = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}
    assert reasons == {
        "zero.mp4": "video: empty file (0 bytes)",
        "notes.wav": "audio: not a media file (unrecognised format)",
        "gone.mp4": "file not found",
    }
    c = ClipCache.open(prepared)
    assert [x.clip_id for x in c.clips] == ["ok", "flv", "mp3", "flac"]
    assert c.classes == ["a", "b"] and [x.label_index for x in c.clips] == [0, 1, 0, 1]
    assert [(x.has_video, x.has_audio) for x in c.clips] == [(True, True), (True, True), (False, True)] + [
        (False, True)
    ]
    assert c.video16.shape == (4, 16, 32, 32, 3)
    assert c.video16[2].max() == 0 and c.video8[3].max() == 0  # audio-only clips: zeros
    assert c.audio16[2].std() > 5 and c.video16[1].std() > 5
    assert [r.index for r in c.clips] == [0, 1, 2, 3]


def test_interrupted_preparation_leaves_no_complete_cache(
    tmp_path: Path, synthetic_root: Path, monkeypatch
) -> None:
    rows = [
        {"clip_id": p.stem, "video": str(p), "audio": "", "label": "x", "speaker": "s"}
        for p in sorted((synthetic_root / "video").glob("*.mp4"))[:2]
    ]
    csv_path = _manifest(tmp_path / "m.csv", rows)
    cache_root = tmp_path / "cache"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_write_outputs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus("manifest", csv_path, cache_root, PreprocessConfig(image_size=16))
    # only the hidden partial folder is left (resumed by the next call), never a complete-looking cache
    left = [p.name for p in cache_root.iterdir()]
    assert len(left) == 1 and left[0].startswith(".") and left[0].endswith(".partial")
    monkeypatch.undo()
    prepared = prepare_corpus("manifest", csv_path, cache_root, PreprocessConfig(image_size=16))
    assert [p.name for p in cache_root.iterdir()] == [prepared.path.name]
    meta = json.loads((prepared.path / "meta.json").read_text())
    assert meta["n_prepared"] == 2 and meta["config"]["image_size"] == 16
    # the rerun says what it took over: both clips were decoded before the interruption
    assert (prepared.n_resumed, prepared.n_decoded) == (2, 0)
    again = prepare_corpus("manifest", csv_path, cache_root, PreprocessConfig(image_size=16))
    assert again.n_decoded is None, "a ready cache decodes nothing"


def test_no_usable_clip_raises(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_text("nope")
    csv_path = _manifest(
        tmp_path / "m.csv", [{"clip_id": "b", "video": "", "audio": "bad.wav", "label": "x", "speaker": "s"}]
    )
    with pytest.raises(ValueError, match="not a media file"):
        prepare_corpus("manifest", csv_path, tmp_path / "cache", PreprocessConfig(image_size=16))
    assert not any((tmp_path / "cache").iterdir())


@pytest.mark.slow
def test_workers_give_the_same_cache(
    synthetic_cache: ClipCache, synthetic_root: Path, tmp_path: Path
) -> None:
    prepared = prepare_corpus(
        "synthetic", synthetic_root, tmp_path / "cache", PreprocessConfig(image_size=64), workers=2
    )
    assert prepared.path.name == synthetic_cache.path.name
    other = ClipCache.open(prepared.path)
    for name in ("video16", "video8", "audio16", "audio8"):
        assert np.array_equal(other.array(name), synthetic_cache.array(name))
    shutil.rmtree(prepared.path)


def test_pickles_without_the_arrays(synthetic_cache: ClipCache) -> None:
    import pickle

    _ = synthetic_cache.video16  # opened in this process
    blob = pickle.dumps(synthetic_cache)
    assert len(blob) < 100_000  # the memory maps are not copied
    clone = pickle.loads(blob)
    assert np.array_equal(clone.audio8[1], synthetic_cache.audio8[1])
