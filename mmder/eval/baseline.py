"""A classical baseline a reviewer expects beside any deep model: openSMILE functionals + an SVM.

eGeMAPSv02 (88 expert features) or ComParE_2016 (6373 brute-force functionals) per clip, from the
clip's audio resampled to 16 kHz, then StandardScaler + SVC. It takes seconds per fold on a CPU, so
it calibrates what "above chance" and "better than handcrafted features" mean for a corpus and
protocol. Pure functions, no Ray or MLflow; features are cached on disk because extracting them is
the slow part (ComParE: ~0.5 s per clip).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mmder.registry import BASELINE_VERSION, BASELINES, Baseline

__all__ = [
    "BASELINES",
    "BASELINE_VERSION",
    "FEATURE_SETS",
    "KERNELS",
    "Baseline",
    "extract_features",
    "fit_predict",
    "fit_predict_proba",
    "baseline_folds",
    "speaker_standardise",
]

FEATURE_SETS = ("egemaps", "compare")
KERNELS = ("rbf", "linear")
SAMPLE_RATE = 16000


class AudioClip(Protocol):
    """What the baseline needs of a corpus listing's clip (``mmder.data`` ``Clip`` has these)."""

    audio: str | None
    label: str
    speaker: str


def _smile(feature_set: str) -> Any:
    import opensmile

    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set {feature_set!r} is not allowed; allowed: {', '.join(FEATURE_SETS)}")
    fs = {"egemaps": opensmile.FeatureSet.eGeMAPSv02, "compare": opensmile.FeatureSet.ComParE_2016}
    return opensmile.Smile(
        feature_set=fs[feature_set],
        feature_level=opensmile.FeatureLevel.Functionals,
        sampling_rate=SAMPLE_RATE,
        resample=True,
    )


def _cache_name(path: Path, feature_set: str) -> str:
    """Same file, size, mtime and feature set -> same features; anything else re-extracts."""
    import opensmile

    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{feature_set}|{opensmile.__version__}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24] + ".npy"


def extract_features(
    audio_paths: Sequence[str | os.PathLike],
    feature_set: str = "egemaps",
    cache_dir: str | os.PathLike | None = None,
) -> NDArray[np.float64]:
    """``(n_clips, n_features)`` openSMILE functionals; cached per file under ``cache_dir`` if given."""
    smile = _smile(feature_set)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in audio_paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"no audio file {path}")
        target = cache / _cache_name(path, feature_set) if cache is not None else None
        if target is not None and target.exists():
            rows.append(np.load(target))
            continue
        values = smile.process_file(str(path)).to_numpy(dtype=np.float64).reshape(-1)
        if target is not None:
            tmp = target.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, values)
            tmp.replace(target)  # atomic: a concurrent reader never sees half a file
        rows.append(values)
    return np.stack(rows) if rows else np.zeros((0, 0))


def speaker_standardise(
    features: NDArray[np.floating], speakers: Sequence[str] | NDArray[Any], rows: NDArray[np.integer]
) -> NDArray[np.float64]:
    """``features`` with every speaker's ``rows`` z-scored by that speaker's own mean and std.

    The speaker normalisation of the speech-emotion literature, the baseline's counterpart of
    ``preprocess.speaker_norm``: statistics per speaker over that speaker's clips among ``rows``,
    never across speakers, and no label is read.
    """
    x = np.nan_to_num(np.asarray(features, dtype=np.float64)).copy()
    who = np.asarray(speakers, dtype=object)
    rows = np.asarray(rows, dtype=np.int64)
    for speaker in dict.fromkeys(who[rows].tolist()):
        mine = rows[who[rows] == speaker]
        std = x[mine].std(axis=0)
        x[mine] = (x[mine] - x[mine].mean(axis=0)) / np.where(std > 1e-12, std, 1.0)
    return x


