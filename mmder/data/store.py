"""The resumable on-disk store: decode a listed corpus into one cache folder, once.

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
        meta.json     corpus, root, options, config, counts, per-array size and sampled checksum
                      (written last)

The folder name is :func:`mmder.data.preprocess.cache_key`: unchanged media and settings reuse the
folder without decoding (after :func:`mmder.data.integrity.verify_cache`; a damaged one is rebuilt),
a changed file or setting gives a new folder.

Resuming. The folder is built as ``.<name>.partial`` next to it and renamed when complete, so an
unfinished cache never looks complete. Every finished clip (prepared or failed, with its reason) is
appended to ``progress.jsonl`` in the partial folder as soon as its rows are written, so an
interrupted preparation (Ctrl-C, a killed job, a crash) continues on the next call with the same key
and decodes only the clips not done yet. A lock on the partial folder (``flock``) makes a second
process with the same key wait and then reuse the finished cache instead of decoding in parallel.

A clip with only one modality stores zeros for the other (never written, so sparse on disk) and says
so in ``has_video``/``has_audio``.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import csv
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmder.data import partial as partial_dir
from mmder.data.corpora import Clip, CorpusListing, list_corpus
from mmder.data.integrity import DamagedCacheError, array_records, verify_cache
from mmder.data.preprocess import (
    ARRAY_NAMES,
    CACHE_VERSION,
    PreprocessConfig,
    cache_key,
    partial_path,
)

__all__ = ["PreparedCache", "prepare_corpus"]

logger = logging.getLogger(__name__)


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
    # how this call got it (not what it is: two handles on one cache compare equal)
    n_decoded: int | None = field(default=None, compare=False)  # decoded now; None: it was ready
    n_resumed: int = field(default=0, compare=False)  # taken over from an interrupted preparation


# Per-process memmaps of the folder being written (workers open them once).
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


def _reuse(path: Path) -> PreparedCache | None:
    """The complete cache at ``path`` if it passes its self-check; a damaged one is removed."""
    found = _from_meta(path)
    if found is None:
        return None
    try:
        verify_cache(path, json.loads((path / "meta.json").read_text()))
    except DamagedCacheError as exc:
        logger.warning("%s; removing %s and preparing it again", exc, path)
        print(f"mmder: {exc.path} is damaged ({exc.reason}); preparing {path.name} again", flush=True)
        shutil.rmtree(path, ignore_errors=True)
        return None
    return found


def prepare_corpus(
    corpus: str,
    root: str | os.PathLike,
    cache_root: str | os.PathLike,
    config: PreprocessConfig | None = None,
    *,
    corpus_options: dict | None = None,
    workers: int | None = None,
    progress: bool = False,
    start_method: str = "spawn",
    limit: int | None = None,
    listing: CorpusListing | None = None,
) -> PreparedCache:
    """Decode corpus ``corpus`` at ``root`` into a cache under ``cache_root`` (see module docstring).

    Returns at once, without decoding, when the same listing, options and config were prepared
    before (a damaged one, see :func:`~mmder.data.integrity.verify_cache`, is removed and rebuilt);
    resumes an interrupted preparation with the same key. Broken clips are skipped and listed in
    ``skipped.csv`` with their reason; :class:`~mmder.data.corpora.EmptyCorpusError` when the root
    lists no usable clip (saying what it saw), ``ValueError`` when no listed clip could be decoded.

    ``workers`` (default ``config.workers``) > 1 decodes in that many processes, started with
    ``start_method``: "spawn" (default) never inherits a parent's threads (torch, Ray) but
    re-imports the caller's main module, so a script must call this under
    ``if __name__ == "__main__":``; "fork" does not need that. ``progress`` shows a tqdm bar.
    ``limit`` keeps only the first ``limit`` listed clips (smoke tests, benchmarks); the key then
    differs from the full corpus's. ``listing``: the corpus as the caller already listed it (a sweep
    lists each corpus once, while planning); it is listed here otherwise.
    """
    config = config or PreprocessConfig()
    workers = config.workers if workers is None else workers
    options = dict(corpus_options or {})
    listing = copy.copy(listing) if listing is not None else list_corpus(corpus, root, **options)
    for note in listing.notes:
        logger.warning("%s at %s: %s", corpus, root, note)
    if limit is not None:
        listing.clips = listing.clips[: max(0, int(limit))]
    cache_root = Path(cache_root).resolve()
    final = cache_root / f"{corpus}-{cache_key(corpus, listing, options, config)}"
    if not listing.clips:  # list_corpus raises for an empty root: only limit=0 gets here
        existing = _reuse(final)
        if existing is not None:
            return existing
        raise ValueError(f"limit={limit} leaves no clip of corpus {corpus!r} at {root} to prepare")
    partial = partial_path(final)
    while True:
        existing = _reuse(final)
        if existing is not None:
            return existing
        cache_root.mkdir(parents=True, exist_ok=True)
        partial.mkdir(exist_ok=True)
        with partial_dir.locked(partial) as still_there:
            if not still_there:
                continue  # another process completed (renamed) it while we waited: look again
            existing = _reuse(final)
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
    done = partial_dir.open_partial(partial, n, s, clips)
    todo = [i for i in range(n) if i not in done]
    log = (partial / partial_dir.PROGRESS).open("a", encoding="utf-8")

    def record(i: int, reason: str | None, face: dict) -> None:
        rec = {"i": i, "clip_id": clips[i].clip_id, "reason": reason, **face}
        done[i] = rec
        log.write(json.dumps(rec) + "\n")
        log.flush()

    desc = f"prepare {corpus}"
    try:
        if workers <= 1 or len(todo) <= 1:
            results = (partial_dir.prepare_one(i, clips[i], str(partial), config) for i in todo)
            try:
                for i, reason, face in _progress(results, n, n - len(todo), progress, desc):
                    record(i, reason, face)
            finally:
                partial_dir.close_open()
        else:
            ctx = multiprocessing.get_context(start_method)
            try:
                with cf.ProcessPoolExecutor(
                    workers, mp_context=ctx, initializer=partial_dir.worker_init
                ) as ex:
                    futs = [
                        ex.submit(partial_dir.prepare_one, i, clips[i], str(partial), config) for i in todo
                    ]
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
        partial_dir.compact(partial, keep, n, clips)
    _write_outputs(partial, corpus, root, options, config, listing, keep, reasons, done, time.time() - t0)
    if final.exists():  # an incomplete folder of that name (complete ones were returned before)
        shutil.rmtree(final)
    os.rename(partial, final)
    result = _from_meta(final)
    assert result is not None
    return dataclasses.replace(result, n_decoded=len(todo), n_resumed=n - len(todo))


def _clip_path(clip: Clip) -> str:
    return clip.video or clip.audio or clip.clip_id


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
        "config": config.content_settings(),
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
        "arrays": array_records(folder),
        "seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
