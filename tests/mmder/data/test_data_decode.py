"""Decoding the files users have (read in place from the shared samples) and failing with reasons."""

from __future__ import annotations

import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmder.data.decode import DecodeError, read_audio, read_video_frames


def test_flv_video_and_its_mp3_track(shared_data: Path) -> None:
    path = shared_data / "crema-d/VideoFlash/1001_DFA_ANG_XX.flv"
    frames, fps = read_video_frames(path)
    assert frames.dtype == np.uint8 and frames.ndim == 4
    assert frames.shape[1:] == (360, 480, 3) and frames.shape[0] > 50
    assert fps == pytest.approx(29.97, abs=0.01)
    audio = read_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size / 16000 == pytest.approx(frames.shape[0] / fps, abs=0.25)
    assert 0.01 < np.abs(audio).max() <= 1.0


def test_mp4_video_and_its_aac_track(shared_data: Path) -> None:
    path = shared_data / "ravdess-av/01-01-07-02-02-01-01_1.mp4"
    frames, fps = read_video_frames(path, frame_transform=lambda f: cv2.resize(f, (64, 48)))
    assert frames.shape[1:] == (48, 64, 3) and frames.shape[0] > 100
    assert fps == pytest.approx(29.97, abs=0.01)
    audio = read_audio(path, sample_rate=8000)
    assert audio.size / 8000 == pytest.approx(frames.shape[0] / fps, abs=0.25)


def test_flac_and_mp3(shared_data: Path) -> None:
    flac = next(iter(sorted((shared_data / "ravdess-speech-16k/Actor_01").glob("*.flac"))))
    x = read_audio(flac)
    assert x.dtype == np.float32 and 2.0 < x.size / 16000 < 6.0
    mp3 = shared_data / "crema-d/AudioMP3/1002_DFA_ANG_XX.mp3"
    y = read_audio(mp3)
    assert 1.5 < y.size / 16000 < 4.0 and np.abs(y).max() > 0.01
    # resampling keeps the duration
    assert read_audio(mp3, sample_rate=22050).size / 22050 == pytest.approx(y.size / 16000, abs=0.01)


def test_segment(shared_data: Path) -> None:
    path = shared_data / "crema-d/VideoFlash/1001_DFA_ANG_XX.flv"
    audio = read_audio(path, start_s=0.5, end_s=1.5)
    assert audio.size == 16000
    frames, fps = read_video_frames(path, start_s=0.5, end_s=1.5)
    assert abs(frames.shape[0] - fps) <= 1


def _write_wav(path: Path, seconds: float, sr: int = 16000, channels: int = 2) -> None:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(np.repeat(x[:, None], channels, axis=1).tobytes())


def test_wav_stereo_to_mono_and_resample(tmp_path: Path) -> None:
    _write_wav(tmp_path / "a.wav", 1.0, sr=44100)
    x = read_audio(tmp_path / "a.wav")
    assert x.shape == (16000,) and np.abs(x).max() == pytest.approx(0.5, abs=0.02)


def _reason(fn, path: Path) -> str:
    with pytest.raises(DecodeError) as info:
        fn(path)
    assert info.value.path == str(path)
    return info.value.reason


def test_failures_have_reasons(tmp_path: Path, shared_data: Path) -> None:
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio at all\n")
    assert _reason(read_video_frames, tmp_path / "zero.mp4") == "empty file (0 bytes)"
    assert _reason(read_audio, tmp_path / "text.wav").startswith("not a media file")
    assert _reason(read_video_frames, tmp_path / "text.wav").startswith("not a media file")
    assert _reason(read_audio, tmp_path / "missing.wav") == "file not found"

    _write_wav(tmp_path / "short.wav", 0.05)
    assert _reason(read_audio, tmp_path / "short.wav").startswith("too short")
    assert _reason(read_video_frames, tmp_path / "short.wav") == "no video stream"

    silent_video = tmp_path / "silent.mp4"
    writer = cv2.VideoWriter(str(silent_video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (32, 32))
    for i in range(10):
        writer.write(np.full((32, 32, 3), i * 20, np.uint8))
    writer.release()
    assert read_video_frames(silent_video)[0].shape == (10, 32, 32, 3)
    assert _reason(read_audio, silent_video) == "no audio stream"

    flv = (shared_data / "crema-d/VideoFlash/1001_DFA_ANG_XX.flv").read_bytes()
    (tmp_path / "cut.flv").write_bytes(flv[: len(flv) // 3])
    assert "truncated" in _reason(read_video_frames, tmp_path / "cut.flv")
    assert "truncated" in _reason(read_audio, tmp_path / "cut.flv")
    mp4 = (shared_data / "ravdess-av/01-01-07-02-02-01-01_1.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(mp4[:20000])
    assert "truncated" in _reason(read_video_frames, tmp_path / "cut.mp4")
    assert "truncated" in _reason(read_audio, tmp_path / "cut.mp4")


def test_pyav_fallback_when_opencv_reads_nothing(shared_data: Path, monkeypatch) -> None:
    from mmder.data import decode

    path = shared_data / "crema-d/VideoFlash/1001_DFA_SAD_XX.flv"
    by_cv2, fps_cv2 = read_video_frames(path)
    monkeypatch.setattr(decode, "_read_frames_cv2", lambda *args: ([], 0.0, 0))
    by_av, fps_av = read_video_frames(path)
    assert by_av.shape == by_cv2.shape and fps_av == pytest.approx(fps_cv2, abs=0.01)
    assert np.abs(by_av.astype(int) - by_cv2.astype(int)).mean() < 3  # same frames, colour conversion aside
