"""Decode a corpus once into fixed-shape uint8 arrays that training reads memory-mapped.

Why: decoding video and drawing 24 spectrogram images per clip costs far more than a training step
of a small model, and every fold, setting and seed of a benchmark reads the same inputs. So
:func:`prepare_corpus` writes, per corpus and preprocessing config, one folder::

    <cache_root>/<corpus>-<hash>/
        video16.npy   (N, 16, S, S, 3) uint8   16 frames sampled uniformly over the clip
        video8.npy    (N,  8, S, S, 3) uint8    8 frames sampled uniformly over the clip
        audio16.npy   (N, 16, S, S, 3) uint8   spectrogram images of 16 windows of 2/17 of the clip
        audio8.npy    (N,  8, S, S, 3) uint8   spectrogram images of  8 windows of 2/9
        clips.csv     index, clip_id, label, label_index, speaker, group, has_video, has_audio
        classes.json  class names in label-index order
        skipped.csv   path, reason (listing problems and media that failed to decode)
        meta.json     corpus, root, options, config, counts (written last)

The hash covers the listing (clip ids, labels, speakers, paths, file sizes and mtimes), the adapter
options and :meth:`PreprocessConfig.fingerprint`, so changed media or settings give a new folder and
unchanged ones are reused without decoding. The folder is built under a temporary name and renamed
when complete, so an interrupted run never leaves a cache that looks complete. A clip with only one
modality stores zeros for the other and says so in ``has_video``/``has_audio``.

Frames are resized whole to ``S x S`` whatever their aspect ratio, as the authors' code does (no
centre crop); ``face='none'`` is the only face mode so far (face crops come later).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import json
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from mmder.data import decode
from mmder.data.corpora import Clip, CorpusListing, list_corpus
from mmder.data.features import resize_image, sample_frame_indices, spectrogram_image, window_bounds

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
]

CACHE_VERSION = 1  # bump when the content of a cache changes for the same settings
FACE_MODES: tuple[str, ...] = ("none",)
ARRAY_NAMES: tuple[str, ...] = ("video16", "video8", "audio16", "audio8")
_STEPS = {"video16": 16, "video8": 8, "audio16": 16, "audio8": 8}


@dataclass(frozen=True)
class PreprocessConfig:
    """Every setting that changes the cached arrays (and nothing else)."""

    image_size: int = 224
    face: str = "none"
    spectrogram: str = "mfcc"
    colormap: str = "viridis"
    sample_rate: int = 16000
    n_mfcc: int = 13
    n_mels: int = 40

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

    def fingerprint(self) -> str:
        """A stable short hash of the settings and ``CACHE_VERSION`` (same across runs and machines)."""
        payload = json.dumps({"cache_version": CACHE_VERSION, **asdict(self)}, sort_keys=True)
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
    """Where a prepared cache is and what went in."""

    path: Path
    n_prepared: int
    n_skipped: int
    skip_report: Path


@dataclass(frozen=True)
class CachedClip:
    """One row of ``clips.csv``; ``index`` is the row in the arrays."""

    index: int
    clip_id: str
    label: str
    label_index: int
    speaker: str
    group: str | None
    has_video: bool
    has_audio: bool


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


# --------------------------------------------------------------------------------------------------
# one clip
# --------------------------------------------------------------------------------------------------


def _crop(frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    a, b = int(round(x0 * w)), int(round(x1 * w))
    c, d = int(round(y0 * h)), int(round(y1 * h))
    return frame[max(0, c) : min(h, d), max(0, a) : min(w, b)]


def _frame_transform(config: PreprocessConfig, extra: dict):
    size = config.image_size
    box = extra.get("crop")

    def transform(frame: np.ndarray) -> np.ndarray:
        if box is not None:
            frame = _crop(frame, tuple(float(v) for v in box))
        return resize_image(frame, size)

    return transform


def _segment(extra: dict) -> dict:
    out = {}
    for k in ("start_s", "end_s"):
        if extra.get(k) not in (None, ""):
            out[k] = float(extra[k])
    return out


def _process_clip(clip: Clip, config: PreprocessConfig) -> dict[str, np.ndarray]:
    """Decode one clip into its four uint8 arrays (zeros for an absent modality).

    Raises :class:`~mmder.data.decode.DecodeError` naming the modality that failed.
    """
    s = config.image_size
    extra = dict(clip.extra) if clip.extra else {}
    seg = _segment(extra)
    out = {name: np.zeros((_STEPS[name], s, s, 3), np.uint8) for name in ARRAY_NAMES}
    if clip.video is None and clip.audio is None:
        raise decode.DecodeError("clip has neither video nor audio")
    if clip.video is not None:
        try:
            frames, _fps = decode.read_video_frames(
                clip.video, frame_transform=_frame_transform(config, extra), **seg
            )
        except decode.DecodeError as exc:
            raise decode.DecodeError(f"video: {exc.reason}", clip.video) from exc
        for name in ("video16", "video8"):
            out[name][:] = frames[sample_frame_indices(len(frames), _STEPS[name])]
    if clip.audio is not None:
        try:
            x = decode.read_audio(clip.audio, config.sample_rate, **seg)
        except decode.DecodeError as exc:
            raise decode.DecodeError(f"audio: {exc.reason}", clip.audio) from exc
        peak = float(np.max(np.abs(x)))
        if peak > 0:
            x = x / peak  # the authors normalise the whole clip by max |x|
        for name in ("audio16", "audio8"):
            for i, (a, b) in enumerate(window_bounds(x.size, _STEPS[name])):
                out[name][i] = spectrogram_image(
                    x[a:b],
                    config.sample_rate,
                    kind=config.spectrogram,
                    size=s,
                    colormap=config.colormap,
                    n_mfcc=config.n_mfcc,
                    n_mels=config.n_mels,
                    normalize=False,
                )
    return out


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


def _prepare_one(i: int, clip: Clip, folder: str, config: PreprocessConfig) -> tuple[int, str | None]:
    """Decode clip ``i`` and write its rows into the memmaps in ``folder``; returns (i, reason or None).

    Never raises for a bad clip: every failure becomes a reason, so one file cannot stop a corpus.
    """
    try:
        arrays = _process_clip(clip, config)
    except decode.DecodeError as exc:
        return i, exc.reason
    except Exception as exc:  # noqa: BLE001 - a broken clip must never be fatal
        return i, f"{type(exc).__name__}: {exc}"
    mm = _arrays_rw(folder)
    for name, arr in arrays.items():
        mm[name][i] = arr
    return i, None


def _worker_init() -> None:
    """Keep each worker single-threaded: the pool is the parallelism."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------------------


