"""Decoding video frames and audio tracks from the files users actually have.

OpenCV reads frames fast but not audio, and some builds cannot open some containers; PyAV bundles
its own FFmpeg and reads both. So :func:`read_video_frames` tries OpenCV and falls back to PyAV,
and :func:`read_audio` always uses PyAV (wav, flac, mp3, and the audio tracks of mp4/flv/avi).
Every failure raises :class:`DecodeError` with a short reason a person can act on, so a corpus
preparation can skip the clip and report why instead of crashing.

Three ways to read video, all here so that no other module needs this one's private helpers:
:func:`read_video_frames` (every frame, OpenCV then PyAV), :func:`read_video_segment` (PyAV seeking
into a long recording) and :func:`read_frames_at` (only the frames a sampling needs, built on both;
what the cache uses).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import av

__all__ = [
    "DecodeError",
    "read_video_frames",
    "read_video_segment",
    "read_frames_at",
    "probe_video",
    "read_audio",
    "MIN_AUDIO_SECONDS",
    "MIN_VIDEO_FRAMES",
]

MIN_AUDIO_SECONDS = 0.1  # shorter than this cannot give 17 windows of at least one 25 ms frame each
MIN_VIDEO_FRAMES = 2  # one frame is a still image, not a clip

FrameTransform = Callable[[np.ndarray], np.ndarray]


class DecodeError(Exception):
    """A media file that cannot be used; ``reason`` is a short human explanation."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(reason if path is None else f"{path}: {reason}")


_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "mp4/mov"),
    (0, b"FLV", "flv"),
    (0, b"RIFF", "riff (wav/avi)"),
    (0, b"fLaC", "flac"),
    (0, b"ID3", "mp3"),
    (0, b"OggS", "ogg"),
    (0, b"\x1a\x45\xdf\xa3", "matroska/webm"),
)


def _container_guess(path: Path) -> str | None:
    """The container named by the file's magic bytes, if recognisable (to tell corrupt from foreign)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "mp3"
    return None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DecodeError("file not found", path)
    if not path.is_file():
        raise DecodeError("not a regular file", path)
    if path.stat().st_size == 0:
        raise DecodeError("empty file (0 bytes)", path)


def _open_error(path: Path, exc: Exception) -> DecodeError:
    kind = _container_guess(path)
    if kind is None:
        return DecodeError("not a media file (unrecognised format)", path)
    return DecodeError(f"truncated or corrupt {kind} file ({type(exc).__name__})", path)


def _open(path: Path) -> av.container.InputContainer:
    import av  # PyAV only where a file is decoded: reading a prepared cache needs none (a GPU machine)

    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise _open_error(path, exc) from exc


def _in_range(t: float, start_s: float | None, end_s: float | None) -> bool:
    return (start_s is None or t >= start_s - 1e-6) and (end_s is None or t < end_s)


def _read_frames_cv2(
    path: Path, start_s: float | None, end_s: float | None, transform: FrameTransform | None
) -> tuple[list[np.ndarray], float, int]:
    """Frames via OpenCV (RGB); returns (frames, fps, frame count the container announced)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return [], 0.0, 0
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if not (math.isfinite(fps) and fps > 0):
            fps = 0.0
        frames: list[np.ndarray] = []
        i = -1
        while True:
            ok = cap.grab()
            if not ok:
                break
            i += 1
            t = i / fps if fps else 0.0
            if end_s is not None and fps and t >= end_s:
                break
            if not _in_range(t, start_s, end_s):
                continue
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frames.append(transform(rgb) if transform else rgb)
        return frames, fps, announced
    finally:
        cap.release()


