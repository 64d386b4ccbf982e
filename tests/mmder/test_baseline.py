"""The openSMILE + SVM baseline on real RAVDESS recordings (shared data, 16 kHz flac)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mmder import baseline

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
