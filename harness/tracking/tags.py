"""The MLflow vocabulary: every tag, tag value, param prefix and metric name mmder writes or reads.

One home, so a reader (planning, status, the leaderboard, the search) and the writer (the driver, the
workers) can never spell a name two ways, and the UI's filters (``tags."mmder.data_digest" = '...'``)
can be looked up here. Nothing outside this module spells a ``mmder.`` tag (a test greps for it).
Changing a value here renames what finished runs carry: a sweep would no longer find its results.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

TAG_PREFIX = "mmder."  # every tag of ours starts with it (the report lists a run's tags by it)

# --- where a run sits: its cell, kind and sweep ------------------------------------------------------
TAG_CELL = "mmder.cell"  # the cell's key: names its runs, checkpoints and this tag
TAG_KIND = "mmder.kind"  # one of the KIND_* values below
TAG_SWEEP = "mmder.sweep"  # the experiment's name, on its parent run
TAG_ATTEMPT = "mmder.attempt"  # 1 for a cell's first run, n for its n-th (retries after a failure)
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: nests a run under another in the UI
TAG_NOTE = "mlflow.note.content"  # MLflow's own: the run's description

KIND_SWEEP = "sweep"
KIND_CELL = "cell"
KIND_PRETRAIN = "pretrain"
KIND_SEARCH = "search"
KIND_SEARCH_TRIAL = "search_trial"

# --- how it ended ------------------------------------------------------------------------------------
TAG_STATUS = "mmder.status"  # FINISHED only once every metric and artifact is in: a cut-off run never is
FINISHED = "finished"
FAILED = "failed"
TAG_ERROR = "mmder.error"  # the last lines of a failed cell's error; the whole traceback is an artifact
TAG_RESUMED = "mmder.resumed_from_epoch"
TAG_SUPERSEDED = "mmder.superseded"  # why a finished run no longer counts (data/code changed)
TAG_ACCEPTED_STALE = "mmder.accepted_stale"  # why it still counts (--accept-stale)

# --- identity (judged by harness.plan.provenance) and provenance (recorded, not judged) --------------
TAG_DATA_DIGEST = "mmder.data_digest"
TAG_CACHE_VERSION = "mmder.cache_version"
TAG_RESULTS_VERSION = "mmder.results_version"
TAG_VERSION = "mmder.version"
TAG_GIT_COMMIT = "mmder.git_commit"
TAG_DEVICE = "mmder.device"
TAG_DEVICE_KIND = "mmder.device_kind"
TAG_DEVICE_COUNT = "mmder.device_count"
TAG_PRECISION = "mmder.precision"
TAG_WORLD_SIZE = "mmder.world_size"
TAG_TEST_SPEAKERS = "mmder.test_speakers"

# --- grid coordinates, plain names so the UI's columns read well ------------------------------------
TAG_DATASET = "dataset"
TAG_SETTING = "setting"
TAG_FOLD = "fold"
TAG_SEED = "seed"

# --- weights: what a cell started from, what a pre-training exported ---------------------------------
TAG_PRETRAINED = "mmder.pretrained_digest"
TAG_ENCODER = "mmder.encoder_digest"
TAG_ENCODER_PATH = "mmder.encoder_path"
TAG_PRETRAIN_CLIPS = "mmder.pretrain_clips"  # which clips an MAE saw: its fold's training speakers
TAG_PRETRAIN_SPEAKERS = "mmder.pretrain_speakers"
TAG_PRETRAIN_EXCLUDED = "mmder.pretrain_excluded"

# --- the search ----------------------------------------------------------------------------------------
TAG_SEARCH = "mmder.search"  # the search's key: on its run, its trials and every cell it served
TAG_CHOSEN = "mmder.search_chosen"  # JSON of the chosen parameters, on the finished search run
TAG_TRIAL = "mmder.search_trial"  # Tune's trial id
TAG_TRIAL_STATE = "mmder.trial_state"  # running, complete, pruned, interrupted, lost
TAG_PRUNED_AT = "mmder.pruned_at_epoch"  # epochs the scheduler had seen when it stopped a trial
TAG_TRIAL_LOST = "mmder.trial_lost"
TAG_TRAIN_SPEAKERS = "mmder.train_speakers"
TAG_VAL_SPEAKERS = "mmder.val_speakers"
TAG_TEST_EXCLUDED = "mmder.test_speakers_excluded"

# --- params ----------------------------------------------------------------------------------------------
PARAM_CELL_KEY = "cell_key"
PARAM_FOLD_NAME = "fold_name"
PARAM_BASELINE = "baseline."  # baseline.features, .kernel, .C, .speaker_norm
PARAM_CHOSEN = "chosen."  # a search run's chosen.<section>.<field>

# --- artifacts: a cell run's predictions.csv columns -----------------------------------------------------
PROB_PREFIX = "prob_"  # prob_<class>: a clip's class probability (absent where the model gives none)

# --- metrics ---------------------------------------------------------------------------------------------
TEST_WAR, TEST_UAR = "test_war", "test_uar"  # per epoch, on the test speakers (beside test_loss)
# The same per-epoch metrics as runs logged them before they were named test_*: read, never written,
# so finished (and cut-off, then resumed) runs of older sweeps still load. New name -> old name.
LEGACY_EPOCH_NAMES = {TEST_WAR: "war", TEST_UAR: "uar"}
FINAL_WAR, FINAL_UAR = "final_war", "final_uar"  # the cell's result
FINAL_LOSS = "final_loss"  # a pre-training's result
LOSS = "loss"  # a pre-training's per-epoch loss
WALL_SECONDS = "wall_seconds"
SELECTED_EPOCH = "selected_epoch"
OBJECTIVE = "objective"  # what Tune and Optuna see in a search: best validation metric so far
BEST_OBJECTIVE = "best_objective"
CELL_COUNTS = (  # the parent run's, when the sweep ends
    "cells_total",
    "cells_finished",
    "cells_skipped",
    "cells_run",
    "cells_failed",
    "cells_killed",
    "cells_refused",
)
# What planning (a sweep, --dry-run, status) reads of each run: a cell's result and epoch, the parent's
# counts. A cell logs dozens more (per-class recalls, costs), which at 10,000 runs were a third of status.
PLANNED_METRICS = (
    FINAL_WAR,
    FINAL_UAR,
    TEST_WAR,
    TEST_UAR,
    *LEGACY_EPOCH_NAMES.values(),
    "cells_total",
    "cells_finished",
)


# --- the sweep's parent run, written when the sweep ends ----------------------------------------------
TAG_SUMMARISED = "mmder.summarised"  # the results version its summary below was written under
TAG_PARAMS_KEPT = "mmder.params_kept"  # params a later sweep gave another value: MLflow keeps the first
# the experiment's key params on it, by their dotted place in the experiment file (lists as JSON)
SWEEP_PARAMS = (
    "grid.settings",
    "grid.seeds",
    "model.size",
    "model.pretrained",
    "preprocess.image_size",
    "preprocess.spectrogram",
    "preprocess.speaker_norm",
    "training.recipe",
    "training.epochs",
    "training.batch_size",
    "training.lr",
    "training.precision",
    "training.zero_stage",
    "resources.num_workers",
)
PARAM_DATASETS = "datasets"  # label:corpus:protocol of each dataset
PARAM_CELLS = "cells"
PARAM_RESULTS_VERSION = "results_version"
# mean over folds x seeds, its 95 % t interval, and the pooled figure's speaker-bootstrap interval
# (each as the leaderboard gives it: an interval it cannot give, too few values or speakers, is left out)
AGGREGATE_STATS = ("mean", "lo", "hi", "spk_lo", "spk_hi")
AGGREGATE_METRICS = ("war", "uar")


def aggregate_metric(metric: str, stat: str, dataset: str, setting: str) -> str:
    """The parent run's metric of one (dataset, setting): ``war_mean/syn/FSLF``; any character MLflow
    does not take in a key (letters, digits, ``_-. ``) becomes ``_``."""
    parts = [f"{metric}_{stat}", dataset, setting]
    clean = ["".join(c if c.isascii() and (c.isalnum() or c in "_-. ") else "_" for c in p) for p in parts]
    return "/".join(c if c.strip(".") else "_" for c in clean)  # no empty, "." or ".." segment


def epoch_metric(values: dict[str, T], name: str) -> T | None:
    """A per-epoch metric from a run's metrics (or steps), under its name or, in older runs, the old one."""
    if name in values:
        return values[name]
    return values.get(LEGACY_EPOCH_NAMES.get(name, name))


def tag_filter(tag: str, value: str) -> str:
    """An MLflow search filter on one tag (backquoted: our tag names hold dots)."""
    return f"tags.`{tag}` = '{value}'"
