"""Decode a corpus once into fixed-shape uint8 arrays that training reads memory-mapped.

Why: decoding video and drawing 24 spectrogram images per clip costs far more than a training step
of a small model, and every fold, setting and seed of a benchmark reads the same inputs. So
:func:`prepare_corpus` writes, per corpus and preprocessing config, one folder::

    <cache_root>/<corpus>-<hash>/
        video16.npy   (N, 16, S, S, 3) uint8   16 frames sampled uniformly over the clip
        video8.npy    (N,  8, S, S, 3) uint8    8 frames sampled uniformly over the clip
        audio16.npy   (N, 16, S, S, 3) uint8   spectrogram images of 16 windows of 2/17 of the clip
        audio8.npy    (N,  8, S, S, 3) uint8   spectrogram images of  8 windows of 2/9
        clips.csv     index, clip_id, label, label_index, speaker, group, has_video, has_audio,
                      face_fraction, face_crop ("face" or "centre" fallback), face_note, face_box
                      (x0 y0 x1 y1 as fractions of the frame); face columns are empty for face='none'
        progress.jsonl  one line per decoded clip (what resuming reads), kept as a log
        classes.json  class names in label-index order
        skipped.csv   path, reason (listing problems and media that failed to decode)
        meta.json     corpus, root, options, config, counts (written last)

Key. The hash covers the listing (clip ids, labels, speakers, paths, and each file's size and
modification time in ns: a cheap stand-in for a checksum that catches replaced or re-encoded files
without reading gigabytes), the adapter options and :meth:`PreprocessConfig.fingerprint`. Unchanged
media and settings reuse the folder without decoding; a changed file or setting gives a new folder.

Resuming. The folder is built as ``.<name>.partial`` next to it and renamed when complete, so an
unfinished cache never looks complete. Every finished clip (prepared or failed, with its reason) is
appended to ``progress.jsonl`` in the partial folder as soon as its rows are written, so an
interrupted preparation (Ctrl-C, a killed job, a crash) continues on the next call with the same key
and decodes only the clips not done yet. A lock on the partial folder (``flock``) makes a second
process with the same key wait and then reuse the finished cache instead of decoding in parallel.

Frames. ``face='none'`` resizes whole frames to ``S x S`` whatever their aspect ratio, as the
authors' code does. ``face='haar'`` crops one square face box per clip (:mod:`mmder.data.faces`),
falling back to a centre crop, recorded in ``clips.csv``, when too few frames show a face. A clip's
``extra`` ``crop`` (e.g. IEMOCAP's speaker half) is applied first, ``start_s``/``end_s`` cut a segment.
Only the frames that will be sampled are kept and resized, which matters for long or large videos.

A clip with only one modality stores zeros for the other (never written, so sparse on disk) and says
so in ``has_video``/``has_audio``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from mmder.data import decode
from mmder.data.corpora import Clip, CorpusListing, list_corpus
from mmder.data.features import (
    min_window_seconds,
    resize_image,
    sample_frame_indices,
    spectrogram_image,
    window_bounds,
)

try:  # POSIX only; without it two processes preparing the same cache just both do the work
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CACHE_VERSION",
    "FACE_MODES",
    "ARRAY_NAMES",
    "PreprocessConfig",
    "PreparedCache",
    "CachedClip",
    "ClipCache",
    "prepare_corpus",
    "cache_key",
    "partial_path",
]

CACHE_VERSION = 2  # bump when the content of a cache changes for the same settings
FACE_MODES: tuple[str, ...] = ("none", "haar")
ARRAY_NAMES: tuple[str, ...] = ("video16", "video8", "audio16", "audio8")
_STEPS = {"video16": 16, "video8": 8, "audio16": 16, "audio8": 8}
_PROGRESS = "progress.jsonl"


@dataclass(frozen=True)
class PreprocessConfig:
    """Every setting that changes the cached arrays (and nothing else).

    ``face_margin`` (fraction of the face size added on each side) and ``face_min_fraction`` (the
    share of sampled frames that must show a face, else a centre crop) only matter for ``face='haar'``.
    """

    image_size: int = 224
    face: str = "none"
    spectrogram: str = "mfcc"
    colormap: str = "viridis"
    sample_rate: int = 16000
    n_mfcc: int = 13
    n_mels: int = 40
    face_margin: float = 0.2
    face_min_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"image_size must be an int >= 8, got {self.image_size!r}")
        if self.face not in FACE_MODES:
            raise ValueError(f"face must be one of {FACE_MODES}, got {self.face!r}")
        if self.spectrogram not in ("mfcc", "logmel"):
            raise ValueError(f"spectrogram must be 'mfcc' or 'logmel', got {self.spectrogram!r}")
        if self.colormap not in ("viridis", "gray"):
            raise ValueError(f"colormap must be 'viridis' or 'gray', got {self.colormap!r}")
        if self.sample_rate < 4000:
            raise ValueError(f"sample_rate must be at least 4000, got {self.sample_rate}")
        if not 1 <= self.n_mfcc < self.n_mels:
            raise ValueError(f"need 1 <= n_mfcc < n_mels, got n_mfcc={self.n_mfcc}, n_mels={self.n_mels}")
        if not 0.0 <= self.face_margin <= 2.0:
            raise ValueError(f"face_margin must lie in [0, 2], got {self.face_margin!r}")
        if not 0.0 <= self.face_min_fraction <= 1.0:
            raise ValueError(f"face_min_fraction must lie in [0, 1], got {self.face_min_fraction!r}")

    def fingerprint(self) -> str:
        """A stable short hash of the settings and ``CACHE_VERSION`` (same across runs and machines)."""
        d = asdict(self)
        if self.face == "none":  # face settings change nothing then: keep the key of whole-frame caches
            d.pop("face_margin")
            d.pop("face_min_fraction")
        payload = json.dumps({"cache_version": CACHE_VERSION, **d}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        """Build from a dict (e.g. a YAML section), rejecting unknown keys by name."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown preprocessing key(s): {', '.join(unknown)}; allowed: {sorted(names)}")
        return cls(**d)


