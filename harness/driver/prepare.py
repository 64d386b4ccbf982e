"""Preprocess each dataset the remaining cells need, once per sweep, into the shared clip cache."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from harness.plan.sweep_plan import SweepPlan


def _how(prepared: Any) -> str:
    """How the clips came to be prepared: ready before, decoded now, or partly resumed."""
    if prepared.n_decoded is None:
        return " (the cache was ready)"
    if prepared.n_resumed:
        resumed, decoded = prepared.n_resumed, prepared.n_decoded
        return f" ({resumed} resumed from an interrupted preparation, {decoded} decoded now)"
    return ""


def prepare_datasets(plan: SweepPlan, labels: set[str], echo: Callable[[str], None]) -> dict[str, str]:
    """label -> prepared cache folder, for the datasets in ``labels`` (each read from its plan listing)."""
    from mmder.data.store import prepare_corpus

    paths: dict[str, str] = {}
    for ds in plan.spec.datasets:
        if ds.label not in labels:
            continue
        t0 = time.perf_counter()
        prepared = prepare_corpus(
            ds.corpus,
            plan.places.dataset_roots[ds.label],
            plan.places.cache,
            plan.spec.preprocess,
            corpus_options=ds.options,
            workers=plan.spec.preprocess.workers,
            progress=sys.stderr.isatty(),
            listing=plan.listings.get(ds.label),
        )
        echo(
            f"{ds.label}: prepared {prepared.n_prepared}{_how(prepared)}, skipped {prepared.n_skipped} "
            f"({time.perf_counter() - t0:.1f} s; cache {prepared.path}; skip report {prepared.skip_report})"
        )
        paths[ds.label] = str(prepared.path)
    return paths
