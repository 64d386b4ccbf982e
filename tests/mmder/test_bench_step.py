"""`mmder bench step` / `bench suite` / `bench compile-check`: the figures they print are computed right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from mmder.bench.step import compare_compiled, forward_flops, sdpa_kernels
from mmder.bench.suite import Case, in_fresh_process, next_batch, run_suite, summary_table
from mmder.models.classifier import resolve_size
from mmder.train.engine import engine_config


def test_vit_large_step_flops_are_the_issue_s_3_6_tflop_per_clip():
    # by hand, d 1024, N = 8 x 14 x 14 = 1568 tokens, MLP 4096, 24 blocks:
    # per block 2Nd(3d) + 4N^2 d + 2Nd^2 + 4Nd(4d) = 9.865e9 + 1.0070e10 + 3.288e9 + 2.6307e10 = 4.9530e10
    # patch embedding 2N(3 x 2 x 16 x 16)d = 4.932e9; one forward 24 x 4.9530e10 + 4.932e9 = 1.1936e12
    fwd = forward_flops(resolve_size("large"), num_frames=16, image_size=224)
    assert fwd == pytest.approx(1.1936e12, rel=1e-3)
    assert 3 * fwd == pytest.approx(3.58e12, rel=1e-2)  # "about 3.6 TFLOP" for forward + backward


def test_the_attention_kernel_is_read_off_the_operator_that_ran():
    q = k = v = torch.randn(2, 4, 16, 8)
    assert sdpa_kernels(lambda: F.scaled_dot_product_attention(q, k, v)) == "flash (CPU)"
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_kernels(lambda: F.scaled_dot_product_attention(q, k, v)) == "math"
    assert sdpa_kernels(lambda: q @ k.transpose(-1, -2)) == "none seen"


def test_the_next_batch_fills_memory_to_the_target_along_the_measured_line():
    # 20 GiB at 8 clips, 30 at 16: 1.25 GiB per clip; 80 % of 140 is 112 GiB -> 16 + 82 / 1.25 = 81.6
    assert next_batch([(8, 20.0), (16, 30.0)], 140.0, 0.8) == 80
    assert next_batch([(8, 20.0), (16, 30.0)], 140.0, 0.8, multiple=1) == 81
    assert next_batch([(8, 100.0), (16, 115.0)], 140.0, 0.8) == 0, "already past the target"
    assert next_batch([(8, 20.0), (16, 20.0)], 140.0, 0.8) == 0, "memory that does not grow gives no target"


def test_deepspeed_s_throughput_timer_is_off_it_synchronises_the_device_twice_a_step():
    config = engine_config(batch_size=2, zero_stage=2, precision="bf16", grad_clip=1.0)
    assert config["timers"] == {"throughput": {"enabled": False}}


@pytest.mark.slow
def test_the_suite_measures_each_case_records_it_as_it_goes_and_skips_past_the_deadline(tmp_path: Path):
    out = tmp_path / "suite.jsonl"
    plan = [Case("micro", 2, sweep=True, start_batch=2), Case("micro", 3)]
    records = run_suite(plan, image_size=32, num_frames=4, steps=2, warmup=1, output=out, echo=lambda s: None)
    steps = [r for r in records if r["kind"] == "step"]
    assert [(r["case"], r["batch_size"]) for r in steps[:2]] == [("micro-z2", 2), ("micro-z2", 4)]
    best = max(steps[:2], key=lambda r: r["clips_per_s"])["batch_size"]
    assert (steps[2]["case"], steps[2]["batch_size"]) == ("micro-z3", best), "ZeRO-3 runs at ZeRO-2's best"
    assert all(r["sdpa_kernel"] == "flash (CPU)" and r["clips_per_s"] > 0 for r in steps)
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    table = summary_table(records)
    assert table.count("| micro-z") == 3

    late = run_suite(plan, image_size=32, num_frames=4, deadline_s=0.0, echo=lambda s: None)
    assert [r["kind"] for r in late] == ["skipped", "skipped", "skipped", "done"]


@pytest.mark.slow
def test_a_compiled_step_computes_what_the_eager_step_computes():
    # in a process of its own, as the suite measures: no compiled graph of an earlier test around
    report = in_fresh_process(
        compare_compiled, size="micro", batch_size=4, num_frames=4, image_size=32, bf16=False, steps=2
    )
    eager, compiled = report["eager_losses"], report["compiled_losses"]
    assert compiled[0] == pytest.approx(eager[0], rel=1e-5), "same weights, same batch: the same forward"
    # Inductor reorders fp32 reductions, and Adam's first steps amplify the last bits of small
    # gradients: in the full suite the second loss once differed by 8e-5 (alone: 0), and one small
    # tensor's update by 100 %. A compiled backward that missed gradients is far outside these bounds.
    assert compiled == pytest.approx(eager, rel=1e-3)
    assert report["compiled_grad_norms"] == pytest.approx(report["eager_grad_norms"], rel=1e-3)
    assert report["update_rel_diff"] < 0.05
    assert report["params_compared"] > 20