@dataclass(frozen=True)
class PreparedCache:
    """Where a prepared cache is and what went in.

    ``n_skipped`` counts every line of the skip report (listing problems and decode failures),
    ``n_failed`` only the listed clips that failed to decode, ``n_face_fallback`` the clips that got
    a centre crop because too few frames showed a face.
    """

    path: Path
    n_prepared: int
    n_skipped: int
    skip_report: Path
    n_face_fallback: int = 0
    n_failed: int = 0


@dataclass(frozen=True)
class CachedClip:
    """One row of ``clips.csv``; ``index`` is the row in the arrays.

    ``face_fraction`` is the share of sampled frames with a detected face and ``face_crop`` is
    ``"face"`` or ``"centre"`` (fallback) for ``face='haar'``; None and ``""`` otherwise.
    """

    index: int
    clip_id: str
    label: str
    label_index: int
    speaker: str
    group: str | None
    has_video: bool
    has_audio: bool
    face_fraction: float | None = None
    face_crop: str = ""
    face_note: str = ""


# --------------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------------


def _stat(path: str | None) -> list | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return [path, None, None]
    return [path, st.st_size, st.st_mtime_ns]


def cache_key(
    corpus: str, listing: CorpusListing, corpus_options: dict | None, config: PreprocessConfig
) -> str:
    """The hash naming a cache folder: listing (ids, labels, files, sizes, mtimes), options, config."""
    h = hashlib.sha256()
    head = {
        "corpus": corpus,
        "options": corpus_options or {},
        "config": config.fingerprint(),
        "classes": listing.classes,
        "skipped": [list(s) for s in listing.skipped],
    }
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for c in listing.clips:
        row = [c.clip_id, c.label, c.speaker, c.group, _stat(c.video), _stat(c.audio), repr(c.extra)]
        h.update(json.dumps(row, default=str).encode())
    return h.hexdigest()[:16]


def partial_path(final: Path) -> Path:
    """Where the cache ``final`` is built (and resumed) until it is complete."""
    return final.parent / f".{final.name}.partial"


# --------------------------------------------------------------------------------------------------
# one clip: video
# --------------------------------------------------------------------------------------------------

_PLACEHOLDER = np.zeros((1, 1, 3), np.uint8)


