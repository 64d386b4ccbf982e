"""Per-setting hyper-parameter searches: Ray Tune trials proposed by Optuna, pruned by a Tune scheduler.

One search per (dataset, setting) (or per fold, ``scope: per_fold``). Its trials are ordinary Train
jobs of the cell's workers (:func:`harness.search.trial.search_trial_loop`) on the fold's *training*
speakers only, split into train and validation speakers; the test speakers never reach a trial. The
Optuna study lives in an RDB (SQLite) file next to the MLflow store, named by the search's key, so a
killed search resumes without repeating finished trials and a finished one is never run again. The
chosen configuration is then trained once per cell on all training speakers; its test number is what
the leaderboard shows.

Tracking (tag names in :mod:`harness.tracking.tags`): a search run (``TAG_KIND`` ``KIND_SEARCH``) under
the sweep's parent run; each trial a run nested under it, with its parameters, validation curve,
speakers, and ``TAG_TRIAL_STATE`` complete or pruned. The chosen parameters are the search run's
``TAG_CHOSEN`` tag and, once applied, params of every cell run it served (``search.chosen.*``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.experiment.search import SearchConfig
from harness.plan.cells import GRID_PARAM, Cell, search_fold
from harness.plan.sweep_plan import SweepPlan
from harness.search.job import SearchJob, apply_chosen
from harness.tracking.runs import search_all
from harness.tracking.tags import (
    BEST_OBJECTIVE,
    KIND_SEARCH,
    KIND_SEARCH_TRIAL,
    OBJECTIVE,
    PARAM_CHOSEN,
    TAG_CHOSEN,
    TAG_DATASET,
    TAG_KIND,
    TAG_PARENT,
    TAG_PRUNED_AT,
    TAG_SEARCH,
    TAG_SETTING,
    TAG_TRIAL_LOST,
    TAG_TRIAL_STATE,
    tag_filter,
)
from mmder.config import TrainingConfig

Echo = Callable[[str], None]


def tune_space(search: SearchConfig) -> dict[str, Any]:
    """The search space as Tune domains (OptunaSearch converts them to Optuna distributions)."""
    from ray import tune

    space: dict[str, Any] = {}
    for name, p in search.space.items():
        if p.type == "log":
            space[name] = tune.loguniform(p.low, p.high)
        elif p.type == "uniform":
            space[name] = tune.uniform(p.low, p.high)
        elif p.type == "int":
            space[name] = tune.randint(int(p.low or 0), int(p.high or 0) + 1)  # high inclusive
        else:
            space[name] = tune.choice(list(p.choices or []))
    return space


def max_epochs(search: SearchConfig, base: TrainingConfig) -> int:
    p = search.space.get("training.epochs")
    return int(p.high) if p is not None and p.type == "int" else base.epochs


def optuna_storage(output: Path) -> str:
    """The studies' RDB: a SQLite file beside the embedded MLflow store, under the sweep's output."""
    return f"sqlite:///{(output / 'optuna.db').resolve()}"


def _open_study(storage_url: str, key: str, search: SearchConfig) -> Any:
    """The search's study, created or reloaded; trials a killed driver left RUNNING become FAIL."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url)
    study = optuna.create_study(study_name=key, storage=storage, direction="maximize", load_if_exists=True)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return study, storage


def finished_trials(study: Any) -> list[Any]:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def _sampler(search: SearchConfig) -> Any:
    import optuna

    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    # Optuna's own n_startup_trials (10) would make a small budget a random search; concurrent trials
    # get the constant liar, so two running trials are not proposed the same point
    return optuna.samplers.TPESampler(
        seed=search.seed,
        n_startup_trials=search.random_trials(),
        constant_liar=search.max_concurrent_trials > 1,
    )


def _scheduler(search: SearchConfig, epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if search.pruner == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            metric=OBJECTIVE,
            mode="max",
            max_t=epochs,
            grace_period=min(search.grace_epochs, epochs),
        )
    if search.pruner == "median":
        return MedianStoppingRule(
            time_attr="training_iteration", metric=OBJECTIVE, mode="max", grace_period=search.grace_epochs
        )
    return FIFOScheduler()


