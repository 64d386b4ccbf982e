"""What the sweep's parent run carries when a sweep ends, so MLflow alone can compare sweeps.

The resolved experiment (``experiment.yaml``: every field with its default, ``--set`` overrides applied),
its key params (:data:`~harness.tracking.tags.SWEEP_PARAMS`, the datasets, the cell count, the results
version), one metric per (dataset, setting) and statistic (:data:`PARENT_STATS`: WAR and UAR pooled
over the test predictions with their speaker-bootstrap interval, the headline, beside the mean over folds
x seeds with its 95 % t interval; :func:`~harness.tracking.tags.aggregate_metric` names them), and the
leaderboard as CSV and
JSON (:mod:`harness.results.leaderboard`, as ``mmder leaderboard`` prints it). Written again each time a
sweep of the experiment ends: metrics and artifacts then show the latest state. Params cannot change in
MLflow: one whose value differs from the run's keeps its first value, and the note says which.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from harness.plan.sweep_plan import SweepPlan
from harness.tracking.store import Tracker
from harness.tracking.tags import (
    AGGREGATE_METRICS,
    AGGREGATE_STATS,
    PARAM_CELLS,
    PARAM_DATASETS,
    PARAM_RESULTS_VERSION,
    SWEEP_PARAMS,
    TAG_PARAMS_KEPT,
    TAG_SUMMARISED,
    aggregate_metric,
)
from mmder.versions import RESULTS_VERSION

EXPERIMENT_FILE = "experiment.yaml"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_JSON = "leaderboard.json"
# the leaderboard's headline (pooled, speaker interval) beside the fold mean and its t interval: the
# interval of one statistic must not sit beside the value of another
PARENT_STATS = (*AGGREGATE_STATS, "pooled")


def summarise_parent(tracker: Tracker, parent: str, plan: SweepPlan) -> None:
    """Write the parent run's params, aggregate metrics and artifacts; tag it summarised last."""
    from harness.results.leaderboard import experiment_leaderboard, render

    spec = plan.spec
    table = experiment_leaderboard(spec, plan.places.output)
    kept = _log_params(tracker, parent, sweep_params(plan))
    tracker.log_metrics(parent, aggregate_metrics(table))
    tracker.artifacts(
        parent,
        {
            EXPERIMENT_FILE: experiment_yaml(spec),
            LEADERBOARD_CSV: render(table, "csv"),
            LEADERBOARD_JSON: render(table, "json"),
        },
    )
    tags = {TAG_SUMMARISED: str(RESULTS_VERSION)}
    if kept:
        tags[TAG_PARAMS_KEPT] = ", ".join(kept)
    tracker.tags(parent, tags)


def experiment_yaml(spec: Any) -> str:
    """The experiment as validated: every field (defaults included), overrides applied and named."""
    head = "# the resolved experiment this sweep ran"
    if spec.overrides:
        head += " (with --set " + " --set ".join(spec.overrides) + ")"
    body = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    return f"{head}\n{body}"


def sweep_params(plan: SweepPlan) -> dict[str, str]:
    """The experiment's key params as MLflow param values (lists and mappings as JSON)."""
    data = plan.spec.model_dump(mode="json")
    params = {}
    for path in SWEEP_PARAMS:
        value: Any = data
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        params[path] = value if isinstance(value, str) else json.dumps(value)
    params[PARAM_DATASETS] = ", ".join(
        f"{ds.label}:{ds.corpus}:{ds.protocol.get('kind')}" for ds in plan.spec.datasets
    )
    params[PARAM_CELLS] = str(len(plan.cells))
    params[PARAM_RESULTS_VERSION] = str(RESULTS_VERSION)
    return params


def aggregate_metrics(table: Any) -> dict[str, float]:
    """``war_pooled/<dataset>/<setting>`` with ``war_spk_lo/...``, ``war_spk_hi/...`` (speaker bootstrap),
    ``war_mean/...`` with ``war_lo/...``, ``war_hi/...`` (t interval over folds x seeds) and the same for
    UAR, per leaderboard row; a statistic the leaderboard does not give (no finished cell, too few for an
    interval) is left out."""
    metrics = {}
    for row in table.to_dict("records"):
        for metric in AGGREGATE_METRICS:
            for stat in PARENT_STATS:
                value = row.get(f"{metric}_{stat}")
                if value is not None and not math.isnan(float(value)):
                    metrics[aggregate_metric(metric, stat, row["dataset"], row["setting"])] = float(value)
    return metrics


def _log_params(tracker: Tracker, run_id: str, params: dict[str, str]) -> list[str]:
    """Log the params the run lacks; return those it holds with another value (MLflow keeps the first)."""
    held = tracker.client.get_run(run_id).data.params
    tracker.log_params(run_id, {k: v for k, v in params.items() if k not in held})
    return sorted(k for k, v in params.items() if k in held and held[k] != v[:6000])