def _crop(frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    a, b = int(round(x0 * w)), int(round(x1 * w))
    c, d = int(round(y0 * h)), int(round(y1 * h))
    return frame[max(0, c) : min(h, d), max(0, a) : min(w, b)]


def _needed(n: int) -> set[int]:
    """Frame indices the 16- and 8-frame samplings of an ``n``-frame clip read."""
    return set(sample_frame_indices(n, 16).tolist()) | set(sample_frame_indices(n, 8).tolist())


def _keep_set(estimate: int, tolerance: int) -> set[int] | None:
    """Frames to keep when the clip has about ``estimate`` frames (None: keep all, count unknown)."""
    if estimate <= 0:
        return None
    keep: set[int] = set()
    for n in range(max(1, estimate - tolerance), estimate + tolerance + 1):
        keep |= _needed(n)
    return keep


class _Collector:
    """A ``frame_transform`` that keeps (prepared) only the frames in ``keep`` and counts them all.

    It returns a 1x1 placeholder for every frame, so the decoder's own stack stays tiny while the
    frames that matter are kept here, keyed by their index in the clip (or segment).
    """

    def __init__(self, keep: set[int] | None, prepare: Callable[[np.ndarray], np.ndarray]) -> None:
        self.keep = keep
        self.prepare = prepare
        self.n = 0
        self.kept: dict[int, np.ndarray] = {}

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self.keep is None or self.n in self.keep:
            self.kept[self.n] = self.prepare(rgb)
        self.n += 1
        return _PLACEHOLDER


def _probe(path: str) -> tuple[int, float]:
    """Frame count and rate as announced by the container (0 when unknown); cheap, nothing decoded."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return 0, 0.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return max(0, n), fps if math.isfinite(fps) and fps > 0 else 0.0
    finally:
        cap.release()


def _read_segment(path: str, start_s: float, end_s: float | None, transform: Callable) -> int:
    """Frames in ``[start_s, end_s)`` via PyAV, seeking to the key frame before ``start_s``.

    Why: IEMOCAP utterances lie minutes into a dialog video; decoding from the first frame for each
    of them would cost hours per corpus. Returns the number of frames passed to ``transform``.
    """
    p = Path(path)
    decode._check_file(p)
    with decode._open(p) as container:
        if not container.streams.video:
            raise decode.DecodeError("no video stream", p)
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
                    raise decode.DecodeError("video frames carry no timestamps", p)
                first = t if first is None else first
                if end_s is not None and t >= end_s:
                    break
                if t < start_s - 1e-6:
                    continue
                transform(frame.to_ndarray(format="rgb24"))
                n += 1
        except decode.av.error.FFmpegError as exc:
            if n == 0:
                raise decode._open_error(p, exc) from exc
            raise decode.DecodeError(f"truncated video stream (decoding failed after {n} frames)", p) from exc
    if first is not None and first > start_s + 0.5:
        raise decode.DecodeError(f"seek overshot the segment start ({first:.2f} s > {start_s:.2f} s)", p)
    if n == 0:
        raise decode.DecodeError(f"no video frame in the segment [{start_s:.2f}, {end_s}) s", p)
    if n < decode.MIN_VIDEO_FRAMES:
        raise decode.DecodeError(f"too short ({n} video frame{'s' if n != 1 else ''})", p)
    return n


def _decode_frames(
    path: str, seg: dict, prepare: Callable[[np.ndarray], np.ndarray]
) -> tuple[int, dict[int, np.ndarray]]:
    """The clip's frame count and its prepared frames at the indices the samplings need."""
    announced, fps = _probe(path)
    start_s, end_s = seg.get("start_s"), seg.get("end_s")
    if start_s is None and end_s is None:
        keep = _keep_set(announced, 0)  # the announced count is exact for mp4/flv/avi in practice
    elif fps and end_s is not None:
        keep = _keep_set(int(round((end_s - (start_s or 0.0)) * fps)), 2)
    else:
        keep = None

    def run(keep: set[int] | None) -> _Collector:
        col = _Collector(keep, prepare)
        if start_s:
            try:
                _read_segment(path, float(start_s), end_s, col)
                return col
            except decode.DecodeError as exc:
                if not exc.reason.startswith(("seek overshot", "video frames carry no timestamps")):
                    raise  # a real problem of the file; the others fall back to reading from the start
                col = _Collector(keep, prepare)
        decode.read_video_frames(path, frame_transform=col, **seg)
        return col

    col = run(keep)
    need = _needed(col.n)
    if not need <= col.kept.keys():  # the count differed from the estimate: decode again, exactly
        col = run(need)
    return col.n, col.kept


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

    n, kept = _decode_frames(path, seg, prepare)
    i16, i8 = sample_frame_indices(n, 16), sample_frame_indices(n, 8)
    face: dict = {}
    if config.face == "haar":
        from mmder.data.faces import clip_face_box, crop_box

        try:
            frames16 = [kept[i] for i in i16]
        except KeyError as exc:  # pragma: no cover - _decode_frames guarantees them
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


# --------------------------------------------------------------------------------------------------
# one clip: audio, and the whole clip
# --------------------------------------------------------------------------------------------------


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
                for a, b in window_bounds(x.size, _STEPS[name])
            ]
        )
    return out


