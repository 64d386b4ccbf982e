"""``mmder compare`` on hand-made predictions: the speaker level leads, and says when clips mislead."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from results_helpers import CLASSES, experiment_from_predictions, make_experiment
from scipy.stats import binomtest

from harness.results.compare import compare, compare_all, record
from harness.results.compare_text import format_all, format_comparison, render_all, render_comparisons
from mmder.eval import stats


def _speaker(fold: int, speaker: int, right: int, n: int = 50) -> pd.DataFrame:
    """One test speaker's clips: the first ``right`` predicted correctly, the rest as the next class."""
    true = [CLASSES[i % 4] for i in range(n)]
    pred = [t if i < right else CLASSES[(CLASSES.index(t) + 1) % 4] for i, t in enumerate(true)]
    ids = [f"f{fold}-s{speaker}-c{i}" for i in range(n)]
    return pd.DataFrame({"clip_id": ids, "speaker": f"spk{fold}{speaker}", "true": true, "predicted": pred})


def one_speaker_carries_the_difference():
    """3 folds x 2 test speakers x 50 clips. On speaker spk00 A is right 45 times and B 5 times (A alone
    right on 40 clips); on the other five B gets 2 clips more (32 vs 30). Per clip: 40 against 10.
    Per speaker: one speaker against five."""
    preds = {}
    for fold in range(3):
        for setting, (first, other) in {"FSLF": (45, 30), "audio": (5, 32)}.items():
            right = [first if fold == 0 else other, other]
            preds[setting, fold, 0] = pd.concat([_speaker(fold, s, r) for s, r in enumerate(right)])
    return experiment_from_predictions(preds)


def test_clip_level_mcnemar_is_significant_but_the_speaker_level_is_not_and_the_output_says_so():
    exp = one_speaker_carries_the_difference()
    c = compare(exp, "ds", "FSLF", "audio")
    assert (c.mcnemar.b, c.mcnemar.c) == (40, 10)
    assert c.mcnemar.pvalue == pytest.approx(binomtest(10, 50, 0.5).pvalue) and c.mcnemar.pvalue < 1e-4
    assert c.speaker.clusters == 6 and c.speaker.estimate == pytest.approx(100 * 30 / 300)
    assert c.speaker.lo < 0 < c.speaker.hi and c.speaker.pvalue > 0.05
    text = format_comparison(c)
    lines = text.splitlines()
    assert lines[2].startswith("  speaker level: paired bootstrap over 6 test speakers: 95 % [")
    assert lines[6].startswith("  clip level, assumes independent clips: McNemar exact: 40 clips only A")
    assert (
        "note: clip-level McNemar is significant (p = 2.4e-05) but the speaker-level bootstrap is not "
        "(its interval includes 0)" in text
    )
    assert "the difference is not established" in text
    # 3 (fold, seed) pairs: a t p-value, and the Wilcoxon's absence explained
    assert math.isfinite(c.folds.t_pvalue) and "Wilcoxon cannot reach p<0.05 below 6 pairs" in text
    summary = format_all(compare_all(exp))
    assert "clip-level McNemar is significant but the speaker-level bootstrap is not" in summary
    assert "audio vs FSLF" in summary  # the grid's order


def test_a_difference_every_speaker_shares_is_significant_at_the_speaker_level():
    exp = make_experiment(
        {("audio", f, s): 0.4 for f in range(3) for s in (0, 1)}
        | {("FSLF", f, s): 0.9 for f in range(3) for s in (0, 1)}
    )
    c = compare(exp, "ds", "FSLF", "audio")
    assert c.speaker.lo > 0 and c.speaker.pvalue < 0.01
    assert "not established" not in format_comparison(c)
    # the CLI, --all and the report share one resample count and seed: the same pair, the same interval
    (pairs,) = compare_all(exp)
    row = pairs.table.set_index(["a", "b"]).loc[("audio", "FSLF")]
    assert (row.diff_lo, row.diff_hi) == pytest.approx((-c.speaker.hi, -c.speaker.lo))


def test_compare_as_csv_and_json_at_full_precision_with_the_method_note():
    exp = one_speaker_carries_the_difference()
    c = compare(exp, "ds", "FSLF", "audio")
    csv = render_comparisons([c], "csv")
    assert csv.startswith("# speaker level: 95 % percentile interval") and "assumes independent clips" in csv
    back = pd.read_csv(io.StringIO(csv), comment="#")
    assert back.loc[0, "diff_lo"] == c.speaker.lo and back.loc[0, "mcnemar_p"] == c.mcnemar.pvalue
    assert "not established" in back.loc[0, "notes"]
    payload = json.loads(render_comparisons([c], "json"))
    assert payload["resamples"] == stats.RESAMPLES and payload["seed"] == stats.SEED
    (row,) = payload["rows"]
    expected = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record(c).items()}
    assert row == {k: pytest.approx(v, rel=1e-14) if isinstance(v, float) else v for k, v in expected.items()}
    assert payload["rows"][0]["wilcoxon_p"] is None  # NaN is no JSON: untestable is null
    every = pd.read_csv(io.StringIO(render_all(compare_all(exp), "csv")), comment="#")
    assert {"speaker_p_bh", "t_p_bh", "mcnemar_p_bh"} <= set(every.columns)
    assert json.loads(render_all(compare_all(exp), "json"))["rows"][0]["a"] == "audio"
    with pytest.raises(ValueError, match="allowed"):
        render_comparisons([c], "latex")


def test_the_command_line_offers_the_compare_formats_and_the_one_resample_count():
    from harness.cli.results import COMPARE_FORMATS, RESAMPLES
    from harness.results.compare_text import FORMATS

    assert tuple(COMPARE_FORMATS) == FORMATS and RESAMPLES == stats.RESAMPLES


def test_record_diff_is_the_speaker_estimate_and_the_pooled_difference():
    exp = one_speaker_carries_the_difference()
    c = compare(exp, "ds", "FSLF", "audio", "uar")
    assert record(c)["diff"] == pytest.approx(c.value_a - c.value_b)
    assert np.isfinite(record(c)["speaker_p"]) and "McNemar tests per-clip correctness" in record(c)["notes"]
