"""Which leaderboard rows rest on one trained model per fold, and what that means for their interval.

The speaker bootstrap resamples test speakers with the trained models held fixed. With one seed per
fold the models are one draw of training, so the interval is conditional on them: every format says so
(the table's footnote, the Markdown and LaTeX captions, the CSV's ``#`` notes, JSON's
``one_model_per_fold``), and the report shows the table's text.
"""

from __future__ import annotations

import pandas as pd

from mmder.registry import BASELINES


def one_model_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows with finished runs and no more than one per fold; a classical baseline, which no seed
    changes (it runs once per fold), is left out: it has no training variance to hold out."""
    if table.empty:
        return table
    one = (table["runs"] > 0) & (table["runs"] <= table["folds"]) & ~table["setting"].isin(list(BASELINES))
    return table[one]


def one_model_names(table: pd.DataFrame) -> list[str]:
    """'FSLF', or 'ds FSLF' where the table holds several datasets."""
    rows = one_model_rows(table)
    several = table["dataset"].nunique() > 1
    return [f"{d} {s}" if several else str(s) for d, s in zip(rows["dataset"], rows["setting"], strict=True)]


def one_model_note(table: pd.DataFrame) -> str:
    """The footnote for the rows on one trained model per fold ("" when there are none)."""
    names = one_model_names(table)
    if not names:
        return ""
    deep = table[~table["setting"].isin(list(BASELINES)) & (table["runs"] > 0)]
    which = "every row" if len(names) == len(deep) and len(names) > 1 else ", ".join(names)
    return (
        f"one trained model per fold ({which}): the [95% spk] interval resamples test speakers with the "
        "trained models held fixed, so it is conditional on one trained model per fold; seed-to-seed "
        "training variance is not in it"
    )