def _process_clip_with_faces(clip: Clip, config: PreprocessConfig) -> tuple[dict[str, np.ndarray], dict]:
    """Decode one clip into its four uint8 arrays (zeros for an absent modality) and its face record.

    Raises :class:`~mmder.data.decode.DecodeError` naming the modality that failed.
    """
    s = config.image_size
    extra = dict(clip.extra) if clip.extra else {}
    seg = _segment(extra)
    out = {name: np.zeros((_STEPS[name], s, s, 3), np.uint8) for name in ARRAY_NAMES}
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


def _process_clip(clip: Clip, config: PreprocessConfig) -> dict[str, np.ndarray]:
    """Decode one clip into its four uint8 arrays (see :func:`_process_clip_with_faces`)."""
    return _process_clip_with_faces(clip, config)[0]


def _present(clip: Clip) -> tuple[str, ...]:
    """The arrays a clip has content for."""
    return (("video16", "video8") if clip.video is not None else ()) + (
        ("audio16", "audio8") if clip.audio is not None else ()
    )


# Per-process memmaps of the folder being written (workers open them once).
_OPEN: dict[str, dict[str, np.ndarray]] = {}


def _arrays_rw(folder: str) -> dict[str, np.ndarray]:
    if folder not in _OPEN:
        _close_open()
        _OPEN[folder] = {n: np.load(os.path.join(folder, f"{n}.npy"), mmap_mode="r+") for n in ARRAY_NAMES}
    return _OPEN[folder]


def _close_open() -> None:
    for arrays in _OPEN.values():
        for a in arrays.values():
            a.flush()
    _OPEN.clear()


def _prepare_one(i: int, clip: Clip, folder: str, config: PreprocessConfig) -> tuple[int, str | None, dict]:
    """Decode clip ``i`` and write its rows into the memmaps in ``folder``.

    Returns ``(i, reason or None, face record)``. Never raises for a bad clip: every failure becomes
    a reason, so one file cannot stop a corpus (``BaseException`` such as Ctrl-C still stops it).
    """
    try:
        arrays, face = _process_clip_with_faces(clip, config)
    except decode.DecodeError as exc:
        return i, exc.reason, {}
    except PermissionError as exc:
        return i, f"permission denied: {exc.filename or exc}", {}
    except Exception as exc:  # noqa: BLE001 - a broken clip must never be fatal
        return i, f"{type(exc).__name__}: {exc}", {}
    mm = _arrays_rw(folder)
    for name in _present(clip):  # absent modalities stay zero (and sparse on disk): nothing to write
        mm[name][i] = arrays[name]
    return i, None, face


def _worker_init() -> None:
    """Keep each worker single-threaded: the pool is the parallelism."""
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------------------


def _progress(it: Iterable, total: int, initial: int, enabled: bool, desc: str) -> Iterator:
    if not enabled:
        yield from it
        return
    from tqdm import tqdm

    yield from tqdm(it, total=total, initial=initial, desc=desc, unit="clip")


