"""A Train run folder left behind by a killed driver is mended before the cell runs again."""

from __future__ import annotations

import json
from pathlib import Path

from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import _CheckpointManagerState

from harness.trial import SNAPSHOT, remove_stray_checkpoints, repair_snapshot


def checkpoint(run_dir: Path, name: str, *, ranks: int, complete: bool = True) -> Path:
    path = run_dir / name
    (path / "state").mkdir(parents=True)
    (path / "state" / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    for r in range(ranks):
        (path / "state" / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt").write_bytes(b"shard")
    if complete:
        (path / "latest").write_text("state")
    return path


def test_a_torn_snapshot_is_rebuilt_from_the_newest_complete_checkpoint(tmp_path):
    checkpoint(tmp_path, "checkpoint_2026-11-24_01-00-00.000001", ranks=2)
    good = checkpoint(tmp_path, "checkpoint_2026-11-24_01-00-05.000001", ranks=2)
    torn = checkpoint(tmp_path, "checkpoint_2026-11-24_01-00-09.000001", ranks=2, complete=False)
    (tmp_path / SNAPSHOT).write_text("")  # killed between truncate and write

    assert good.name in repair_snapshot(tmp_path, world_size=2)
    state = _CheckpointManagerState.parse_obj(json.loads((tmp_path / SNAPSHOT).read_text()))
    assert state.latest_checkpoint_result.checkpoint_dir_name == good.name, "Ray reads it back"
    removed = remove_stray_checkpoints(tmp_path)
    assert torn in removed and good.exists()


def test_a_sound_snapshot_is_left_alone_and_one_without_checkpoints_is_dropped(tmp_path):
    (tmp_path / SNAPSHOT).write_text('{"checkpoint_results": []}')
    assert repair_snapshot(tmp_path, world_size=1) is None
    assert (tmp_path / SNAPSHOT).read_text() == '{"checkpoint_results": []}'

    checkpoint(tmp_path, "checkpoint_2026-11-24_01-00-00.000001", ranks=1)  # one shard short of 2 ranks
    (tmp_path / SNAPSHOT).write_text('{"ray_ver')
    assert "starts over" in repair_snapshot(tmp_path, world_size=2)
    assert not (tmp_path / SNAPSHOT).exists()
