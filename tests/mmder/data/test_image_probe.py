"""The image probe: the cells' own images, scored on test or validation speakers."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from mmder.data.cache import ClipCache
from mmder.data.folds import make_folds
from mmder.tools.image_probe import probe, window_band_means


def test_features_are_the_cells_images_averaged_over_time_and_channels(synthetic_cache: ClipCache) -> None:
    plain = window_band_means(synthetic_cache)
    steps, height = 16, synthetic_cache.image_size
    assert plain.shape == (len(synthetic_cache), steps * height)
    normed = window_band_means(synthetic_cache, "window_band").reshape(len(synthetic_cache), steps, height)
    # per speaker, every (window, band) averages to the middle of the scale once standardised
    speakers = np.asarray(synthetic_cache.speakers)
    middle = np.mean([(0.5 - m) / 0.225 for m in (0.485, 0.456, 0.406)])
    for s in np.unique(speakers):
        assert np.abs(normed[speakers == s].mean(axis=0) - middle).max() < 0.02


def test_validation_scoring_splits_the_training_speakers_only(synthetic_cache: ClipCache) -> None:
    # 4 speakers, 2 folds: 2 training speakers per fold, held out one at a time -> 2 splits per fold
    val = probe(synthetic_cache, folds=2, scoring="validation", validation_speakers=1)
    assert len(val["splits"]) == 4 and all(0 <= s <= 100 for s in val["splits"])
    test = probe(synthetic_cache, folds=2, scoring="test")
    assert len(test["splits"]) == 2
    assert abs(test["war"] - np.mean(test["splits"])) < 0.01  # the mean of the per-fold scores


def test_validation_scoring_never_reads_a_test_speakers_label(synthetic_cache: ClipCache) -> None:
    # scramble the labels of fold 0's test speakers: the validation score of fold 0 must not move
    fold = make_folds({"kind": "speaker_kfold", "folds": 2}, synthetic_cache.speakers)[0]
    scrambled = copy.copy(synthetic_cache)
    n = len(synthetic_cache.classes)
    scrambled.clips = [
        dataclasses.replace(c, label_index=(c.label_index + 1) % n) if i in set(fold.test_idx) else c
        for i, c in enumerate(synthetic_cache.clips)
    ]
    before = probe(synthetic_cache, folds=2, scoring="validation", validation_speakers=1)["splits"][:2]
    after = probe(scrambled, folds=2, scoring="validation", validation_speakers=1)["splits"][:2]
    assert before == after
    # ...while the test score of that fold does read them
    assert (
        probe(scrambled, folds=2, scoring="test")["splits"][0] != probe(synthetic_cache, folds=2)["splits"][0]
    )
