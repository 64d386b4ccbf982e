"""The two-level (seed + speaker) bootstrap on constructed predictions: no sweep, no MLflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.results.seed_bootstrap import several_seeds, two_level_bootstrap, with_clusters
from mmder.eval import stats

CLASSES = ["neutral", "calm", "happy", "sad"]


def seed_predictions(
    accuracies: dict[tuple[int, int], float], n: int = 48, speakers: int = 6
) -> pd.DataFrame:
    """(fold, seed) -> accuracy; every seed of a fold predicts the same clips, each clip right or wrong by
    a draw that depends on the seed only through ``accuracy`` (equal accuracies: identical predictions)."""
    parts = []
    for (fold, seed), acc in accuracies.items():
        true = [CLASSES[i % 4] for i in range(n)]
        u = np.random.default_rng(100 + fold).random(n)  # the same clip draws for every seed of a fold
        pred = [t if x < acc else CLASSES[(CLASSES.index(t) + 1) % 4] for t, x in zip(true, u, strict=True)]
        parts.append(
            pd.DataFrame(
                {
                    "clip_id": [f"f{fold}-c{i}" for i in range(n)],
                    "speaker": [f"s{fold}-{i * speakers // n}" for i in range(n)],
                    "true": true,
                    "predicted": pred,
                    "fold": fold,
                    "seed": seed,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def both(pred: pd.DataFrame, metric: str) -> tuple[stats.ClusterInterval, stats.ClusterInterval]:
    spk = stats.speaker_bootstrap(pred["true"], pred["predicted"], pred["speaker"], metric)
    two = two_level_bootstrap([with_clusters(pred, pred["speaker"])], metric)
    return spk, two


@pytest.mark.parametrize("metric", ["war", "uar"])
def test_identical_seeds_give_the_speaker_interval(metric: str) -> None:
    # the speakers are drawn as the speaker bootstrap draws them; with identical seeds every seed draw
    # gives the same pooled counts (k times one seed's), so the intervals agree to rounding
    pred = seed_predictions({(f, s): 0.6 + 0.1 * f for f in range(3) for s in range(3)})
    assert several_seeds(pred)
    spk, two = both(pred, metric)
    assert two.estimate == pytest.approx(spk.estimate, abs=1e-9)
    assert (two.lo, two.hi) == pytest.approx((spk.lo, spk.hi), abs=1e-9)
    assert two.clusters == spk.clusters == 18


@pytest.mark.parametrize("metric", ["war", "uar"])
def test_seeds_that_disagree_widen_the_interval(metric: str) -> None:
    pred = seed_predictions({(f, s): acc for f in range(3) for s, acc in enumerate((0.35, 0.6, 0.9))})
    spk, two = both(pred, metric)
    assert two.estimate == pytest.approx(spk.estimate, abs=1e-9)  # the point is the same pooled value
    assert two.hi - two.lo > spk.hi - spk.lo + 2.0
    assert two.lo < spk.lo and two.hi > spk.hi


def test_wider_with_more_seed_spread() -> None:
    widths = []
    for spread in (0.0, 0.1, 0.25):
        pred = seed_predictions({(f, s): 0.6 + spread * (s - 1) for f in range(3) for s in range(3)})
        two = two_level_bootstrap([with_clusters(pred, pred["speaker"])], "war")
        widths.append(two.hi - two.lo)
    assert widths[0] < widths[1] < widths[2]


def test_one_seed_per_fold_is_not_several() -> None:
    assert not several_seeds(seed_predictions({(f, 0): 0.6 for f in range(3)}))


def test_paired_difference_resamples_both_sides() -> None:
    a = seed_predictions({(f, s): acc for f in range(3) for s, acc in enumerate((0.5, 0.7, 0.9))})
    b = seed_predictions({(f, s): 0.6 for f in range(3) for s in range(3)})
    diff = two_level_bootstrap([with_clusters(a, a["speaker"]), with_clusters(b, b["speaker"])], "war")
    fixed = stats.paired_speaker_bootstrap(a["true"], a["predicted"], b["predicted"], a["speaker"], "war")
    assert diff.estimate == pytest.approx(fixed.estimate)
    assert diff.hi - diff.lo > fixed.hi - fixed.lo
    assert 0.0 < diff.pvalue <= 1.0 and diff.resamples == stats.RESAMPLES


def test_too_few_speakers_gives_no_interval() -> None:
    pred = seed_predictions({(0, 0): 0.5, (0, 1): 0.7}, speakers=3)
    two = two_level_bootstrap([with_clusters(pred, pred["speaker"])], "war")
    assert np.isnan(two.lo) and "too few" in two.note


def _board(accuracies: dict[tuple[str, int, int], float]) -> tuple[pd.DataFrame, object]:
    from results_helpers import experiment_from_predictions

    from harness.results.leaderboard import leaderboard

    spec = {}
    for (setting, fold, seed), acc in accuracies.items():
        pred = seed_predictions({(fold, seed): acc}).drop(columns=["fold", "seed"])
        spec[(setting, fold, seed)] = pred
    exp = experiment_from_predictions(spec)
    return leaderboard(exp.runs, exp.loader, exp.settings), exp


def test_leaderboard_headline_is_two_level_where_seeds_are_several() -> None:
    from harness.results.board_text import render

    accs = {("FSLF", f, s): a for f in range(3) for s, a in enumerate((0.35, 0.6, 0.9))}
    accs |= {("audio", f, 0): 0.6 for f in range(3)}
    table, exp = _board(accs)
    several = table.set_index("setting").loc["FSLF"]
    one = table.set_index("setting").loc["audio"]
    assert several.interval == "seed+spk" and one.interval == "spk"
    assert several.war_seed_hi - several.war_seed_lo > several.war_spk_hi - several.war_spk_lo
    assert np.isnan(one.war_seed_lo)
    text = render(table, "table", exp.datasets)
    assert "[95% spk; *seed+spk]" in text and "two-level bootstrap" in text
    assert f"{several.war_pooled:.1f} [{several.war_seed_lo:.1f}, {several.war_seed_hi:.1f}]*" in text
    assert "one trained model per fold (audio)" in text  # the one-seed row keeps its conditional note
    for fmt in ("markdown", "latex", "json", "csv"):
        assert "seed+spk" in render(table, fmt, exp.datasets), fmt
    only = table[table["setting"] == "FSLF"]
    assert "[95% seed+spk]" in render(only, "markdown", exp.datasets)
    one_only = render(table[table["setting"] == "audio"], "markdown", exp.datasets)
    assert "[95% spk]" in one_only and "seed+spk" not in one_only


def test_compare_resamples_seeds_when_both_sides_have_several() -> None:
    from harness.results.compare import compare, record
    from harness.results.compare_text import format_comparison

    accs = {("FSLF", f, s): a for f in range(3) for s, a in enumerate((0.35, 0.6, 0.9))}
    accs |= {("audio", f, s): 0.6 for f in range(3) for s in range(3)}
    _, exp = _board(accs)
    c = compare(exp, "ds", "FSLF", "audio", "war")
    assert c.interval == "seed+spk" and c.models == (9, 9)
    fixed = stats.paired_speaker_bootstrap(
        *(np.asarray(x) for x in _paired_arrays(exp, "FSLF", "audio")), "war"
    )
    assert c.speaker.estimate == pytest.approx(fixed.estimate)
    assert c.speaker.hi - c.speaker.lo > fixed.hi - fixed.lo
    text = format_comparison(c)
    assert "seed+speaker level: paired two-level bootstrap" in text and "[95% seed+spk]" in text
    assert "seeds resampled too" in text
    assert record(c)["interval"] == "seed+spk"


def test_compare_with_one_seed_keeps_the_speaker_bootstrap() -> None:
    from harness.results.compare import compare

    accs = {("FSLF", f, 0): 0.7 for f in range(3)} | {("audio", f, 0): 0.5 for f in range(3)}
    _, exp = _board(accs)
    c = compare(exp, "ds", "FSLF", "audio", "war")
    assert c.interval == "spk" and not any("seeds resampled" in n for n in c.notes)
    assert any("conditional on these trained models" in n for n in c.notes)


def _paired_arrays(exp: object, a: str, b: str) -> tuple[np.ndarray, ...]:
    from harness.results.compare import paired_predictions

    clips, _ = paired_predictions(exp, "ds", a, b)
    return (clips["true"], clips["pred_a"], clips["pred_b"], clips["speaker"])