def run_search(
    plan: SweepPlan,
    cell: Cell,
    key: str,
    *,
    cache_path: str,
    tracker: Any,
    parent_run_id: str,
    echo: Echo,
) -> dict[str, Any]:
    """Run (or resume, or just read) the search ``key`` for ``cell``'s group; returns the chosen params."""
    search = plan.spec.search
    assert search is not None and cell.training is not None
    run_id, chosen = _search_run(tracker, key, parent_run_id, cell)
    if chosen is not None:
        echo(f"{key}: finished before; chosen {chosen}")
        return chosen
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from harness.search.trial import search_trial

    storage_url = optuna_storage(plan.places.output)
    study, storage = _open_study(storage_url, key, search)
    epochs = max_epochs(search, cell.training)
    _mark_lost(tracker, key, study)
    _mark_recorded_before(tracker, key, study, epochs)
    done = len(finished_trials(study))
    remaining = search.trials - done
    echo(f"{key}: {done} of {search.trials} trials finished, {max(0, remaining)} to run")
    if remaining > 0:
        base = cell.model_copy(update={"fold": search_fold(search, cell)})
        job = SearchJob(
            search_key=key,
            cell=base,
            search=search,
            cache_path=cache_path,
            tracking_uri=tracker.uri,
            experiment_id=tracker.experiment_id,
            search_run_id=run_id,
            storage_path=plan.places.storage,
            resources=plan.spec.resources,
        )
        tuner = tune.Tuner(
            tune.with_resources(search_trial, {"CPU": 0.01}),
            param_space={GRID_PARAM: job.model_dump(mode="json"), **tune_space(search)},
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(
                    metric=OBJECTIVE, mode="max", sampler=_sampler(search), study_name=key, storage=storage
                ),
                scheduler=_scheduler(search, epochs),
                num_samples=remaining,
                max_concurrent_trials=search.max_concurrent_trials,
                # a pruned trial's actor must die with its Train job (a reused actor would keep it running)
                reuse_actors=False,
                trial_dirname_creator=lambda t: t.trial_id,
            ),
            run_config=tune.RunConfig(
                name=f"{key}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=f"{plan.places.storage}/tune",
                verbose=0,
                callbacks=[_progress_callback(key, done, search.trials, epochs, echo)],
            ),
        )
        results = tuner.fit()
        _mark_stopped(tracker, key, results, epochs)
        study, storage = _open_study(storage_url, key, search)
    trials = finished_trials(study)
    if len(trials) < search.trials:
        raise RuntimeError(f"{key}: only {len(trials)} of {search.trials} trials finished; rerun to continue")
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    chosen = {name: best.params[name] for name in search.space}
    _finish_search(tracker, run_id, chosen, best.value, len(trials))
    echo(f"{key}: chosen {chosen} (validation {search.objective} {best.value:.2f})")
    return chosen


def _progress_callback(key: str, done: int, trials: int, epochs: int, echo: Echo) -> Any:
    """A Tune callback that says each trial's end: a search runs for long with nothing else to show."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        def __init__(self) -> None:
            self.ended = done

        def _say(self, trial: Any, how: str) -> None:
            self.ended += 1
            result = trial.last_result or {}
            value = result.get(OBJECTIVE)
            score = f"validation {value:.2f}" if value is not None else "no validation score"
            params = {k: v for k, v in trial.config.items() if k != GRID_PARAM}
            echo(f"{key}: trial {self.ended} of {trials} {how}, {score}; {_brief(params)}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            ran = _pruned_at(trial.last_result or {}, epochs)
            how = f"complete ({epochs} epochs)" if ran is None else f"pruned after {ran} of {epochs} epochs"
            self._say(trial, how)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._say(trial, "failed (its worker errored; the sweep log has the trace)")

    return TrialProgress()


def _pruned_at(result: dict[str, Any], epochs: int) -> int | None:
    """The epochs a trial's last result had seen when the scheduler stopped it; None if it ran them all."""
    ran = int(result.get("training_iteration", 0))
    return ran if ran < epochs else None