def _progress(it: Iterable, total: int, enabled: bool, desc: str) -> Iterator:
    if not enabled:
        yield from it
        return
    from tqdm import tqdm

    yield from tqdm(it, total=total, desc=desc, unit="clip")


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
    return PreparedCache(path, int(meta["n_prepared"]), int(meta["n_skipped"]), path / "skipped.csv")


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
) -> PreparedCache:
    """Decode corpus ``corpus`` at ``root`` into a cache under ``cache_root`` (see module docstring).

    Returns at once, without decoding, when the same listing, options and config were prepared
    before. Broken clips are skipped and listed in ``skipped.csv`` with their reason; ``ValueError``
    only when no clip at all could be prepared. ``workers > 1`` decodes in that many processes,
    started with ``start_method``: "spawn" (default) never inherits a parent's threads (torch, Ray)
    but re-imports the caller's main module, so a script must call this under
    ``if __name__ == "__main__":``; "fork" does not need that.
    """
    config = config or PreprocessConfig()
    options = dict(corpus_options or {})
    listing = list_corpus(corpus, root, **options)
    cache_root = Path(cache_root).resolve()
    final = cache_root / f"{corpus}-{cache_key(corpus, listing, options, config)}"
    existing = _from_meta(final)
    if existing is not None:
        return existing

    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = cache_root / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    t0 = time.time()
    try:
        n, s = len(listing.clips), config.image_size
        if n == 0:
            raise ValueError(
                f"corpus {corpus!r} at {root} lists no usable clip; skipped: {listing.skipped[:5]}"
            )
        for name in ARRAY_NAMES:
            np.lib.format.open_memmap(
                tmp / f"{name}.npy", mode="w+", dtype=np.uint8, shape=(n, _STEPS[name], s, s, 3)
            ).flush()
        reasons: dict[int, str] = {}
        if workers <= 1:
            results = (_prepare_one(i, c, str(tmp), config) for i, c in enumerate(listing.clips))
            try:
                for i, reason in _progress(results, n, progress, f"prepare {corpus}"):
                    if reason is not None:
                        reasons[i] = reason
            finally:
                _close_open()
        else:
            ctx = multiprocessing.get_context(start_method)
            try:
                with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as ex:
                    futs = [
                        ex.submit(_prepare_one, i, c, str(tmp), config) for i, c in enumerate(listing.clips)
                    ]
                    try:
                        for fut in _progress(cf.as_completed(futs), n, progress, f"prepare {corpus}"):
                            i, reason = fut.result()
                            if reason is not None:
                                reasons[i] = reason
                    except BaseException:
                        ex.shutdown(wait=False, cancel_futures=True)  # stop promptly on Ctrl-C
                        raise
            except cf.process.BrokenProcessPool as exc:
                raise RuntimeError(
                    "a preparation worker died: a decoder crashed, or (with the 'spawn' start method) the "
                    "calling script does not guard prepare_corpus under `if __name__ == '__main__':`; "
                    "try start_method='fork' or workers=1"
                ) from exc
        keep = [i for i in range(n) if i not in reasons]
        if not keep:
            first = [(_clip_path(listing.clips[i]), r) for i, r in list(reasons.items())[:5]]
            raise ValueError(
                f"no clip of corpus {corpus!r} at {root} could be prepared; first failures: {first}"
            )
        if len(keep) < n:
            _compact(tmp, keep)
        _write_outputs(tmp, corpus, root, options, config, listing, keep, reasons, time.time() - t0)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same cache first: keep theirs.
            done = _from_meta(final)
            if done is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return done
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = _from_meta(final)
    assert result is not None
    return result


