#!/usr/bin/env bash
# The hybrid-kernel measurements on one GPU (an H200 in about 8 minutes), from the repository root after
# `. scripts/gpu_prelude.sh` (wheels: scripts/gpu_setup.sh with CAUSAL_CONV1D_WHEEL set, so that causal-conv1d,
# mamba-ssm's Triton kernels and liger-kernel are there; the prelude prints which kernels are active):
#   OUT=/some/folder bash scripts/gpu_kernels_bench.sh          # the core: training, Fig. 7, decode, checks
#   OUT=/some/folder bash scripts/gpu_kernels_bench.sh fig8     # the Fig. 8 grid beside it (another ~9 minutes)
# Each step has its own time limit and log (<step>.log); a step that fails or runs out of time is reported and the
# next one runs. Records are written under $RES (default /tmp/falcon_h1r_kernels: 02_sft/ and 04_throughput/, the
# files results/small/ keeps) and, after every step, packed into one file, $OUT/kernels_bench[_fig8].tar.gz
# (a device call returns few files).
set -uo pipefail
: "${OUT:?set OUT to the folder the packed records go to}"
RES=${RES:-/tmp/falcon_h1r_kernels}
mkdir -p "$OUT" "$RES/02_sft" "$RES/04_throughput"
cd "$(dirname "$0")/.."
failed=0
pack="$OUT/kernels_bench${1:+_$1}.tar.gz"

step() {  # step NAME SECONDS COMMAND...: run with a hard limit, log, say how it ended
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" > "$RES/$name.log" 2>&1
  local rc=$?
  [ "$rc" -eq 0 ] || failed=1
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  tail -n 2 "$RES/$name.log"
  tar -czf "$pack" -C "$RES" . || { echo "== packing $RES into $pack failed"; failed=1; }
}

if [ "${1:-core}" = "fig8" ]; then
  # both architectures, both settings, the recipe's batch grid (the 04 claims' bs2/8/16 and max-batch ratios);
  # the core run's transformers comparison and state variants are not repeated
  step throughput_fig8 560 python3 bench/throughput.py --out "$RES/04_throughput" --tag fig8 --no-hf --no-variants \
    --budget-s 520
  exit $failed
fi

# 1. training MFU at the 1B class (hybrid and Qwen3, the trainers' kernels) and Fig. 7 (the hybrid, Liger off)
step train_throughput 170 python3 bench/train_throughput.py --fig7 --out "$RES/02_sft" --budget-s 120
# 2. decode: Falcon-H1R-7B 8K->16K at batch 32 and at its largest batch, float32 and bfloat16 SSM states, and the
#    engine against transformers' generate at batch 128 (the grid 32,128: 128 does not fit 8K->16K on one GPU, so
#    the largest batch that does is measured, and recorded as such)
step throughput 200 python3 bench/throughput.py --out "$RES/04_throughput" --models Falcon-H1R-7B \
  --settings "8K->16K" --batch-sizes 32,128 --budget-s 180
# 3. where a step's time goes: the state update alone (ours, tuned, against mamba-ssm's), the profile, the paths
step decode_profile 65 python3 bench/decode_profile.py --out "$RES/04_throughput" --batches 64 --contexts 16384 \
  --paths triton:compiled:triton:float32,triton:compiled:mamba_ssm:float32,triton:compiled:triton:bfloat16 \
  --budget-s 50
# 4. our state-update kernel against its twin, and the bfloat16 state against float32 on a 7B slice
step engine_check 45 python3 bench/engine_check.py --out "$RES/04_throughput" --budget-s 38 --only \
  ssm_kernel_vs_reference ssm_kernel_bf16_state_vs_reference ssm_state_bf16_vs_fp32_falcon_h1r_7b_2layer_bf16 \
  mamba_ssm_kernel_vs_reference
exit $failed
