"""MAE pre-training through the real stack, then a grid whose cells start from its encoder."""

from __future__ import annotations

import pytest
from sweep_helpers import client_for, mmder, tiny_experiment

pytestmark = pytest.mark.slow


def test_pretraining_lowers_its_loss_and_cells_start_from_exactly_its_encoder(tmp_path):
    exp = tiny_experiment(
        tmp_path,
        "mae",
        grid={"settings": ["FSLF"], "seeds": [0]},
        model={"size": "micro", "pretrained": "mae"},
        pretrain={"epochs": 4, "batch_size": 4, "lr": 3e-3, "warmup_epochs": 0, "mask_ratio": 0.75},
        resources={"num_workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1, "max_failures": 1},
    )
    out = tmp_path / "out"
    missing = mmder("sweep", str(exp), "--output", str(out))
    assert missing.returncode == 2 and "mmder pretrain" in missing.stderr

    first = mmder("pretrain", str(exp), "--output", str(out))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    client = client_for(out)
    exp_id = client.get_experiment_by_name("mae").experiment_id
    (pre,) = client.search_runs([exp_id], filter_string="tags.`mmder.kind` = 'pretrain'")
    history = sorted(client.get_metric_history(pre.info.run_id, "loss"), key=lambda m: m.step)
    losses = [m.value for m in history]
    assert len(losses) == 4 and losses[-1] < losses[0], losses

    again = mmder("pretrain", str(exp), "--output", str(out))
    assert "1 already finished, 0 to run" in again.stdout

    # cut off after its last checkpoint, before the run was ended: the rerun resumes the same run,
    # trains nothing, exports the same encoder and ends it with the last epoch's loss (not NaN)
    client.delete_tag(pre.info.run_id, "mmder.status")
    client.set_terminated(pre.info.run_id, "KILLED")
    resumed = mmder("pretrain", str(exp), "--output", str(out))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert "loss nan" not in resumed.stdout, resumed.stdout
    after = client.get_run(pre.info.run_id)
    assert after.data.tags["mmder.status"] == "finished"
    assert after.data.metrics["final_loss"] == pytest.approx(losses[-1])
    assert after.data.tags["mmder.encoder_digest"] == pre.data.tags["mmder.encoder_digest"]
    assert len(client.get_metric_history(pre.info.run_id, "loss")) == 4

    sweep = mmder("sweep", str(exp), "--output", str(out))
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-5000:]
    (cell,) = client.search_runs([exp_id], filter_string="tags.`mmder.kind` = 'cell'")
    assert cell.data.tags["mmder.status"] == "finished"
    assert cell.data.tags["mmder.pretrained_digest"] == pre.data.tags["mmder.encoder_digest"]
