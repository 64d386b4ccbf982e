"""Starting (or joining) Ray for a sweep, with Ray's own chatter kept out of the user's terminal.

Ray is imported here only after its environment is set: it reads ``RAY_AUTH_MODE`` on import, and the
raylet it starts reads the ``RAY_*`` knobs from this process's environment.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness.experiment.config import ExperimentConfig
from mmder.timing import mark

TRIAL_CPUS = 0.01  # the Tune trial only drives its Train job; the workers get the real CPUs
# Python processes a cell starts besides its Train workers: Tune's trial actor, Train's controller and
# the actors they start on the way (counted from the raylet's log of a quickstart wave).
PROCESSES_PER_CELL = 4
_FORWARDED_ENV = {
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
}
RAY_LOG = "ray-driver.log"


def init_ray(spec: ExperimentConfig, address: str | None, verbose: bool, log_dir: Path) -> None:
    """Join the cluster at ``address`` (or the experiment's), or start a local Ray sized for the grid."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    address = address or spec.ray.address
    res = spec.resources
    if address:
        ray_env()
    else:
        local_ray_env(res.max_concurrent_trials, res.num_workers)
    mark("ray_init_start")
    sweep_sigterm = signal.getsignal(signal.SIGTERM)
    import ray

    if address:
        # Workers on other nodes do not see this shell's environment: the tracking server's credentials
        # and mmder's knobs travel in the job's runtime environment (never in params, tags or files).
        forwarded = {k: v for k, v in os.environ.items() if k in _FORWARDED_ENV or k.startswith("MMDER_")}
        runtime_env = {"env_vars": forwarded} if forwarded else None
        ray.init(address=address, log_to_driver=verbose, runtime_env=runtime_env)
    else:
        per_cell = res.num_workers * res.cpus_per_worker + TRIAL_CPUS
        # Logical CPUs are scheduling tokens: enough for the concurrency asked for (each trial's tiny
        # driver share included), or trials wait on each other, and never fewer than one cell needs.
        cpus = max(os.cpu_count() or 1, math.ceil(per_cell * res.max_concurrent_trials))
        # The dashboard stays on: Train V2's placement-group cleaner asks its state API about the
        # controller; without it leaked worker groups keep their CPUs and later trials wait forever.
        # That state API finds "the" local cluster by scanning the machine, which fails when another
        # user's Ray runs there too: every process of this job is pinned to its own cluster first.
        start_with_retries(
            lambda: ray.init(
                num_cpus=cpus,
                log_to_driver=verbose,
                logging_level="WARNING",
                configure_logging=True,
                runtime_env={"worker_process_setup_hook": "harness.driver.ray_setup.pin_ray_address"},
            )
        )
    mark("ray_init_end")
    _restore_sigterm_handler(sweep_sigterm)
    if not verbose:
        ray_logs_to_file(log_dir / RAY_LOG)


def ray_session_logs() -> Path:
    """Where the newest local Ray session keeps its logs (Ray's default temporary folder)."""
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "session_latest" / "logs"


def start_with_retries(start: Callable[[], object], tries: int = 3, pause_s: float = 5.0) -> None:
    """Start a local Ray; when it fails (under load: "The current node timed out during startup"), say
    so in one line with its logs' folder, take down what half-started, and try again after a longer
    pause each time, before giving up with the last error.

    Ray's own wait for its raylet is fixed (30 s in Ray 2.x) and cannot be lengthened from here: the
    later tries, after pauses, are what give a loaded machine the longer time. Two were not always
    enough: at a load average of 41 on 2 cores (a 3-trial sweep beside a test drill) both timed out.
    """
    import ray

    for attempt in range(1, tries + 1):
        try:
            start()
            return
        except Exception as err:  # noqa: BLE001 - Ray raises bare Exception for a start-up timeout
            ray.shutdown()
            first = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            if attempt == tries:
                raise RuntimeError(
                    f"Ray did not start in {tries} tries (last: {first}); its logs: {ray_session_logs()}"
                ) from err
            print(
                f"mmder: Ray did not start ({first}); logs: {ray_session_logs()}; "
                f"trying again ({attempt + 1} of {tries})",
                flush=True,
            )
        time.sleep(pause_s * attempt)


def ray_env() -> None:
    """Defaults for any Ray a sweep starts or joins; set before ``import ray`` (an exported value wins)."""
    # `uv run` would otherwise make Ray ship the whole project folder, .venv included, to every worker.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0, Tune prints nothing of its own
    # Tune's CSV/JSON/TensorBoard result files: nothing reads them (results are in MLflow), and writing
    # them ran in the driver's loop on every result.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def local_ray_env(concurrent_cells: int, workers_per_cell: int) -> None:
    """:func:`ray_env` plus the defaults of a Ray started on this machine (a sweep's, bench schedule's)."""
    ray_env()
    # No spot node can be pre-empted on one machine: skip the watcher actor each Train run would start.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Train's Prometheus metrics feed a dashboard nobody watches on one machine; each run's
    # controller and workers otherwise keep pushing them.
    os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
    # Train's controller polls its workers every 2 s: a worker's report waits for that poll (its queue
    # holds one), and so does the end of a run; a lane reports twice per cell. At 0.5 s a micro cell
    # still waited ~0.5 s of its ~1 s in a lane for polls; 10x a second costs a few actor calls a
    # second per lane and leaves ~0.1 s.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    # The raylet warns ("N PYTHON worker processes have been started ...") into the driver's terminal
    # once more than 4x its start-up concurrency of processes exist, which it sets to the machine's
    # cores: 2 here, while a wave of 4 cells is 16 processes by design. Sized for the grid instead.
    processes = concurrent_cells * (workers_per_cell + PROCESSES_PER_CELL)
    os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(max(2, processes)))


def _restore_sigterm_handler(handler: object) -> None:
    """Put the sweep's SIGTERM handler back after ``ray.init`` replaced it.

    ``ray.init`` installs its own SIGTERM handler in the driver (it exits at once, leaving the cells'
    runs RUNNING and the exit code Ray's): the sweep's handler ends the cells and the parent run
    KILLED and exits 143, so it is the one in force while the grid runs.
    """
    if callable(handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def pin_ray_address() -> None:
    """Worker start-up hook: point this process's address lookups at the cluster it belongs to."""
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def ray_logs_to_file(path: Path) -> None:
    """Ray's and Tune's driver-side warnings go to ``path``; only errors still reach the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ray_logger = logging.getLogger("ray")
    for handler in ray_logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)
    if not any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in ray_logger.handlers):
        ray_logger.addHandler(to_file)
    else:
        to_file.close()
