"""A linear probe of what a prepared cache's spectrogram images carry, before any ViT is trained.

Why: a screen of an input choice (representation, normalisation) through the ViT costs CPU hours; a
logistic regression on the images' window x band means costs seconds and has ranked every choice of
issue 10 the way the ViT later did. It reads the images exactly as a cell does (``FusedClipDataset``,
with ``speaker_norm``), and scores either the speaker folds' test speakers or, to choose without ever
looking at a test speaker, validation speakers held out of each fold's training speakers.

``python -m mmder.tools.image_probe CACHE [--speaker-norm window_band] [--scoring validation]``
"""

from __future__ import annotations

import argparse
import json
from typing import Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmder.data.cache import ClipCache
from mmder.data.dataset import FusedClipDataset
from mmder.data.folds import make_folds
from mmder.data.speaker_norm import SpeakerNorm

__all__ = ["window_band_means", "probe"]

Scoring = Literal["test", "validation"]


def window_band_means(cache: ClipCache, speaker_norm: SpeakerNorm = "none") -> np.ndarray:
    """``(clips, windows x bands)``: each audio image averaged over time and colour channels.

    Every speaker's statistics come from all of that speaker's clips, as in a cell (folds split by
    speaker, so a speaker's rows in a cell's dataset are all its clips).
    """
    ds = FusedClipDataset(cache, np.arange(len(cache)), "audio", speaker_norm=speaker_norm)
    return np.stack([ds[i][0].numpy().mean(axis=(0, 3)).reshape(-1) for i in range(len(ds))])


def _score(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, c: float) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    model.fit(x[train], y[train])
    return 100.0 * float((model.predict(x[test]) == y[test]).mean())


def probe(
    cache: ClipCache,
    *,
    folds: int = 3,
    speaker_norm: SpeakerNorm = "none",
    scoring: Scoring = "test",
    validation_speakers: int = 2,
    c: float = 0.01,
) -> dict:
    """WAR (percent) of the probe per split and their mean.

    ``test``: one split per speaker fold, scored on its test speakers. ``validation``: the test
    speakers are left out entirely; each fold's training speakers are cut into groups of
    ``validation_speakers`` (in speaker order), each group scored by a probe fit on the others.
    """
    x = window_band_means(cache, speaker_norm)
    y = cache.labels
    speakers = np.asarray(cache.speakers, dtype=object)
    scores = []
    for fold in make_folds({"kind": "speaker_kfold", "folds": folds}, cache.speakers):
        if scoring == "test":
            scores.append(_score(x, y, np.asarray(fold.train_idx), np.asarray(fold.test_idx), c))
            continue
        train_rows = np.asarray(fold.train_idx)
        pool = list(dict.fromkeys(speakers[train_rows].tolist()))
        for k in range(0, len(pool) - validation_speakers + 1, validation_speakers):
            held = np.isin(speakers[train_rows], pool[k : k + validation_speakers])
            scores.append(_score(x, y, train_rows[~held], train_rows[held], c))
    return {
        "speaker_norm": speaker_norm,
        "scoring": scoring,
        "war": round(float(np.mean(scores)), 2),
        "splits": [round(s, 2) for s in scores],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mmder.tools.image_probe", description=__doc__.split("\n")[0])
    ap.add_argument("cache", help="a prepared cache folder (e.g. OUTPUT/cache/ravdess-...)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--speaker-norm", nargs="+", default=["none", "band", "window_band"])
    ap.add_argument("--scoring", choices=["test", "validation"], default="validation")
    ap.add_argument("--validation-speakers", type=int, default=2)
    args = ap.parse_args(argv)
    cache = ClipCache.open(args.cache)
    for norm in args.speaker_norm:
        result = probe(
            cache,
            folds=args.folds,
            speaker_norm=norm,
            scoring=args.scoring,
            validation_speakers=args.validation_speakers,
        )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
