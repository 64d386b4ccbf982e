"""The seed-ensemble on a hand-made predictions frame: averaged probabilities, argmax, pooled UAR/WAR."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.results.ensemble import ensemble_predictions, ensemble_table, render_ensemble


def frame() -> pd.DataFrame:
    """2 folds x 2 seeds, 2 clips each; every clip's averaged probabilities worked out by hand below."""
    rows = [
        # fold, seed, clip, speaker, true, prob_a, prob_b
        (0, 0, "c1", "s1", "a", 0.6, 0.4),  # seed 0 right, seed 1 wrong: mean a .45 b .55 -> b (wrong)
        (0, 1, "c1", "s1", "a", 0.3, 0.7),
        (0, 0, "c2", "s2", "b", 0.45, 0.55),  # mean a .4 b .6 -> b (right)
        (0, 1, "c2", "s2", "b", 0.35, 0.65),
        (1, 0, "c3", "s3", "a", 0.9, 0.1),  # mean a .6 b .4 -> a (right)
        (1, 1, "c3", "s3", "a", 0.3, 0.7),
        (1, 0, "c4", "s4", "b", 0.8, 0.2),  # mean a .55 b .45 -> a (wrong)
        (1, 1, "c4", "s4", "b", 0.3, 0.7),
    ]
    f = pd.DataFrame(rows, columns=["fold", "seed", "clip_id", "speaker", "true", "prob_a", "prob_b"])
    f["predicted"] = np.where(f["prob_a"] > f["prob_b"], "a", "b")
    return f.assign(
        dataset="ds", setting="FSLF", key=lambda d: "k" + d["fold"].astype(str) + d["seed"].astype(str)
    )


def test_ensemble_equals_the_hand_computation() -> None:
    ens = ensemble_predictions(frame()).set_index("clip_id")
    assert ens.loc["c1", "prob_a"] == pytest.approx(0.45) and ens.loc["c4", "prob_a"] == pytest.approx(0.55)
    assert ens["predicted"].to_dict() == {"c1": "b", "c2": "b", "c3": "a", "c4": "a"}
    assert set(ens["seeds"]) == {2}
    (row,) = ensemble_table(frame()).itertuples()
    assert (row.label, row.k, row.folds, row.clips) == ("ensemble k=2", 2, 2, 4)
    assert row.war == pytest.approx(50.0)  # c2, c3 right of 4
    assert row.uar == pytest.approx(50.0)  # class a: c3 of c1, c3; class b: c2 of c2, c4
    # single seeds: seed 0 gets c1, c2, c3 right (75), seed 1 c2, c4 (50): mean 62.5
    assert row.single_war == pytest.approx(62.5)
    assert np.isnan(row.war_spk_lo) and "too few" in row.note  # 4 speakers: no interval


def test_render_names_k_and_the_note() -> None:
    text = render_ensemble(ensemble_table(frame()))
    assert "ensemble k=2" in text and "averaged over the cell's k seeds" in text
    assert '"ensemble k=2"' in render_ensemble(ensemble_table(frame()), "json")


def test_no_probabilities_no_rows() -> None:
    assert ensemble_table(frame().drop(columns=["prob_a", "prob_b"])).empty
