"""A cell's Tune trial starts a fresh Train run per attempt and tidies the cell's folder around it."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from test_resume import SNAPSHOT, fake_checkpoint

import harness.worker.trial as trial


def job(storage: Path, key: str, kind: str = "train") -> dict[str, Any]:
    resources = {"num_workers": 1, "cpus_per_worker": 1, "use_gpu": False, "max_failures": 2}
    return {
        trial.GRID_PARAM: {
            "cell": {"key": key, "kind": kind, "training": {} if kind == "train" else None},
            "resources": resources,
            "storage_path": str(storage),
        }
    }


class FakeTrainer:
    """Stands in for CellTrainer: records how it was built; ``fit`` leaves what a run leaves."""

    built: list[FakeTrainer] = []

    def __init__(self, fn, *, train_loop_config, scaling_config, run_config) -> None:
        self.fn, self.config, self.scaling, self.run = fn, train_loop_config, scaling_config, run_config
        FakeTrainer.built.append(self)

    def fit(self) -> types.SimpleNamespace:
        run_dir = Path(self.run.storage_path) / self.run.name
        self.existing_before_fit = sorted(p.name for p in run_dir.parent.iterdir())
        fake_checkpoint(run_dir / "checkpoint_2026-11-24_02-00-00.000001", epoch=2)
        (run_dir / "checkpoint_2026-11-24_02-00-09.000001").mkdir()  # a stray cut off by a kill
        (run_dir / SNAPSHOT).write_text("{}")
        return types.SimpleNamespace(return_value={"war": 50.0, "done": True, "run_id": "r", "x": None})


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """No Ray run, and a stand-in for harness.worker.train_loop (it imports the whole stack)."""
    worker = types.ModuleType("harness.worker.train_loop")
    worker.train_cell = lambda config: None  # type: ignore[attr-defined]
    worker.pretrain_cell = lambda config: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "harness.worker.train_loop", worker)
    monkeypatch.setattr(trial, "CellTrainer", FakeTrainer)
    FakeTrainer.built = []
    return worker


def test_each_start_is_a_fresh_attempt_and_the_old_ones_go_once_a_newer_checkpoint_exists(tmp_path, fakes):
    storage, key = tmp_path / "runs", "ravdess-FSLF-f0-s0"
    cell = storage / key
    old = fake_checkpoint(cell / "attempt-000" / "checkpoint_2026-11-24_01-00-00.000001", epoch=1)
    stray = cell / "attempt-000" / "checkpoint_2026-11-24_01-00-05.000001"
    stray.mkdir()
    (cell / "attempt-000" / SNAPSHOT).write_text("")  # torn by a killed driver: nobody reads it again
    (cell / "chaos-done").touch()  # worker.py's fault-injection marker lives in the cell's folder

    out = trial.run_cell(job(storage, key))
    assert out == {"final_war": 50.0}
    (first,) = FakeTrainer.built
    assert (first.run.storage_path, first.run.name) == (str(cell), "attempt-001")
    assert first.run.failure_config.max_failures == 2
    assert first.fn is fakes.train_cell
    assert not first.run.callbacks, "a grid cell forwards no epoch to Tune (no queue actors per cell)"
    assert first.existing_before_fit == ["attempt-000", "attempt-001", "chaos-done"], "the stray went"
    assert not stray.exists() and not old.exists(), "attempt-001 now holds the newest checkpoint"
    assert sorted(p.name for p in cell.iterdir()) == ["attempt-001", "chaos-done"]
    assert [p.name for p in (cell / "attempt-001").glob("checkpoint_*") if p.is_dir()] == [
        "checkpoint_2026-11-24_02-00-00.000001"
    ], "the run's own stray is gone once it finished"

    trial.run_cell(job(storage, key, kind="pretrain"))
    second = FakeTrainer.built[-1]
    assert second.run.name == "attempt-002" and second.fn is fakes.pretrain_cell


def test_a_remote_storage_runs_under_one_name_and_touches_no_disk(tmp_path, fakes, monkeypatch):
    monkeypatch.setattr(FakeTrainer, "fit", lambda self: types.SimpleNamespace(return_value=None))
    monkeypatch.chdir(tmp_path)
    config = job(tmp_path, "k")
    config[trial.GRID_PARAM]["storage_path"] = "s3://bucket/runs"
    for _ in range(2):  # Ray resumes the same run from its own snapshot there
        assert trial.run_cell(config) == {}
        run = FakeTrainer.built[-1].run
        assert (run.storage_path, run.name) == ("s3://bucket/runs/k", "attempt-000")
    assert list(tmp_path.iterdir()) == []


def test_a_cell_trainer_starts_no_ray_data_actor_without_datasets(tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def build(cls: type) -> list[str]:
        trainer = cls(
            lambda config: None,
            scaling_config=ScalingConfig(num_workers=1),
            run_config=RunConfig(name="r", storage_path=str(tmp_path)),
        )
        return [type(cb).__name__ for cb in trainer._create_default_callbacks()]

    assert "DatasetsCallback" in build(TorchTrainer)  # Train's own: a DatasetManager actor per run
    kept = build(trial.CellTrainer)
    assert "DatasetsCallback" not in kept and "PlacementGroupCleanerCallback" in kept


def test_keep_checkpoints_none_leaves_a_finished_cell_no_checkpoint(tmp_path, fakes):
    storage, key = tmp_path / "runs", "ravdess-FSLF-f0-s0"
    config = job(storage, key)
    config[trial.GRID_PARAM]["resources"]["keep_checkpoints"] = "none"
    assert trial.run_cell(config) == {"final_war": 50.0}
    assert not list((storage / key).glob("attempt-*")), "the finished cell's checkpoints are gone"
    kept = job(storage, "other")  # the default keeps the newest
    trial.run_cell(kept)
    assert list((storage / "other").glob("attempt-*/checkpoint_*"))