def _clip_path(clip: Clip) -> str:
    return clip.video or clip.audio or clip.clip_id


def _compact(tmp: Path, keep: list[int]) -> None:
    """Drop the rows of skipped clips, chunk by chunk (arrays may be larger than memory)."""
    for name in ARRAY_NAMES:
        src = np.load(tmp / f"{name}.npy", mmap_mode="r")
        dst_path = tmp / f"{name}.kept.npy"
        shape = (len(keep), *src.shape[1:])
        dst = np.lib.format.open_memmap(dst_path, mode="w+", dtype=np.uint8, shape=shape)
        for a in range(0, len(keep), 64):
            dst[a : a + 64] = src[keep[a : a + 64]]
        dst.flush()
        del src, dst
        os.replace(dst_path, tmp / f"{name}.npy")


def _write_outputs(
    tmp: Path,
    corpus: str,
    root: str | os.PathLike,
    options: dict,
    config: PreprocessConfig,
    listing: CorpusListing,
    keep: list[int],
    reasons: dict[int, str],
    seconds: float,
) -> None:
    label_index = {c: k for k, c in enumerate(listing.classes)}
    rows = []
    for row, i in enumerate(keep):
        c = listing.clips[i]
        has = [int(c.video is not None), int(c.audio is not None)]
        rows.append([row, c.clip_id, c.label, label_index[c.label], c.speaker, c.group or "", *has])
    _write_csv(
        tmp / "clips.csv",
        ["index", "clip_id", "label", "label_index", "speaker", "group", "has_video", "has_audio"],
        rows,
    )
    (tmp / "classes.json").write_text(json.dumps(listing.classes, indent=2) + "\n")
    skipped = list(listing.skipped) + [(_clip_path(listing.clips[i]), r) for i, r in sorted(reasons.items())]
    _write_csv(tmp / "skipped.csv", ["path", "reason"], skipped)
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
        "seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


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
