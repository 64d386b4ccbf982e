"""One clip -> its four fixed-shape uint8 arrays (16/8 video frames, 16/8 spectrogram images).

Why a module of its own: this is the per-clip science (which frames, which crop, which windows),
run in worker processes by :mod:`mmder.data.store`; keeping it apart from the on-disk bookkeeping
makes it testable on one file and keeps the store free of OpenCV details.

Frames. ``face='none'`` resizes whole frames to ``S x S`` whatever their aspect ratio, as the
authors' code does. ``face='haar'`` crops one square face box per clip (:mod:`mmder.data.faces`),
falling back to a centre crop when too few frames show a face. A clip's ``extra`` ``crop`` (e.g.
IEMOCAP's speaker half) is applied first, ``start_s``/``end_s`` cut a segment. Only the frames that
will be sampled are kept and resized (:func:`mmder.data.decode.read_frames_at`).
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from mmder.data import decode
from mmder.data.corpora import Clip
from mmder.data.features import (
    min_window_seconds,
    resize_image,
    sample_frame_indices,
    spectrogram_image,
    spectrogram_images,
    window_bounds,
)
from mmder.data.preprocess import ARRAY_NAMES, ARRAY_STEPS, PreprocessConfig

__all__ = ["process_clip", "process_clip_with_faces", "present_arrays", "needed_frames"]


def _crop(frame: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    a, b = int(round(x0 * w)), int(round(x1 * w))
    c, d = int(round(y0 * h)), int(round(y1 * h))
    return frame[max(0, c) : min(h, d), max(0, a) : min(w, b)]


def needed_frames(n: int) -> set[int]:
    """Frame indices the 16- and 8-frame samplings of an ``n``-frame clip read."""
    return set(sample_frame_indices(n, 16).tolist()) | set(sample_frame_indices(n, 8).tolist())


def _work_scale(h: int, w: int, size: int) -> float:
    """Downscale for face search frames: enough pixels for a sharp ``size`` crop, no more."""
    return min(1.0, max(2 * size, 320) / max(1, min(h, w)))


def _video_arrays(path: str, config: PreprocessConfig, extra: dict, seg: dict) -> tuple[dict, dict]:
    """``video16``/``video8`` uint8 arrays of one clip and its face record (empty for face='none')."""
    s = config.image_size
    box = tuple(float(v) for v in extra["crop"]) if extra.get("crop") else None

    def prepare(frame: np.ndarray) -> np.ndarray:
        if box is not None:
            frame = _crop(frame, box)
        if config.face == "none":
            return resize_image(frame, s)
        h, w = frame.shape[:2]
        k = _work_scale(h, w, s)
        if k < 0.75:  # a slight shrink costs a resize and saves little
            frame = cv2.resize(frame, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame)

    n, kept = decode.read_frames_at(path, needed_frames, prepare, **seg)
    i16, i8 = sample_frame_indices(n, 16), sample_frame_indices(n, 8)
    face: dict = {}
    if config.face == "haar":
        from mmder.data.faces import clip_face_box, crop_box

        try:
            frames16 = [kept[i] for i in i16]
        except KeyError as exc:  # pragma: no cover - read_frames_at guarantees them
            raise decode.DecodeError(f"internal: frame {exc} not kept", path) from exc
        if len({kept[i].shape for i in set(i16.tolist()) | set(i8.tolist())}) != 1:
            raise decode.DecodeError("frames of different sizes", path)
        fb = clip_face_box(frames16, margin=config.face_margin, min_fraction=config.face_min_fraction)
        h, w = frames16[0].shape[:2]
        face = {
            "face_fraction": round(fb.fraction, 4),
            "face_crop": "centre" if fb.fallback else "face",
            "face_note": fb.note,
            "face_box": [round(v, 4) for v in fb.relative(w, h)],
        }
        for i in set(i16.tolist()) | set(i8.tolist()):
            kept[i] = resize_image(crop_box(kept[i], fb.box), s)
    out = {
        "video16": np.stack([kept[i] for i in i16]),
        "video8": np.stack([kept[i] for i in i8]),
    }
    return out, face


def _segment(extra: dict) -> dict:
    out = {}
    for k in ("start_s", "end_s"):
        if extra.get(k) not in (None, ""):
            out[k] = float(extra[k])
    return out


def _audio_arrays(path: str, config: PreprocessConfig, seg: dict) -> dict[str, np.ndarray]:
    s, sr = config.image_size, config.sample_rate
    x = decode.read_audio(path, sr, **seg)
    shortest = min_window_seconds(16)
    if x.size < math.ceil(shortest * sr):
        raise decode.DecodeError(
            f"too short for the spectrogram windows ({x.size / sr:.3f} s; 16 windows of 2/17 of the clip "
            f"need at least {shortest:.4f} s to hold one 25 ms frame each)",
            path,
        )
    peak = float(np.max(np.abs(x)))
    if peak > 0:
        x = x / peak  # the authors normalise the whole clip by max |x|
    out = {}
    for name in ("audio16", "audio8"):
        bounds = window_bounds(x.size, ARRAY_STEPS[name])
        if config.spectrogram_norm != "image" or config.spectrogram_channels != "colormap":
            out[name] = spectrogram_images(
                x,
                sr,
                bounds,
                kind=config.spectrogram,
                size=s,
                colormap=config.colormap,
                n_mfcc=config.n_mfcc,
                n_mels=config.n_mels,
                norm=config.spectrogram_norm,
                channels=config.spectrogram_channels,
            )
            continue
        out[name] = np.stack(
            [
                spectrogram_image(
                    x[a:b],
                    sr,
                    kind=config.spectrogram,
                    size=s,
                    colormap=config.colormap,
                    n_mfcc=config.n_mfcc,
                    n_mels=config.n_mels,
                    normalize=False,
                )
                for a, b in window_bounds(x.size, ARRAY_STEPS[name])
            ]
        )
    return out


def process_clip_with_faces(clip: Clip, config: PreprocessConfig) -> tuple[dict[str, np.ndarray], dict]:
    """Decode one clip into its four uint8 arrays (zeros for an absent modality) and its face record.

    Raises :class:`~mmder.data.decode.DecodeError` naming the modality that failed.
    """
    s = config.image_size
    extra = dict(clip.extra) if clip.extra else {}
    seg = _segment(extra)
    out = {name: np.zeros((ARRAY_STEPS[name], s, s, 3), np.uint8) for name in ARRAY_NAMES}
    face: dict = {}
    if clip.video is None and clip.audio is None:
        raise decode.DecodeError("clip has neither video nor audio")
    for kind, path in (("video", clip.video), ("audio", clip.audio)):
        # Decoders report an unreadable file as "not a media file"; say what it is instead.
        if path is not None and os.path.isfile(path) and not os.access(path, os.R_OK):
            raise decode.DecodeError(f"{kind}: permission denied (the file is not readable)", path)
    if clip.video is not None:
        try:
            video, face = _video_arrays(clip.video, config, extra, seg)
        except decode.DecodeError as exc:
            raise decode.DecodeError(f"video: {exc.reason}", clip.video) from exc
        out.update(video)
    if clip.audio is not None:
        try:
            out.update(_audio_arrays(clip.audio, config, seg))
        except decode.DecodeError as exc:
            raise decode.DecodeError(f"audio: {exc.reason}", clip.audio) from exc
    return out, face


def process_clip(clip: Clip, config: PreprocessConfig) -> dict[str, np.ndarray]:
    """Decode one clip into its four uint8 arrays (see :func:`process_clip_with_faces`)."""
    return process_clip_with_faces(clip, config)[0]


def present_arrays(clip: Clip) -> tuple[str, ...]:
    """The arrays a clip has content for (the others stay zero, and sparse on disk)."""
    return (("video16", "video8") if clip.video is not None else ()) + (
        ("audio16", "audio8") if clip.audio is not None else ()
    )
