"""What a leaderboard's numbers were measured on: each dataset's protocol, and the published rows it
can stand beside.

Kept apart from the table's figures (:mod:`harness.results.leaderboard`) and their rendering
(:mod:`harness.results.board_text`) so both read the one wording without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mmder.eval import references as refs


@dataclass
class DatasetInfo:
    """The protocol facts a reference comparison needs: corpus, classes, folds, frozen or fine-tuned."""

    corpus: str
    classes: int | None
    folds: int
    training: str  # "frozen" or "fine-tuned"
    speaker_norm: str = "none"  # preprocess.speaker_norm: test speakers standardised on their own clips
    # cross_corpus: the dataset tested on; published rows are in-corpus, so none is set beside these
    tested_on: str | None = None


FOLD_FALLBACK = (
    "these predictions name no test speaker (written before predictions.csv had a speaker column): "
    "the fold, with all its speakers, is the resampled unit instead"
)


def protocol_note(dataset: str, info: DatasetInfo | None) -> str:
    """'synthetic  (synthetic, 6 classes, 2 folds, fine-tuned, ...)': what the numbers were measured on."""
    if info is None:
        return str(dataset)
    head = f"{dataset}  ({info.corpus}, {info.classes or '?'} classes, {info.folds} folds, {info.training}"
    if info.speaker_norm != "none":  # a transductive protocol is said where the numbers are
        head += f", speaker-normalised ({info.speaker_norm}, transductive)"
    if info.tested_on:
        head += f", tested on {info.tested_on}"
    return head + ")"


def reference_rows(table: pd.DataFrame, datasets: dict[str, DatasetInfo]) -> pd.DataFrame:
    """Published rows for each dataset of the table, with the delta of our same-setting row to each."""
    rows = []
    for dataset in table["dataset"].unique():
        info = datasets.get(dataset)
        if info is None or info.tested_on:  # a cross-corpus row is no in-corpus row's peer
            continue
        ours = table[table["dataset"] == dataset].set_index("setting")
        for ref in refs.for_dataset(info.corpus):
            diffs = refs.protocol_differences(
                ref, info.classes, info.folds, info.training, speaker_normalised=info.speaker_norm != "none"
            )
            mine = ours.loc[ref.setting] if ref.setting in ours.index else None
            rows.append(
                {
                    "dataset": dataset,
                    "reference": ref.method,
                    "setting": ref.setting or "",
                    "ref_uar": ref.uar if ref.uar is not None else float("nan"),
                    "ref_war": ref.war if ref.war is not None else float("nan"),
                    "d_uar": _delta(mine, "uar_mean", ref.uar),
                    "d_war": _delta(mine, "war_mean", ref.war),
                    "classes": ref.classes,
                    "folds": ref.folds,
                    "training": ref.training,
                    "protocol_differs": "; ".join(diffs),
                    "source": ref.source + (f" ({ref.note})" if ref.note else ""),
                }
            )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["folds"] = frame["folds"].astype("Int64")  # None = not published, not 0 and not 6.00
    return frame


def _delta(mine: pd.Series | None, column: str, value: float | None) -> float:
    if mine is None or value is None:
        return float("nan")
    return float(mine[column]) - value
