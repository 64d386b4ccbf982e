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

    sweep = mmder("sweep", str(exp), "--output", str(out))
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-5000:]
    (cell,) = client.search_runs([exp_id], filter_string="tags.`mmder.kind` = 'cell'")
    assert cell.data.tags["mmder.status"] == "finished"
    assert cell.data.tags["mmder.pretrained_digest"] == pre.data.tags["mmder.encoder_digest"]
