"""Hand-made experiments for the result tables: run frames and predictions, no MLflow needed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.results.leaderboard import RUN_COLUMNS, DatasetInfo, ExperimentRuns

CLASSES = ["neutral", "calm", "happy", "sad"]


class DictLoader:
    """predictions/confusion/history by run id, as MLflow would hand them back."""

    def __init__(self) -> None:
        self.preds: dict[str, pd.DataFrame] = {}
        self.hist: dict[tuple[str, str], list[tuple[int, float]]] = {}

    def predictions(self, run_id: str) -> pd.DataFrame | None:
        return self.preds.get(run_id)

    def confusion(self, run_id: str) -> dict | None:
        p = self.preds.get(run_id)
        if p is None:
            return None
        m = pd.crosstab(p["true"], p["predicted"]).reindex(index=CLASSES, columns=CLASSES, fill_value=0)
        return {"classes": CLASSES, "matrix": m.to_numpy().tolist()}

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return self.hist.get((run_id, metric), [])


def fake_predictions(fold: int, accuracy: float, seed: int, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    true = [CLASSES[i % 4] for i in range(n)]
    right = rng.random(n) < accuracy
    pred = [t if ok else CLASSES[(CLASSES.index(t) + 1) % 4] for t, ok in zip(true, right, strict=True)]
    return pd.DataFrame(
        {
            "clip_id": [f"f{fold}-c{i}" for i in range(n)],
            "speaker": [f"s{fold}-{i * 4 // n}" for i in range(n)],  # 4 test speakers per fold
            "true": true,
            "predicted": pred,
        }
    )


def make_experiment(spec: dict[tuple[str, int, int], float | None], folds: int = 3) -> ExperimentRuns:
    """(setting, fold, seed) -> accuracy (None: not finished); WAR/UAR come from the predictions."""
    preds = {
        cell: None if acc is None else fake_predictions(cell[1], acc, seed=i)
        for i, (cell, acc) in enumerate(spec.items())
    }
    return experiment_from_predictions(preds, folds)


def experiment_from_predictions(
    spec: dict[tuple[str, int, int], pd.DataFrame | None], folds: int = 3
) -> ExperimentRuns:
    """(setting, fold, seed) -> its predictions.csv (None: not finished), as a sweep would leave them."""
    loader = DictLoader()
    rows = []
    for i, ((setting, fold, seed), pred) in enumerate(spec.items()):
        row = {
            "key": f"ds-{setting}-f{fold}-s{seed}",
            "dataset": "ds",
            "setting": setting,
            "fold": fold,
            "fold_name": f"fold{fold + 1}",  # as speaker_kfold names them
            "seed": seed,
        }
        if pred is None:
            rows.append({**row, "finished": False})
            continue
        run_id = f"run{i}"
        loader.preds[run_id] = pred
        correct = pred["true"] == pred["predicted"]
        uar = 100 * correct.groupby(pred["true"]).mean().mean()
        rows.append(
            {
                **row,
                "finished": True,
                "run_id": run_id,
                "uar": uar,
                "war": 100 * correct.mean(),
                "wall_seconds": 3600.0,
                "train_clips_per_s": 10.0,
                "device_count": 2.0,
                "mfu": None,
                "tags": {"mmder.cell": row["key"]},
            }
        )
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS).astype({"finished": bool})
    info = {"ds": DatasetInfo("ravdess", 8, folds, "fine-tuned")}
    return ExperimentRuns("toy", runs, loader, ["audio", "FSLF"], info)
