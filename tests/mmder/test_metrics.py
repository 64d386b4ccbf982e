from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmder.eval.metrics import classification_metrics, confusion_matrix, uar, war


def test_confusion_matrix_rows_true_cols_pred() -> None:
    y_true = [0, 0, 1, 2, 2, 2]
    y_pred = [0, 1, 1, 2, 0, 2]
    cm = confusion_matrix(y_true, y_pred, 3)
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.dtype.kind == "i"
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == 6


def test_perfect_and_all_wrong() -> None:
    y = [0, 1, 2, 3]
    assert uar(confusion_matrix(y, y, 4)) == 1.0
    assert war(confusion_matrix(y, y, 4)) == 1.0
    wrong = [1, 2, 3, 0]
    assert uar(confusion_matrix(y, wrong, 4)) == 0.0
    assert war(confusion_matrix(y, wrong, 4)) == 0.0


def test_imbalanced_uar_differs_from_war() -> None:
    # class 0: 8 samples, all right; class 1: 2 samples, 0 right -> WAR 0.8, UAR (1 + 0) / 2 = 0.5
    y_true = [0] * 8 + [1] * 2
    y_pred = [0] * 10
    m = classification_metrics(y_true, y_pred, 2)
    assert m["war"] == pytest.approx(0.8)
    assert m["uar"] == pytest.approx(0.5)
    assert m["confusion"] == [[8, 0], [2, 0]]


def test_hand_computed_three_classes() -> None:
    # recalls: class 0 -> 3/4, class 1 -> 1/2, class 2 -> 1/1 ; UAR = (0.75 + 0.5 + 1) / 3 = 0.75
    # WAR = (3 + 1 + 1) / 7
    y_true = [0, 0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 0, 2, 1, 0, 2]
    m = classification_metrics(y_true, y_pred, 3)
    assert m["uar"] == pytest.approx(0.75)
    assert m["war"] == pytest.approx(5 / 7)
    assert m["confusion"] == [[3, 0, 1], [1, 1, 0], [0, 0, 1]]


def test_class_absent_from_y_true_left_out() -> None:
    # 4 classes; class 3 never true but predicted once. Recalls: 0 -> 1/2, 1 -> 1, 2 -> 0/1.
    # UAR over present classes = (0.5 + 1 + 0) / 3 = 0.5 (not divided by 4); WAR = 3/5.
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 3, 1, 1, 0]
    cm = confusion_matrix(y_true, y_pred, 4)
    assert cm[3].sum() == 0 and cm[:, 3].sum() == 1
    assert uar(cm) == pytest.approx(0.5)
    assert war(cm) == pytest.approx(0.6)


def test_input_types_agree() -> None:
    yt = [0, 1, 2, 2, 1]
    yp = [0, 2, 2, 1, 1]
    ref = classification_metrics(yt, yp, 3)
    assert classification_metrics(np.array(yt), np.array(yp), 3) == ref
    assert classification_metrics(torch.tensor(yt), torch.tensor(yp), 3) == ref
    assert classification_metrics(np.array(yt, dtype=np.int32), torch.tensor(yp, dtype=torch.int8), 3) == ref
    out = classification_metrics(torch.tensor(yt), torch.tensor(yp), 3)
    assert isinstance(out["uar"], float) and isinstance(out["war"], float)
    assert isinstance(out["confusion"], list) and all(isinstance(r, list) for r in out["confusion"])
    assert all(isinstance(v, int) for r in out["confusion"] for v in r)


def test_metrics_in_unit_interval() -> None:
    rng = np.random.default_rng(0)
    yt, yp = rng.integers(0, 7, 200), rng.integers(0, 7, 200)
    m = classification_metrics(yt, yp, 7)
    assert 0.0 <= m["uar"] <= 1.0 and 0.0 <= m["war"] <= 1.0
    assert m["war"] == pytest.approx(float(np.mean(yt == yp)))


def test_empty_gives_nan() -> None:
    m = classification_metrics([], [], 3)
    assert math.isnan(m["uar"]) and math.isnan(m["war"])
    assert m["confusion"] == [[0] * 3] * 3


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="length"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 1], [0, -1], 2)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix([0.5, 1.0], [0, 1], 2)
    with pytest.raises(ValueError, match="1-D"):
        confusion_matrix([[0, 1]], [[0, 1]], 2)
    with pytest.raises(ValueError, match="square"):
        uar(np.zeros((2, 3)))
