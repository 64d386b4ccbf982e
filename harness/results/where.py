"""Where an experiment's results are, and a plain refusal when there are none to read.

``status``, ``leaderboard``, ``compare`` and ``report`` read a sweep's store; run from another folder
(the default output is relative to the current folder) they would otherwise report "16 pending" or a
table of missing cells, which reads like "nothing ran yet". They say where they looked instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.experiment.errors import ConfigError
from harness.plan.places import Places
from harness.tracking.places import sqlite_path


def find_results(spec: Any, output: str | Path | None) -> Places:
    """The experiment's places, once its store is known to hold the experiment; else a ConfigError
    (exit 2) naming the folder looked in and how to point elsewhere."""
    places = Places.of(spec, output)
    path = sqlite_path(places.tracking_uri)
    if path is not None:
        from harness.tracking.runs import sqlite_has_experiment

        found = sqlite_has_experiment(path, spec.mlflow_experiment)
        where = f"no MLflow store of experiment {spec.mlflow_experiment!r} at {path}"
    else:
        from harness.tracking.store import Tracker

        found = Tracker.existing(places.tracking_uri, spec.mlflow_experiment) is not None
        where = f"no experiment {spec.mlflow_experiment!r} in the MLflow store {places.tracking_uri}"
    if not found:
        raise ConfigError(
            "--output",
            f"no sweep output in {places.output} ({where}). Nothing has run there: point --output at the "
            f"folder the sweep wrote (the default, runs/{spec.name}, counts from the folder mmder runs "
            "in), or run `mmder sweep` on this experiment first",
        )
    return places
