"""The cache at scale: bad inputs skipped with reasons, reuse without decoding, resuming, exact sampling."""

from __future__ import annotations

import csv
import json
import os
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmder.data import decode, extract, store
from mmder.data import partial as partial_dir
from mmder.data.cache import ClipCache, PreprocessConfig, partial_path, prepare_corpus
from mmder.data.features import min_window_seconds


def _wav(path: Path, seconds: float, sr: int = 16000) -> None:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.5 * np.sin(2 * np.pi * 300 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(x.tobytes())


def _reasons(prepared) -> dict[str, str]:
    with prepared.skip_report.open() as fh:
        return {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}


def _flac_subset(shared_data: Path, dest: Path, n: int) -> Path:
    """``n`` of the shared RAVDESS flac files, linked (not copied) into an Actor folder layout."""
    files = sorted((shared_data / "ravdess-speech-16k").glob("Actor_0[12]/*.flac"))[:n]
    for f in files:
        (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
        (dest / f.parent.name / f.name).symlink_to(f)
    return dest


def test_bad_inputs_are_skipped_with_reasons(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "ravdess"
    a = root / "Actor_01"
    a.mkdir(parents=True)
    mp4 = shared_data / "ravdess-av/01-01-07-02-02-01-01_1.mp4"
    (a / "01-01-07-02-02-01-01.mp4").symlink_to(mp4)  # good, audio-visual
    (a / "03-01-01-01-01-01-01.flac").symlink_to(
        shared_data / "ravdess-speech-16k/Actor_01/03-01-01-01-01-01-01.flac"
    )  # good, audio
    data = mp4.read_bytes()
    (a / "01-01-03-01-01-01-01.mp4").write_bytes(data[: len(data) // 2])  # truncated
    (a / "01-01-04-01-01-01-01.mp4").write_bytes(b"")  # zero bytes
    silent = cv2.VideoWriter(
        str(a / "01-01-05-01-01-01-01.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 48)
    )
    for i in range(50):
        silent.write(np.full((48, 64, 3), 4 * i, np.uint8))
    silent.release()  # a full-AV name but no audio track
    (a / "03-01-06-01-01-01-01.wav").write_text("a text file with a media name\n")
    locked = a / "03-01-08-01-01-01-01.flac"
    locked.write_bytes((shared_data / "ravdess-speech-16k/Actor_01/03-01-08-01-01-01-01.flac").read_bytes())
    locked.chmod(0)
    (a / "03-01-99-01-01-01-01.flac").write_bytes(b"x")  # does not parse (emotion 99)
    _wav(a / "03-01-02-01-01-01-01.wav", 0.15)  # decodes, but shorter than the 16 windows allow

    prepared = prepare_corpus(
        "ravdess",
        root,
        tmp_path / "cache",
        PreprocessConfig(image_size=32),
        corpus_options={"modality": "all"},
    )
    reasons = _reasons(prepared)
    assert reasons["01-01-03-01-01-01-01.mp4"].startswith("video: truncated video (read 60 of 120 frames)")
    assert reasons["01-01-04-01-01-01-01.mp4"] == "video: empty file (0 bytes)"
    assert reasons["01-01-05-01-01-01-01.mp4"] == "audio: no audio stream"
    assert reasons["03-01-06-01-01-01-01.wav"] == "audio: not a media file (unrecognised format)"
    assert "unknown emotion field '99'" in reasons["03-01-99-01-01-01-01.flac"]
    short = reasons["03-01-02-01-01-01-01.wav"]
    assert short.startswith("audio: too short for the spectrogram windows (0.150 s") and "0.2125 s" in short
    prepared_ids = [c.clip_id for c in ClipCache.open(prepared).clips]
    assert "01-01-07-02-02-01-01" in prepared_ids and "03-01-01-01-01-01-01" in prepared_ids
    if os.access(locked, os.R_OK):
        # Running as root: chmod 000 does not stop reading, so the file is simply prepared.
        assert "03-01-08-01-01-01-01" in prepared_ids and locked.name not in reasons
    else:
        assert reasons[locked.name] == "audio: permission denied (the file is not readable)"
    assert prepared.n_skipped == len(reasons) == (6 if os.access(locked, os.R_OK) else 7)
    assert prepared.n_failed == prepared.n_skipped - 1  # all but the unparsable name were decoded
    assert min_window_seconds(16) == pytest.approx(0.2125) and min_window_seconds(8) == pytest.approx(0.1125)


def test_unreadable_file_reason(tmp_path: Path, monkeypatch) -> None:
    """The permission check itself, also when the tests run as root (where chmod 000 reads fine)."""
    from mmder.data.corpora import Clip

    _wav(tmp_path / "a.wav", 1.0)
    monkeypatch.setattr(extract.os, "access", lambda path, mode: False)
    i, reason, _ = partial_dir.prepare_one(
        0, Clip("a", None, str(tmp_path / "a.wav"), "x", "s"), str(tmp_path), PreprocessConfig(image_size=16)
    )
    assert reason == "audio: permission denied (the file is not readable)"


class _Count:
    """Wraps a decoder, counting calls and optionally interrupting at call ``stop_at``."""

    def __init__(self, fn, stop_at: int | None = None) -> None:
        self.fn, self.stop_at, self.calls, self.paths = fn, stop_at, 0, []

    def __call__(self, path, *args, **kwargs):
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.paths.append(Path(path).name)
        return self.fn(path, *args, **kwargs)


def test_reuse_without_decoding_and_new_settings(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    root = _flac_subset(shared_data, tmp_path / "ravdess", 8)
    config = PreprocessConfig(image_size=16)
    first = prepare_corpus("ravdess", root, tmp_path / "cache", config)
    assert first.n_prepared == 8 and not partial_path(first.path).exists()
    counter = _Count(decode.read_audio)
    monkeypatch.setattr(decode, "read_audio", counter)
    again = prepare_corpus("ravdess", root, tmp_path / "cache", config)
    assert again == first and counter.calls == 0
    gray = prepare_corpus(
        "ravdess", root, tmp_path / "cache", PreprocessConfig(image_size=16, colormap="gray")
    )
    assert gray.path != first.path and counter.calls == 8
    seven = prepare_corpus("ravdess", root, tmp_path / "cache", config, corpus_options={"classes": 7})
    assert seven.path != first.path and counter.calls == 16
    # A changed file (here: a copy with another mtime in place of the link) gives a new key.
    target = sorted(root.glob("*/*.flac"))[0]
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data)
    changed = prepare_corpus("ravdess", root, tmp_path / "cache", config)
    assert changed.path != first.path and counter.calls == 24
    # The face settings do not matter to a whole-frame cache, but do to a haar one.
    assert PreprocessConfig(face_margin=0.5).fingerprint() == PreprocessConfig().fingerprint()
    assert (
        PreprocessConfig(face="haar", face_margin=0.5).fingerprint()
        != PreprocessConfig(face="haar").fingerprint()
    )


def test_interrupted_preparation_resumes(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    root = _flac_subset(shared_data, tmp_path / "ravdess", 8)
    config = PreprocessConfig(image_size=16)
    reference = ClipCache.open(prepare_corpus("ravdess", root, tmp_path / "reference", config))

    cache_root = tmp_path / "cache"
    interrupted = _Count(decode.read_audio, stop_at=4)
    monkeypatch.setattr(decode, "read_audio", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus("ravdess", root, cache_root, config)
    done_before = list(interrupted.paths)
    assert len(done_before) == 3
    (partial,) = list(cache_root.iterdir())
    assert partial.name.endswith(".partial") and not (partial / "meta.json").exists()
    progress = [json.loads(line) for line in (partial / "progress.jsonl").read_text().splitlines()]
    assert [p["reason"] for p in progress] == [None] * 3

    resumed = _Count(decode.read_audio.fn)
    monkeypatch.setattr(decode, "read_audio", resumed)
    prepared = prepare_corpus("ravdess", root, cache_root, config)
    assert resumed.calls == 5 and not set(resumed.paths) & set(done_before)  # only the clips not done
    assert [p.name for p in cache_root.iterdir()] == [prepared.path.name]
    assert prepared.path.name == reference.path.name
    got = ClipCache.open(prepared)
    assert [c.clip_id for c in got.clips] == [c.clip_id for c in reference.clips]
    for name in ("audio16", "audio8", "video16"):
        assert np.array_equal(got.array(name), reference.array(name))


def test_interrupted_after_decoding_resumes_without_decoding(
    shared_data: Path, tmp_path: Path, monkeypatch
) -> None:
    """Interrupted while finishing (compacting skipped rows, writing the index): nothing is decoded again."""
    root = _flac_subset(shared_data, tmp_path / "ravdess", 4)
    (root / "Actor_01" / "03-01-06-01-01-01-01.wav").write_text("not audio")  # one failure to compact away
    config = PreprocessConfig(image_size=16)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_write_outputs", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus("ravdess", root, tmp_path / "cache", config)
    monkeypatch.undo()
    counter = _Count(decode.read_audio)
    monkeypatch.setattr(decode, "read_audio", counter)
    prepared = prepare_corpus("ravdess", root, tmp_path / "cache", config)
    assert counter.calls == 0 and prepared.n_prepared == 4 and prepared.n_failed == 1
    assert ClipCache.open(prepared).audio16.shape[0] == 4


def test_frame_count_estimate_off_still_samples_exactly(
    shared_data: Path, tmp_path: Path, monkeypatch
) -> None:
    """When the container's frame count is wrong the clip is decoded again with the true count."""
    from mmder.data.corpora import Clip

    flv = str(shared_data / "crema-d/VideoFlash/1001_DFA_HAP_XX.flv")
    clip = Clip("c", flv, None, "x", "s")
    config = PreprocessConfig(image_size=24)
    exact = extract.process_clip(clip, config)
    frames, _ = decode.read_video_frames(flv)
    from mmder.data.features import resize_image, sample_frame_indices

    expected = np.stack([resize_image(frames[i], 24) for i in sample_frame_indices(len(frames), 16)])
    assert np.array_equal(exact["video16"], expected)
    monkeypatch.setattr(decode, "probe_video", lambda path: (17, 30.0))
    assert np.array_equal(extract.process_clip(clip, config)["video16"], expected)


@pytest.mark.slow
def test_720_flac_prepare_then_reuse_without_decoding(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    root = shared_data / "ravdess-speech-16k"
    config = PreprocessConfig(image_size=32)
    first = prepare_corpus("ravdess", root, tmp_path, config, workers=2)
    assert first.n_prepared == 720 and first.n_skipped == 0
    cache = ClipCache.open(first)
    assert cache.audio16.shape == (720, 16, 32, 32, 3) and cache.video16[:].max() == 0
    assert all(not c.has_video and c.has_audio for c in cache.clips)

    def boom(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(decode, "read_audio", boom)
    again = prepare_corpus("ravdess", root, tmp_path, config)
    assert again == first, "a prepared cache is reused: nothing is decoded again (read_audio would raise)"
