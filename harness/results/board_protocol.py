"""What a leaderboard's numbers were measured on: each dataset's protocol, and the published rows it
can stand beside.

Kept apart from the table's figures (:mod:`harness.results.leaderboard`) and their rendering
(:mod:`harness.results.board_text`) so both read the one wording without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

import pandas as pd

from mmder.eval import references as refs


@dataclass
class DatasetInfo:
    """The protocol facts a reader and a reference comparison need: corpus, classes, folds, frozen or
    fine-tuned, how the encoder started and over how many seeds."""

    corpus: str
    classes: int | None
    folds: int
    training: str  # "frozen" or "fine-tuned": the published rows' vocabulary
    speaker_norm: str = "none"  # preprocess.speaker_norm: test speakers standardised on their own clips
    # cross_corpus: the dataset tested on; published rows are in-corpus, so none is set beside these
    tested_on: str | None = None
    encoder: str = ""  # encoder_start(model.pretrained); "" where unknown (then only `training` is said)
    seeds: int = 0  # the grid's seeds; 0 where unknown


FROM_SCRATCH = "from scratch"
MAE_IN_SWEEP = "MAE pre-trained in this sweep"


def encoder_start(pretrained: str | None) -> str:
    """How every cell's encoder started, from ``model.pretrained``: ``null`` (random weights), ``mae``
    (this experiment's own pre-training cells, one per fold) or a checkpoint, named by its file."""
    if pretrained is None:
        return FROM_SCRATCH
    if pretrained == "mae":
        return MAE_IN_SWEEP
    return f"from checkpoint {PurePath(pretrained).name}"


def training_words(info: DatasetInfo) -> str:
    """'trained from scratch', 'fine-tuned, MAE pre-trained in this sweep', 'frozen encoder from checkpoint
    x.pth': a model trained from random weights is not called fine-tuned."""
    start = info.encoder
    if not start:
        return info.training
    frozen = info.training == "frozen"
    if start == FROM_SCRATCH:
        return "frozen encoder from scratch (random)" if frozen else "trained from scratch"
    sep = ", " if start == MAE_IN_SWEEP else " "
    return ("frozen encoder" if frozen else info.training) + sep + start


FOLD_FALLBACK = (
    "these predictions name no test speaker (written before predictions.csv had a speaker column): "
    "the fold, with all its speakers, is the resampled unit instead"
)


def protocol_note(dataset: str, info: DatasetInfo | None) -> str:
    """'synthetic  (synthetic, 6 classes, 2 folds, trained from scratch, 1 seed, ...)': what the numbers
    were measured on."""
    if info is None:
        return str(dataset)
    folds = f"{info.folds} fold{'s' if info.folds != 1 else ''}"
    head = f"{dataset}  ({info.corpus}, {info.classes or '?'} classes, {folds}"
    head += f", {training_words(info)}"
    if info.seeds:
        head += f", {info.seeds} seed{'s' if info.seeds != 1 else ''}"
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