def _read_frames_av(
    path: Path, start_s: float | None, end_s: float | None, transform: FrameTransform | None
) -> tuple[list[np.ndarray], float]:
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise DecodeError("no video stream", path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        frames: list[np.ndarray] = []
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else (i / fps if fps else 0.0)
                if end_s is not None and t >= end_s:
                    break
                if not _in_range(t, start_s, end_s):
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                frames.append(transform(rgb) if transform else rgb)
        except av.error.FFmpegError as exc:
            if not frames:
                raise _open_error(path, exc) from exc
            reason = f"truncated video stream (decoding failed after {len(frames)} frames)"
            raise DecodeError(reason, path) from exc
    return frames, fps


def read_video_frames(
    path: str | os.PathLike,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    frame_transform: FrameTransform | None = None,
) -> tuple[np.ndarray, float]:
    """All frames of the first video stream as ``(N, H, W, 3)`` RGB uint8, and the frame rate.

    ``start_s``/``end_s`` keep only frames in ``[start_s, end_s)`` (a segment of a long recording).
    ``frame_transform`` is applied to each RGB frame as it is decoded (e.g. a resize), which keeps
    memory small for long or high-resolution clips. OpenCV is tried first; when it reads no frame
    PyAV decodes instead. Raises :class:`DecodeError` (file missing or empty, not a media file, no
    video stream, truncated, fewer than ``MIN_VIDEO_FRAMES`` frames).
    """
    p = Path(path)
    _check_file(p)
    frames, fps, announced = _read_frames_cv2(p, start_s, end_s, frame_transform)
    if not frames:
        frames, fps = _read_frames_av(p, start_s, end_s, frame_transform)
    elif start_s is None and end_s is None and announced > 8 and len(frames) < 0.75 * announced:
        raise DecodeError(f"truncated video (read {len(frames)} of {announced} frames)", p)
    if not frames:
        raise DecodeError("no video frame could be decoded (truncated or corrupt file)", p)
    if len(frames) < MIN_VIDEO_FRAMES:
        raise DecodeError(f"too short ({len(frames)} video frame{'s' if len(frames) != 1 else ''})", p)
    if not fps:
        fps = 25.0
    try:
        out = np.stack(frames)
    except ValueError as exc:
        raise DecodeError("frames of different sizes", p) from exc
    return out, fps


def probe_video(path: str | os.PathLike) -> tuple[int, float]:
    """Frame count and rate as announced by the container (0 when unknown); cheap, nothing decoded."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0, 0.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return max(0, n), fps if math.isfinite(fps) and fps > 0 else 0.0
    finally:
        cap.release()


def read_video_segment(
    path: str | os.PathLike, start_s: float, end_s: float | None, transform: FrameTransform
) -> int:
    """Pass the RGB frames in ``[start_s, end_s)`` to ``transform``, seeking to the key frame before.

    Why: IEMOCAP utterances lie minutes into a dialog video; decoding from the first frame for each
    of them would cost hours per corpus. Returns the number of frames passed to ``transform``.
    """
    import av

    p = Path(path)
    _check_file(p)
    with _open(p) as container:
        if not container.streams.video:
            raise DecodeError("no video stream", p)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start_s > 0 and stream.time_base is not None:
            container.seek(int(max(0.0, start_s - 1.0) / stream.time_base), stream=stream, backward=True)
        n = 0
        first: float | None = None
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    raise DecodeError("video frames carry no timestamps", p)
                first = t if first is None else first
                if end_s is not None and t >= end_s:
                    break
                if t < start_s - 1e-6:
                    continue
                transform(frame.to_ndarray(format="rgb24"))
                n += 1
        except av.error.FFmpegError as exc:
            if n == 0:
                raise _open_error(p, exc) from exc
            raise DecodeError(f"truncated video stream (decoding failed after {n} frames)", p) from exc
    if first is not None and first > start_s + 0.5:
        raise DecodeError(f"seek overshot the segment start ({first:.2f} s > {start_s:.2f} s)", p)
    if n == 0:
        raise DecodeError(f"no video frame in the segment [{start_s:.2f}, {end_s}) s", p)
    if n < MIN_VIDEO_FRAMES:
        raise DecodeError(f"too short ({n} video frame{'s' if n != 1 else ''})", p)
    return n


_PLACEHOLDER = np.zeros((1, 1, 3), np.uint8)


class _Collector:
    """A frame transform that keeps (prepared) only the frames in ``keep`` and counts them all.

    It returns a 1x1 placeholder for every frame, so the decoder's own stack stays tiny while the
    frames that matter are kept here, keyed by their index in the clip (or segment).
    """

    def __init__(self, keep: set[int] | None, prepare: FrameTransform) -> None:
        self.keep = keep
        self.prepare = prepare
        self.n = 0
        self.kept: dict[int, np.ndarray] = {}

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self.keep is None or self.n in self.keep:
            self.kept[self.n] = self.prepare(rgb)
        self.n += 1
        return _PLACEHOLDER


def _keep_set(needed: Callable[[int], set[int]], estimate: int, tolerance: int) -> set[int] | None:
    """Frames to keep when the clip has about ``estimate`` frames (None: keep all, count unknown)."""
    if estimate <= 0:
        return None
    keep: set[int] = set()
    for n in range(max(1, estimate - tolerance), estimate + tolerance + 1):
        keep |= needed(n)
    return keep


def read_frames_at(
    path: str | os.PathLike,
    needed: Callable[[int], set[int]],
    prepare: FrameTransform,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
) -> tuple[int, dict[int, np.ndarray]]:
    """The clip's (or segment's) frame count and ``prepare(frame)`` at the indices ``needed(count)``.

    Why: a sampling of 16 frames needs 16 of perhaps thousands; keeping and resizing only those
    matters for long or large videos. The count the container announces guesses the indices in one
    pass; when the true count differs the clip is decoded again, exactly. A segment starting later
    than 0 is read by :func:`read_video_segment`, falling back to reading from the start when seeking
    is impossible.
    """
    path = str(path)
    announced, fps = probe_video(path)
    if start_s is None and end_s is None:
        keep = _keep_set(needed, announced, 0)  # the announced count is exact for mp4/flv/avi in practice
    elif fps and end_s is not None:
        keep = _keep_set(needed, int(round((end_s - (start_s or 0.0)) * fps)), 2)
    else:
        keep = None
    seg = {k: v for k, v in (("start_s", start_s), ("end_s", end_s)) if v is not None}

    def run(keep: set[int] | None) -> _Collector:
        col = _Collector(keep, prepare)
        if start_s:
            try:
                read_video_segment(path, float(start_s), end_s, col)
                return col
            except DecodeError as exc:
                if not exc.reason.startswith(("seek overshot", "video frames carry no timestamps")):
                    raise  # a real problem of the file; the others fall back to reading from the start
                col = _Collector(keep, prepare)
        read_video_frames(path, frame_transform=col, **seg)
        return col

    col = run(keep)
    need = needed(col.n)
    if not need <= col.kept.keys():  # the count differed from the estimate: decode again, exactly
        col = run(need)
    return col.n, col.kept


def _announced_seconds(container: av.container.InputContainer, stream: av.audio.AudioStream) -> float | None:
    """The duration the container or stream header announces, to detect truncated files."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def read_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
) -> np.ndarray:
    """The first audio stream of any container as mono float32 at ``sample_rate`` (1-D, about [-1, 1]).

    Channels are averaged and the rate converted by FFmpeg's resampler (PyAV ``AudioResampler``);
    ``start_s``/``end_s`` cut a segment. Raises :class:`DecodeError` (file missing or empty, not a
    media file, no audio stream, truncated, shorter than ``MIN_AUDIO_SECONDS``).
    """
    import av

    p = Path(path)
    _check_file(p)
    chunks: list[np.ndarray] = []
    with _open(p) as container:
        if not container.streams.audio:
            raise DecodeError("no audio stream", p)
        stream = container.streams.audio[0]
        announced = _announced_seconds(container, stream)
        # Keep the channels through the resampler and average them here: FFmpeg's own downmix
        # scales stereo by 1/sqrt(2) per channel, which is not the mean.
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sample_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise _open_error(p, exc) from exc
            raise DecodeError("truncated audio stream", p) from exc
    x = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if x.size == 0:
        raise DecodeError("no audio sample could be decoded (truncated or corrupt file)", p)
    if announced is not None and announced > 0.5 and x.size < 0.75 * announced * sample_rate:
        raise DecodeError(f"truncated audio ({x.size / sample_rate:.2f} s of {announced:.2f} s announced)", p)
    if start_s is not None or end_s is not None:
        a = 0 if start_s is None else max(0, int(round(start_s * sample_rate)))
        b = x.size if end_s is None else min(x.size, int(round(end_s * sample_rate)))
        x = x[a:b]
    if x.size == 0:
        raise DecodeError("no audio samples in the requested segment", p)
    if x.size < MIN_AUDIO_SECONDS * sample_rate:
        raise DecodeError(f"too short ({x.size / sample_rate:.3f} s of audio)", p)
    if not np.all(np.isfinite(x)):
        raise DecodeError("audio contains NaN or infinite samples", p)
    return x
