"""The openSMILE + SVM baseline on real RAVDESS recordings (shared data, 16 kHz flac)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mmder.eval import baseline

RAVDESS = Path(__file__).resolve().parents[3] / "shared" / "data" / "ravdess-speech-16k"


def _clips(actors: list[int], per_actor: int) -> list[SimpleNamespace]:
    """The first ``per_actor`` strong-intensity clips of each actor: every emotion but neutral."""
    clips = []
    for a in actors:
        files = sorted((RAVDESS / f"Actor_{a:02d}").glob("03-01-*-02-*.flac"))[:per_actor]
        for f in files:
            clips.append(SimpleNamespace(audio=str(f), label=f.stem.split("-")[2], speaker=f"Actor_{a:02d}"))
    return clips


needs_data = pytest.mark.skipif(not RAVDESS.is_dir(), reason=f"shared RAVDESS sample not found at {RAVDESS}")


@needs_data
def test_features_are_cached_by_file_identity(tmp_path):
    path = str(sorted((RAVDESS / "Actor_01").glob("*.flac"))[0])
    first = baseline.extract_features([path], "egemaps", tmp_path)
    assert first.shape == (1, 88) and np.isfinite(first).all()
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = baseline.extract_features([path], "egemaps", tmp_path)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match="allowed"):
        baseline.extract_features([path], "mfcc", tmp_path)


@needs_data
def test_fit_predict_is_deterministic_and_standardises_on_train_only():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(3, 1, (20, 3))])
    y = np.array([0] * 20 + [1] * 20)
    train, test = np.r_[0:15, 20:35], np.r_[15:20, 35:40]
    pred = baseline.fit_predict(x, y, train, test, kernel="linear", C=1.0, seed=0)
    assert (pred == y[test]).mean() >= 0.9
    np.testing.assert_array_equal(pred, baseline.fit_predict(x, y, train, test, kernel="linear", seed=0))


def test_the_svm_offers_no_probabilities_so_its_predictions_come_without_them():
    """predict_proba is used where the model offers it; our SVC (probability=False) offers none, and
    asking must not change its predictions."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(3, 1, (20, 3))])
    y = np.array([0] * 20 + [1] * 20)
    train, test = np.r_[0:15, 20:35], np.r_[15:20, 35:40]
    pred, probs = baseline.fit_predict_proba(x, y, train, test, "rbf", 1.0, 0, classes=[0, 1, 2])
    assert probs is None
    np.testing.assert_array_equal(pred, baseline.fit_predict(x, y, train, test, "rbf", 1.0, 0))


def test_speaker_normalisation_removes_what_a_speaker_adds_and_reads_no_label():
    # the class is in feature 0 (+-1); each speaker shifts and scales every feature by far more
    rng = np.random.default_rng(1)
    y = np.tile([0, 1], 40)
    speakers = np.repeat([f"s{i}" for i in range(4)], 20)
    offset = np.repeat([[-8.0], [-3.0], [3.0], [8.0]], 20, axis=0)
    scale = np.repeat([[1.0], [3.0], [0.5], [2.0]], 20, axis=0)
    x = (np.c_[2.0 * y - 1, np.zeros(80)] + rng.normal(0, 0.3, (80, 2))) * scale + offset
    train, test = np.flatnonzero(speakers != "s3"), np.flatnonzero(speakers == "s3")
    plain = baseline.fit_predict(x, y, train, test, kernel="rbf", seed=0)
    normed = baseline.fit_predict(x, y, train, test, kernel="rbf", seed=0, speakers=speakers)
    assert (plain == y[test]).mean() <= 0.6  # an unseen speaker's offset puts it outside the training data
    assert (normed == y[test]).mean() >= 0.95
    z = baseline.speaker_standardise(x, speakers, test)
    np.testing.assert_allclose(z[test].mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(z[test].std(axis=0), 1, atol=1e-9)
    np.testing.assert_array_equal(z[train], x[train])  # only the rows given are touched


@pytest.mark.slow
@needs_data
def test_egemaps_svm_beats_chance_on_unseen_speakers(tmp_path):
    # 6 train actors, 2 unseen test actors, 7 emotions x 4 strong clips each = 28 clips per actor.
    clips = _clips([1, 2, 3, 4, 5, 6, 7, 8], per_actor=28)
    folds = [["Actor_07", "Actor_08"]]
    table = baseline.baseline_folds(clips, folds, "egemaps", "rbf", cache_dir=tmp_path)
    row = table.iloc[0]
    assert row.test_clips == 56
    # chance is 1/7 = 14.3 %; eGeMAPS + RBF SVM reaches ~40 % on the full 3-fold split
    assert row.war > 100 / 7 * 1.75, table
    assert row.uar > 100 / 7 * 1.75, table


def test_the_svm_ignores_its_seed_so_a_baseline_cell_needs_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    train, test = np.arange(40), np.arange(40, 60)
    predictions = [baseline.fit_predict(x, y, train, test, "rbf", 1.0, seed) for seed in (0, 1, 7)]
    assert all((p == predictions[0]).all() for p in predictions)