def fit_predict(
    features: NDArray[np.floating],
    labels: Sequence[Any] | NDArray[Any],
    train_idx: Sequence[int] | NDArray[np.integer],
    test_idx: Sequence[int] | NDArray[np.integer],
    kernel: str = "rbf",
    C: float = 1.0,  # noqa: N803 - the SVM's conventional name
    seed: int = 0,
    speakers: Sequence[str] | NDArray[Any] | None = None,
) -> NDArray[Any]:
    """Standardise on the training clips only (no test statistics leak), fit an SVC, predict the rest.

    With ``speakers`` (one per row of ``features``) every speaker is first standardised on its own
    (:func:`speaker_standardise`): the training speakers among the training rows, each test speaker
    over its test rows, a transductive step that uses no label.
    """
    return fit_predict_proba(features, labels, train_idx, test_idx, kernel, C, seed, speakers)[0]


def fit_predict_proba(
    features: NDArray[np.floating],
    labels: Sequence[Any] | NDArray[Any],
    train_idx: Sequence[int] | NDArray[np.integer],
    test_idx: Sequence[int] | NDArray[np.integer],
    kernel: str = "rbf",
    C: float = 1.0,  # noqa: N803 - the SVM's conventional name
    seed: int = 0,
    speakers: Sequence[str] | NDArray[Any] | None = None,
    classes: Sequence[Any] | None = None,
) -> tuple[NDArray[Any], NDArray[np.float64] | None]:
    """:func:`fit_predict`'s predictions and, where the fitted model offers ``predict_proba``, the test
    clips' class probabilities, one column per entry of ``classes`` (default: the training labels;
    a class the model never saw gets 0). None where it offers none: the SVC as configured here
    (``probability=False``, no Platt scaling, which would cost a 5-fold fit and change nothing the
    baseline reports)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r} is not allowed; allowed: {', '.join(KERNELS)}")
    x = np.nan_to_num(np.asarray(features, dtype=np.float64))
    if speakers is not None:
        x = speaker_standardise(x, speakers, np.asarray(train_idx))
        x = speaker_standardise(x, speakers, np.asarray(test_idx))
    y = np.asarray(labels)
    model = make_pipeline(StandardScaler(), SVC(kernel=kernel, C=C, random_state=seed))
    model.fit(x[np.asarray(train_idx)], y[np.asarray(train_idx)])
    test = x[np.asarray(test_idx)]
    predicted = model.predict(test)
    if not hasattr(model, "predict_proba"):  # scikit-learn hides it where the estimator has none
        return predicted, None
    seen = model.predict_proba(test)
    wanted = list(model.classes_) if classes is None else list(classes)
    column = {c: k for k, c in enumerate(model.classes_)}
    probs = np.zeros((len(test), len(wanted)))
    for j, c in enumerate(wanted):
        if c in column:
            probs[:, j] = seen[:, column[c]]
    return predicted, probs


def baseline_folds(
    clips: Sequence[AudioClip],
    folds: Sequence[Sequence[str]],
    feature_set: str = "egemaps",
    kernel: str = "rbf",
    C: float = 1.0,  # noqa: N803
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    speaker_norm: bool = False,
) -> pd.DataFrame:
    """Per-fold WAR/UAR (percent) with ``folds`` given as each fold's test speakers; the rest train.

    Speaker-independent by construction: a test speaker's clips never reach the scaler or the SVM
    (with ``speaker_norm`` they are standardised with their own statistics, see :func:`fit_predict`).
    """
    paths = [c.audio for c in clips]
    if any(p is None for p in paths):
        raise ValueError("every clip needs an audio file for the openSMILE baseline")
    x = extract_features([p for p in paths if p is not None], feature_set, cache_dir)
    y = np.array([c.label for c in clips])
    speakers = np.array([str(c.speaker) for c in clips])
    rows = []
    for i, test_speakers in enumerate(folds):
        test = np.isin(speakers, [str(s) for s in test_speakers])
        if not test.any() or test.all():
            raise ValueError(
                f"fold {i}: test speakers {list(test_speakers)} leave an empty train or test set"
            )
        train = np.flatnonzero(~test)
        pred = fit_predict(
            x, y, train, np.flatnonzero(test), kernel, C, seed, speakers if speaker_norm else None
        )
        rows.append(
            {
                "fold": i,
                "test_speakers": ",".join(map(str, test_speakers)),
                "test_clips": int(test.sum()),
                "war": 100.0 * accuracy_score(y[test], pred),
                "uar": 100.0 * balanced_accuracy_score(y[test], pred),
            }
        )
    return pd.DataFrame(rows)
