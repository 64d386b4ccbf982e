"""Speaker-independent folds."""

from __future__ import annotations

import numpy as np
import pytest

from mmder.data.folds import make_folds, natural_key

SPEAKERS = [f"spk{i}" for i in (10, 2, 1, 3, 5, 4, 7, 6, 9, 8) for _ in range(3)]  # 10 speakers x 3 clips


def test_speaker_kfold_is_deterministic_disjoint_and_covering() -> None:
    folds = make_folds({"kind": "speaker_kfold", "folds": 3}, SPEAKERS)
    again = make_folds({"kind": "speaker_kfold", "folds": 3}, list(SPEAKERS))
    assert [f.name for f in folds] == ["fold1", "fold2", "fold3"]
    assert [f.test_speakers for f in folds] == [
        ["spk1", "spk2", "spk3", "spk4"],
        ["spk5", "spk6", "spk7"],
        ["spk8", "spk9", "spk10"],
    ]
    spk = np.array(SPEAKERS)
    all_test = np.concatenate([f.test_idx for f in folds])
    assert sorted(all_test.tolist()) == list(range(len(SPEAKERS)))
    for f, g in zip(folds, again, strict=True):
        assert np.array_equal(f.train_idx, g.train_idx) and np.array_equal(f.test_idx, g.test_idx)
        assert f.train_idx.dtype == np.int64
        assert len(np.intersect1d(f.train_idx, f.test_idx)) == 0
        assert len(f.train_idx) + len(f.test_idx) == len(SPEAKERS)
        assert set(spk[f.test_idx]) == set(f.test_speakers)
        assert not set(spk[f.train_idx]) & set(f.test_speakers)


def test_explicit() -> None:
    protocol = {"kind": "explicit", "train": ["spk1", "spk2"], "test": ["spk10"], "name": "x"}
    (fold,) = make_folds(protocol, SPEAKERS)
    spk = np.array(SPEAKERS)
    assert fold.name == "x" and fold.test_speakers == ["spk10"]
    assert set(spk[fold.train_idx]) == {"spk1", "spk2"} and set(spk[fold.test_idx]) == {"spk10"}


@pytest.mark.parametrize(
    ("protocol", "key"),
    [
        ({"folds": 2}, "kind"),
        ({"kind": "leave_one_out"}, "kind"),
        ({"kind": "speaker_kfold"}, "folds"),
        ({"kind": "speaker_kfold", "folds": 11}, "folds"),
        ({"kind": "speaker_kfold", "folds": "3"}, "folds"),
        ({"kind": "speaker_kfold", "folds": 2, "fold": 3}, "fold"),
        ({"kind": "explicit", "train": ["spk1"]}, "test"),
        ({"kind": "explicit", "train": ["spk1"], "test": ["nobody"]}, "test"),
        ({"kind": "explicit", "train": ["spk1"], "test": ["spk1"]}, "train"),
        ({"kind": "explicit", "train": "spk1", "test": ["spk2"]}, "train"),
    ],
)
def test_bad_protocols_name_the_key(protocol: dict, key: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}'"):
        make_folds(protocol, SPEAKERS)


def test_natural_key() -> None:
    assert sorted(["Actor_10", "Actor_2", "Actor_1"], key=natural_key) == ["Actor_1", "Actor_2", "Actor_10"]
