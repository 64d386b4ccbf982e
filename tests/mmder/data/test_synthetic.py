"""The synthetic corpus: layout, idempotence, balance, and cues that survive the real pipeline."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mmder.data.cache import ClipCache
from mmder.data.corpora import list_corpus
from mmder.data.decode import read_audio, read_video_frames
from mmder.data.synthetic import CLASSES, MANIFEST_COLUMNS, generate_corpus


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_layout(synthetic_root: Path, synthetic_params: dict) -> None:
    rows = _rows(synthetic_root)
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    assert len(rows) == len(CLASSES) * synthetic_params["clips_per_class"] * synthetic_params["speakers"]
    meta = json.loads((synthetic_root / "synthetic.json").read_text())
    assert meta["classes"] == list(CLASSES)
    assert meta["params"]["seed"] == synthetic_params["seed"]
    for r in rows:
        assert not Path(r["video"]).is_absolute() and (synthetic_root / r["video"]).suffix == ".mp4"
        assert (synthetic_root / r["audio"]).suffix == ".wav"
        assert CLASSES.index(r["label"]) == 2 * int(r["visual_group"]) + int(r["audio_group"])
    # real media, readable by the project's decoders
    frames, fps = read_video_frames(synthetic_root / rows[0]["video"])
    assert frames.shape == (60, 96, 96, 3) and frames.dtype == np.uint8 and fps == 25
    audio = read_audio(synthetic_root / rows[0]["audio"])
    assert audio.dtype == np.float32 and audio.shape == (38400,)
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_balance(synthetic_root: Path, synthetic_params: dict) -> None:
    counts = Counter((r["speaker"], r["label"]) for r in _rows(synthetic_root))
    assert len(counts) == synthetic_params["speakers"] * len(CLASSES)
    assert set(counts.values()) == {synthetic_params["clips_per_class"]}


def test_idempotent_and_regenerates_on_new_params(tmp_path: Path) -> None:
    tiny = {"clips_per_class": 1, "speakers": 2, "duration_s": 1.0, "frame_size": 64}
    root = generate_corpus(tmp_path / "c", **tiny)
    manifest_mtime = (root / "manifest.csv").stat().st_mtime_ns
    assert generate_corpus(tmp_path / "c", **tiny) == root
    assert (root / "manifest.csv").stat().st_mtime_ns == manifest_mtime
    # an interrupted run (no synthetic.json) or other parameters are redone
    (root / "synthetic.json").unlink()
    generate_corpus(tmp_path / "c", **tiny)
    assert (root / "synthetic.json").is_file()
    generate_corpus(tmp_path / "c", **{**tiny, "speakers": 1})
    rows = _rows(root)
    assert len(rows) == len(CLASSES)
    assert len(list((root / "video").glob("*.mp4"))) == len(CLASSES)  # the older clips are gone


def _generate_tiny(root: str, start: Any, counts: Any) -> None:
    start.wait()
    generate_corpus(root, clips_per_class=1, speakers=2, duration_s=1.0, frame_size=64)
    counts.put(len(_rows(Path(root))))


def test_processes_generating_the_same_corpus_at_once_all_succeed(tmp_path: Path) -> None:
    # two sweeps started together on a fresh output used to crash one of them mid-rename
    root = str(tmp_path / "c")
    ctx = mp.get_context("fork")
    start, counts = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_generate_tiny, args=(root, start, counts)) for _ in range(8)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    assert sorted(counts.get(timeout=5) for _ in procs) == [len(CLASSES) * 2] * 8
    assert not list(Path(root).glob("*.tmp"))
    assert len(list((Path(root) / "video").glob("*.mp4"))) == len(CLASSES) * 2


def test_listing_matches_manifest(synthetic_root: Path) -> None:
    listing = list_corpus("synthetic", synthetic_root)
    assert listing.classes == list(CLASSES) and not listing.skipped
    clip = listing.clips[0]
    assert Path(clip.video).is_absolute() and Path(clip.audio).is_file()
    assert dict(clip.extra) == {"visual_group": 0, "audio_group": 0}


# ---- the cues, measured on the prepared cache with a trivially simple classifier --------------------


def _gray_features(arr: np.ndarray, r: int = 12) -> np.ndarray:
    """Time-averaged grayscale image, downsampled and standardised per clip (removes colour and level)."""
    mean = np.asarray(arr, np.float32).mean(axis=(1, 4)) / 255.0  # (N, S, S)
    small = np.stack([cv2.resize(m, (r, r), interpolation=cv2.INTER_AREA) for m in mean])
    small = small.reshape(len(mean), -1)
    return (small - small.mean(1, keepdims=True)) / (small.std(1, keepdims=True) + 1e-6)


def _logreg_accuracy(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> float:
    """Multinomial logistic regression (L-BFGS, small L2) trained on some speakers, tested on others."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-3
    xtr = torch.tensor((x_tr - mu) / sd, dtype=torch.float64)
    xte = torch.tensor((x_te - mu) / sd, dtype=torch.float64)
    k = int(y_tr.max()) + 1
    w = torch.zeros(xtr.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)
    y = torch.tensor(y_tr)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w + b, y) + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((xte @ w + b).argmax(1).numpy() == y_te).mean())


def _speaker_split_accuracy(x: np.ndarray, y: np.ndarray, speakers: np.ndarray) -> float:
    """Mean accuracy over leave-one-speaker-out splits."""
    accs = [
        _logreg_accuracy(x[speakers != s], y[speakers != s], x[speakers == s], y[speakers == s])
        for s in np.unique(speakers)
    ]
    return float(np.mean(accs))


def test_cues_separable_across_speakers(synthetic_cache: ClipCache) -> None:
    y = synthetic_cache.labels
    speakers = np.array(synthetic_cache.speakers)
    visual_group, audio_group = y // 2, y % 2
    xv = _gray_features(synthetic_cache.video16)
    xa = _gray_features(synthetic_cache.audio16)
    assert _speaker_split_accuracy(xv, visual_group, speakers) >= 0.85
    assert _speaker_split_accuracy(xa, audio_group, speakers) >= 0.95
    # and neither modality alone tells the class: the other group stays at chance
    assert _speaker_split_accuracy(xv, audio_group, speakers) <= 0.7
    assert _speaker_split_accuracy(xa, visual_group, speakers) <= 0.6


def test_a_corpus_written_by_several_processes_is_the_same_byte_for_byte(tmp_path, monkeypatch):
    import hashlib

    import mmder.data.synthetic as synthetic

    def digest(folder: Path) -> dict[str, str]:
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    one = synthetic.generate_corpus(tmp_path / "one", clips_per_class=1, speakers=2, seed=3)
    monkeypatch.setattr(synthetic, "PARALLEL_FROM_CLIPS", 1)
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 2)
    several = synthetic.generate_corpus(tmp_path / "several", clips_per_class=1, speakers=2, seed=3)
    assert digest(one) == digest(several) and len(digest(one)) == 2 * 6 * 2 + 2
