#!/usr/bin/env bash
# One GPU machine, one call, no Ray: the bf16 training smoke of one cell, then the step-benchmark plan.
# What it writes under $OUT is what docs/benchmarks.md reports.
#
#   PYTHONPATH=/path/with/deepspeed:/path/with/pydantic OUT=bench-out SMOKE_CACHE=... bash cluster/gpu-bench.sh
#
# SMOKE_CACHE: the prepared cache of experiments/gpu-smoke.yaml (`mmder bench fit experiments/gpu-smoke.yaml
# --setting FSLF` prepares it where PyAV is installed; 21 MB). DEADLINE: seconds for the plan (default 400).
set -uo pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
t0=$(date +%s)
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  python3 - <<'PY'
import platform, torch, deepspeed, pydantic, timm
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}), deepspeed {deepspeed.__version__}, timm {timm.__version__}, "
      f"pydantic {pydantic.__version__}")
print("flash SDPA available:", torch.backends.cuda.flash_sdp_enabled(), "| device:", torch.cuda.get_device_name())
PY
} 2>&1 | tee "$OUT/versions.txt"

if [ -n "${SMOKE_CACHE:-}" ]; then
  python3 -m harness.cli.main bench fit experiments/gpu-smoke.yaml --setting FSLF --cache "$SMOKE_CACHE" \
    --workdir /tmp/bench-fit > "$OUT/fit.log" 2>&1
  echo "bench fit exit $?"; grep -v "\[INFO\]\|\[WARNING\]" "$OUT/fit.log" | tail -12
  cp /tmp/bench-fit/figures.json "$OUT/fit.json" 2>/dev/null
fi
echo "--- $(( $(date +%s) - t0 )) s: step plan"
python3 -m harness.cli.main bench suite --plan gpu --jsonl "$OUT/suite.jsonl" --deadline "${DEADLINE:-400}" \
  > "$OUT/suite.log" 2>&1
echo "bench suite exit $?"
grep -v "\[INFO\]\|\[WARNING\]" "$OUT/suite.log" | grep -v "^\s*$" | tail -60
echo "--- $(( $(date +%s) - t0 )) s in all"
