"""Classification metrics used in dynamic emotion recognition: UAR, WAR and the confusion matrix.

UAR (unweighted average recall, balanced accuracy) is the mean of per-class recalls, so every emotion
counts the same however rare; WAR (weighted average recall) is plain accuracy, dominated by frequent
classes. numpy only; inputs may be lists, numpy arrays or torch tensors of integer class ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["confusion_matrix", "uar", "war", "classification_metrics"]


def _labels(x: Any, name: str) -> NDArray[np.int64]:
    """A 1-D int64 array from a list, numpy array or torch tensor (without importing torch)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class ids, got non-integral values")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> NDArray[np.int64]:
    """``(num_classes, num_classes)`` int64 counts: rows are true classes, columns predicted ones."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    k = int(num_classes)
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            raise ValueError(f"{name} has class ids outside [0, {k}): min {arr.min()}, max {arr.max()}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def _check_cm(cm: Any) -> NDArray[np.float64]:
    arr = np.asarray(cm, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {arr.shape}")
    if arr.size and arr.min() < 0:
        raise ValueError("confusion matrix has negative counts")
    return arr


def uar(cm: Any) -> float:
    """Unweighted average recall: mean per-class recall over the classes that occur in y_true.

    Classes with no true samples (an all-zero row) have no recall and are left out of the mean, so a
    fold missing a class is not penalised for it. Returns NaN for an empty matrix.
    """
    arr = _check_cm(cm)
    support = arr.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    recalls = np.diag(arr)[present] / support[present]
    return float(recalls.mean())


def war(cm: Any) -> float:
    """Weighted average recall, i.e. overall accuracy (trace / total). Returns NaN for an empty matrix."""
    arr = _check_cm(cm)
    total = arr.sum()
    if total == 0:
        return float("nan")
    return float(np.trace(arr) / total)


def classification_metrics(y_true: Any, y_pred: Any, num_classes: int) -> dict[str, Any]:
    """``{"uar": float, "war": float, "confusion": list[list[int]]}``; UAR and WAR are fractions in [0, 1]."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return {"uar": uar(cm), "war": war(cm), "confusion": cm.tolist()}