def _brief(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _search_run(tracker: Any, key: str, parent_run_id: str, cell: Cell) -> tuple[str, dict[str, Any] | None]:
    """The search's MLflow run (created once) and its chosen parameters if it finished before."""
    runs = search_all(
        tracker.client,
        [tracker.experiment_id],
        f"{tag_filter(TAG_SEARCH, key)} and {tag_filter(TAG_KIND, KIND_SEARCH)}",
    )
    if runs:
        run = runs[0]
        chosen = run.data.tags.get(TAG_CHOSEN)
        return run.info.run_id, (json.loads(chosen) if chosen else None)
    run = tracker.client.create_run(
        tracker.experiment_id,
        run_name=key,
        tags={
            TAG_KIND: KIND_SEARCH,
            TAG_SEARCH: key,
            TAG_PARENT: parent_run_id,
            TAG_DATASET: cell.dataset,
            TAG_SETTING: cell.setting,
        },
    )
    return run.info.run_id, None


def _finish_search(tracker: Any, run_id: str, chosen: dict[str, Any], value: float, trials: int) -> None:
    for name, v in chosen.items():
        tracker.client.log_param(run_id, f"{PARAM_CHOSEN}{name}", v)
    tracker.client.log_metric(run_id, BEST_OBJECTIVE, value)
    tracker.client.log_metric(run_id, "trials", trials)
    tracker.client.set_tag(run_id, TAG_CHOSEN, json.dumps(chosen, sort_keys=True))
    tracker.client.set_terminated(run_id, status="FINISHED")


def _mark_stopped(tracker: Any, key: str, results: Any, epochs: int) -> None:
    """Trial runs Tune ended while they still ran are closed as what happened to them.

    A trial the scheduler stopped early ends KILLED as ``pruned``. One that reached its last epoch ends
    FINISHED as ``complete``: ASHA stops every trial at ``max_t``, which can reach the workers after the
    last report and before they closed their own run. Any other is ``interrupted``."""
    from harness.tracking.tags import TAG_TRIAL

    ended = {
        r.metrics.get("trial_id"): (_pruned_at(r.metrics, epochs), r.metrics.get(OBJECTIVE))
        for r in results
        if r.metrics and r.error is None
    }
    for run in _trial_runs(tracker, key, "and attributes.status = 'RUNNING'"):
        trial = run.data.tags.get(TAG_TRIAL)
        if trial not in ended:
            tracker.client.set_tag(run.info.run_id, TAG_TRIAL_STATE, "interrupted")
            tracker.client.set_terminated(run.info.run_id, status="KILLED")
            continue
        ran, value = ended[trial]
        if ran is None:
            _close_complete(tracker, run.info.run_id, value)
            continue
        # the scheduler's decision, taken on this many epochs; with short epochs the workers may
        # have logged one or two more before the stop reached them
        _close_pruned(tracker, run.info.run_id, ran)


def _close_complete(tracker: Any, run_id: str, value: float | None) -> None:
    """What a trial's own workers write at its end, written for them when they were stopped first."""
    if value is not None:
        tracker.client.log_metric(run_id, OBJECTIVE, float(value))
    tracker.client.set_tag(run_id, TAG_TRIAL_STATE, "complete")
    tracker.client.set_terminated(run_id, status="FINISHED")


def _close_pruned(tracker: Any, run_id: str, at_epoch: int) -> None:
    """A trial the scheduler stopped after ``at_epoch`` epochs: KILLED, tagged ``pruned``."""
    tracker.client.set_tag(run_id, TAG_TRIAL_STATE, "pruned")
    tracker.client.set_tag(run_id, TAG_PRUNED_AT, str(at_epoch))
    tracker.client.set_terminated(run_id, status="KILLED")


def _mark_recorded_before(tracker: Any, key: str, study: Any, epochs: int) -> None:
    """Trial runs a killed driver left RUNNING although the study recorded their trial are closed as
    that driver would have done at the end of its search: ``complete`` where the study saw every epoch
    (ASHA stops a trial at its last epoch, which can beat the workers' own closing), ``pruned`` (KILLED)
    where it saw fewer. Left alone, the rerun called them interrupted while the study counted them in the
    budget. Matched by their parameters."""
    recorded = finished_trials(study)
    if not recorded:
        return
    for run in _trial_runs(tracker, key, "and attributes.status = 'RUNNING'"):
        trial = _trial_of(run, recorded)
        if trial is None:
            continue
        seen = len(trial.intermediate_values)
        if seen >= epochs:
            _close_complete(tracker, run.info.run_id, trial.value)
            continue
        _close_pruned(tracker, run.info.run_id, max(1, seen))


def _trial_runs(tracker: Any, key: str, extra_filter: str = "") -> list[Any]:
    """The MLflow runs of the search ``key``'s trials (``extra_filter``: more of the search filter)."""
    search = f"{tag_filter(TAG_SEARCH, key)} and {tag_filter(TAG_KIND, KIND_SEARCH_TRIAL)} {extra_filter}"
    return search_all(tracker.client, [tracker.experiment_id], search.strip())


def _trial_of(run: Any, trials: list[Any]) -> Any:
    """The study trial whose parameters the MLflow run logged (as ``str``), or None."""
    params = run.data.params
    return next((t for t in trials if all(params.get(n) == str(v) for n, v in t.params.items())), None)


def _mark_lost(tracker: Any, key: str, study: Any) -> None:
    """Trial runs that ended but whose result the study never received are tagged ``lost``.

    A driver killed after a trial's workers finished but before Optuna was told leaves an MLflow run
    saying ``complete`` and a study trial that :func:`_open_study` turned into FAIL; its budget is run
    again. Runs are matched to the study's finished trials by their parameters (logged as ``str``).
    """
    recorded = finished_trials(study)
    for run in _trial_runs(tracker, key):
        if run.data.tags.get(TAG_TRIAL_STATE) not in ("complete", "pruned"):
            continue
        if _trial_of(run, recorded) is None:
            tracker.client.set_tag(run.info.run_id, TAG_TRIAL_STATE, "lost")
            tracker.client.set_tag(
                run.info.run_id,
                TAG_TRIAL_LOST,
                "the driver stopped before the study recorded this trial; its budget ran again",
            )


def apply_searches(
    plan: SweepPlan, cells: list[Cell], caches: dict[str, str], tracker: Any, parent_run_id: str, echo: Echo
) -> list[Cell]:
    """Each deep cell with its search's chosen configuration (searches run or resumed first)."""
    search = plan.spec.search
    if search is None:
        return cells
    chosen_by_key: dict[str, dict[str, Any]] = {}
    out = []
    for cell in cells:
        key = cell.search_key  # the plan gives every searched cell its search's key
        if key is None or cell.kind != "train":  # baselines and pre-trainings are not searched
            out.append(cell)
            continue
        if key not in chosen_by_key:
            chosen_by_key[key] = run_search(
                plan,
                cell,
                key,
                cache_path=caches[cell.dataset],
                tracker=tracker,
                parent_run_id=parent_run_id,
                echo=echo,
            )
        out.append(apply_chosen(cell, search, chosen_by_key[key]))
    return out