def _write_csv(path: Path, header: list[str], rows: Iterable[Iterable[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _from_meta(path: Path) -> PreparedCache | None:
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("cache_version") != CACHE_VERSION or not all(
        (path / f"{n}.npy").is_file() for n in ARRAY_NAMES
    ):
        return None
    return PreparedCache(
        path,
        int(meta["n_prepared"]),
        int(meta["n_skipped"]),
        path / "skipped.csv",
        int(meta.get("faces", {}).get("n_centre_fallback", 0)),
        int(meta.get("n_failed", 0)),
    )


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``folder``; yields whether ``folder`` is still that directory.

    (Another process may have finished and renamed it while this one waited.)
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(folder).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        yield same
    finally:
        os.close(fd)


def _read_progress(path: Path, clips: list[Clip]) -> dict[int, dict]:
    """Finished clips recorded by an earlier, interrupted run (lines it could not finish are ignored)."""
    done: dict[int, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            i = int(rec["i"])
        except (ValueError, KeyError, TypeError):
            continue
        if 0 <= i < len(clips) and rec.get("clip_id") == clips[i].clip_id:
            done[i] = rec
    return done


def _open_partial(partial: Path, n: int, s: int, clips: list[Clip]) -> dict[int, dict]:
    """Arrays and progress of the partial folder: resumed when they match, else started afresh."""
    done = _read_progress(partial / _PROGRESS, clips)
    kept = sum(1 for r in done.values() if r.get("reason") is None)
    ok_rows = {n, kept} if len(done) == n else {n}
    for name in ARRAY_NAMES:
        f = partial / f"{name}.npy"
        try:
            arr = np.load(f, mmap_mode="r")
            ok = (
                arr.dtype == np.uint8 and arr.shape[1:] == (_STEPS[name], s, s, 3) and arr.shape[0] in ok_rows
            )
            del arr
        except (OSError, ValueError):
            ok = False
        if not ok:
            break
    else:
        return done
    # Nothing usable (first run, or a foreign/corrupt partial folder): start from scratch.
    for p in partial.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    for name in ARRAY_NAMES:
        np.lib.format.open_memmap(
            partial / f"{name}.npy", mode="w+", dtype=np.uint8, shape=(n, _STEPS[name], s, s, 3)
        ).flush()
    return {}


def prepare_corpus(
    corpus: str,
    root: str | os.PathLike,
    cache_root: str | os.PathLike,
    config: PreprocessConfig | None = None,
    *,
    corpus_options: dict | None = None,
    workers: int = 1,
    progress: bool = False,
    start_method: str = "spawn",
    limit: int | None = None,
) -> PreparedCache:
    """Decode corpus ``corpus`` at ``root`` into a cache under ``cache_root`` (see module docstring).

    Returns at once, without decoding, when the same listing, options and config were prepared
    before; resumes an interrupted preparation with the same key. Broken clips are skipped and listed
    in ``skipped.csv`` with their reason; ``ValueError`` only when no clip at all could be prepared.
    ``workers > 1`` decodes in that many processes, started with ``start_method``: "spawn" (default)
    never inherits a parent's threads (torch, Ray) but re-imports the caller's main module, so a
    script must call this under ``if __name__ == "__main__":``; "fork" does not need that.
    ``progress`` shows a tqdm bar. ``limit`` keeps only the first ``limit`` listed clips (smoke tests,
    benchmarks); the key then differs from the full corpus's.
    """
    config = config or PreprocessConfig()
    options = dict(corpus_options or {})
    listing = list_corpus(corpus, root, **options)
    if limit is not None:
        listing.clips = listing.clips[: max(0, int(limit))]
    cache_root = Path(cache_root).resolve()
    final = cache_root / f"{corpus}-{cache_key(corpus, listing, options, config)}"
    if not listing.clips:
        existing = _from_meta(final)
        if existing is not None:
            return existing
        raise ValueError(f"corpus {corpus!r} at {root} lists no usable clip; skipped: {listing.skipped[:5]}")
    partial = partial_path(final)
    while True:
        existing = _from_meta(final)
        if existing is not None:
            return existing
        cache_root.mkdir(parents=True, exist_ok=True)
        partial.mkdir(exist_ok=True)
        with _locked(partial) as still_there:
            if not still_there:
                continue  # another process completed (renamed) it while we waited: look again
            existing = _from_meta(final)
            if existing is not None:
                return existing
            return _build(
                partial, final, corpus, root, options, config, listing, workers, progress, start_method
            )


def _build(
    partial: Path,
    final: Path,
    corpus: str,
    root: str | os.PathLike,
    options: dict,
    config: PreprocessConfig,
    listing: CorpusListing,
    workers: int,
    progress: bool,
    start_method: str,
) -> PreparedCache:
    """Decode the clips not yet done into ``partial``, then finish it and rename it to ``final``."""
    t0 = time.time()
    clips = listing.clips
    n, s = len(clips), config.image_size
    done = _open_partial(partial, n, s, clips)
    todo = [i for i in range(n) if i not in done]
    log = (partial / _PROGRESS).open("a", encoding="utf-8")

    def record(i: int, reason: str | None, face: dict) -> None:
        rec = {"i": i, "clip_id": clips[i].clip_id, "reason": reason, **face}
        done[i] = rec
        log.write(json.dumps(rec) + "\n")
        log.flush()

    desc = f"prepare {corpus}"
    try:
        if workers <= 1 or len(todo) <= 1:
            results = (_prepare_one(i, clips[i], str(partial), config) for i in todo)
            try:
                for i, reason, face in _progress(results, n, n - len(todo), progress, desc):
                    record(i, reason, face)
            finally:
                _close_open()
        else:
            ctx = multiprocessing.get_context(start_method)
            try:
                with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as ex:
                    futs = [ex.submit(_prepare_one, i, clips[i], str(partial), config) for i in todo]
                    try:
                        for fut in _progress(cf.as_completed(futs), n, n - len(todo), progress, desc):
                            record(*fut.result())
                    except BaseException:
                        ex.shutdown(wait=False, cancel_futures=True)  # stop promptly on Ctrl-C
                        raise
            except cf.process.BrokenProcessPool as exc:
                raise RuntimeError(
                    "a preparation worker died: a decoder crashed, or (with the 'spawn' start method) the "
                    "calling script does not guard prepare_corpus under `if __name__ == '__main__':`; "
                    "try start_method='fork' or workers=1 (finished clips are kept and resumed)"
                ) from exc
    finally:
        log.close()
    reasons = {i: r["reason"] for i, r in done.items() if r.get("reason") is not None}
    keep = [i for i in range(n) if i not in reasons]
    if not keep:
        first = [(_clip_path(clips[i]), r) for i, r in list(reasons.items())[:5]]
        shutil.rmtree(partial, ignore_errors=True)  # a definite answer, not an interruption
        raise ValueError(f"no clip of corpus {corpus!r} at {root} could be prepared; first failures: {first}")
    if len(keep) < n:
        _compact(partial, keep, n, clips)
    _write_outputs(partial, corpus, root, options, config, listing, keep, reasons, done, time.time() - t0)
    if final.exists():  # an incomplete folder of that name (complete ones were returned before)
        shutil.rmtree(final)
    os.rename(partial, final)
    result = _from_meta(final)
    assert result is not None
    return result


def _clip_path(clip: Clip) -> str:
    return clip.video or clip.audio or clip.clip_id


def _compact(folder: Path, keep: list[int], n: int, clips: list[Clip]) -> None:
    """Drop the rows of skipped clips, chunk by chunk (arrays may be larger than memory).

    Only rows with content are copied; the rest stay zero in the new (sparse) file. Idempotent, so
    an interruption half way is resumed: an array already of ``len(keep)`` rows is done.
    """
    for name in ARRAY_NAMES:
        src = np.load(folder / f"{name}.npy", mmap_mode="r")
        if src.shape[0] != n:
            del src
            continue
        dst_path = folder / f"{name}.kept.npy"
        shape = (len(keep), *src.shape[1:])
        dst = np.lib.format.open_memmap(dst_path, mode="w+", dtype=np.uint8, shape=shape)
        rows = [(j, i) for j, i in enumerate(keep) if name in _present(clips[i])]
        for a in range(0, len(rows), 64):
            js, iis = zip(*rows[a : a + 64], strict=True)
            dst[list(js)] = src[list(iis)]
        dst.flush()
        del src, dst
        os.replace(dst_path, folder / f"{name}.npy")


_CLIP_COLUMNS = [
    "index",
    "clip_id",
    "label",
    "label_index",
    "speaker",
    "group",
    "has_video",
    "has_audio",
    "face_fraction",
    "face_crop",
    "face_note",
    "face_box",
]


def _write_outputs(
    folder: Path,
    corpus: str,
    root: str | os.PathLike,
    options: dict,
    config: PreprocessConfig,
    listing: CorpusListing,
    keep: list[int],
    reasons: dict[int, str],
    records: dict[int, dict],
    seconds: float,
) -> None:
    label_index = {c: k for k, c in enumerate(listing.classes)}
    rows = []
    fractions: list[float] = []
    fallbacks = 0
    for row, i in enumerate(keep):
        c = listing.clips[i]
        rec = records.get(i, {})
        has = [int(c.video is not None), int(c.audio is not None)]
        frac = rec.get("face_fraction")
        if frac is not None:
            fractions.append(float(frac))
            fallbacks += rec.get("face_crop") == "centre"
        box = " ".join(f"{v:.4f}" for v in rec["face_box"]) if rec.get("face_box") else ""
        face = ["" if frac is None else frac, rec.get("face_crop", ""), rec.get("face_note", ""), box]
        rows.append([row, c.clip_id, c.label, label_index[c.label], c.speaker, c.group or "", *has, *face])
    _write_csv(folder / "clips.csv", _CLIP_COLUMNS, rows)
    (folder / "classes.json").write_text(json.dumps(listing.classes, indent=2) + "\n")
    skipped = list(listing.skipped) + [(_clip_path(listing.clips[i]), r) for i, r in sorted(reasons.items())]
    _write_csv(folder / "skipped.csv", ["path", "reason"], skipped)
    meta = {
        "cache_version": CACHE_VERSION,
        "corpus": corpus,
        "root": str(Path(root).resolve()),
        "corpus_options": options,
        "config": asdict(config),
        "config_fingerprint": config.fingerprint(),
        "n_prepared": len(keep),
        "n_skipped": len(skipped),
        "n_listed": len(listing.clips),
        "n_failed": len(reasons),
        "faces": {
            "mode": config.face,
            "n_searched": len(fractions),
            "n_centre_fallback": int(fallbacks),
            "mean_fraction": round(float(np.mean(fractions)), 4) if fractions else None,
        },
        "seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


class ClipCache:
    """A prepared cache, opened read-only: classes, clip records and four memory-mapped arrays.

    Arrays open lazily and are dropped when pickled, so a dataset holding this object can go to
    DataLoader workers (or Ray) without copying gigabytes; each process maps the files itself.
    """

    def __init__(self, path: Path, classes: list[str], clips: list[CachedClip], meta: dict) -> None:
        self.path = path
        self.classes = classes
        self.clips = clips
        self.meta = meta
        self._arrays: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, path: str | os.PathLike | PreparedCache) -> ClipCache:
        """Open the cache folder at ``path`` (or a :class:`PreparedCache`)."""
        p = Path(path.path if isinstance(path, PreparedCache) else path)
        meta_path = p / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{p} is not a complete cache (no meta.json)")
        meta = json.loads(meta_path.read_text())
        classes = json.loads((p / "classes.json").read_text())
        with (p / "clips.csv").open(newline="", encoding="utf-8") as fh:
            clips = [
                CachedClip(
                    index=int(r["index"]),
                    clip_id=r["clip_id"],
                    label=r["label"],
                    label_index=int(r["label_index"]),
                    speaker=r["speaker"],
                    group=r["group"] or None,
                    has_video=r["has_video"] == "1",
                    has_audio=r["has_audio"] == "1",
                    face_fraction=float(r["face_fraction"]) if r.get("face_fraction") else None,
                    face_crop=r.get("face_crop") or "",
                    face_note=r.get("face_note") or "",
                )
                for r in csv.DictReader(fh)
            ]
        return cls(p, classes, clips, meta)

    def __len__(self) -> int:
        return len(self.clips)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def array(self, name: str) -> np.ndarray:
        """One of ``video16``, ``video8``, ``audio16``, ``audio8``, memory-mapped read-only."""
        if name not in ARRAY_NAMES:
            raise KeyError(f"unknown array {name!r}; allowed: {', '.join(ARRAY_NAMES)}")
        if name not in self._arrays:
            self._arrays[name] = np.load(self.path / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    @property
    def video16(self) -> np.ndarray:
        return self.array("video16")

    @property
    def video8(self) -> np.ndarray:
        return self.array("video8")

    @property
    def audio16(self) -> np.ndarray:
        return self.array("audio16")

    @property
    def audio8(self) -> np.ndarray:
        return self.array("audio8")

    @property
    def labels(self) -> np.ndarray:
        """Label index per row (int64)."""
        return np.array([c.label_index for c in self.clips], dtype=np.int64)

    @property
    def speakers(self) -> list[str]:
        """Speaker per row, for :func:`mmder.data.folds.make_folds`."""
        return [c.speaker for c in self.clips]

    @property
    def image_size(self) -> int:
        return int(self.meta["config"]["image_size"])
