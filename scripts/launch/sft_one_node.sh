#!/usr/bin/env bash
# SFT from a Hugging Face checkpoint on one node: torchrun, one process per GPU, DeepSpeed ZeRO-3, the paper's
# Table 1 recipe (recipes/sft/paper_scale.yaml), checkpoints every SAVE_EVERY steps; rerunning resumes exactly.
#   CKPT=/ckpt/Falcon-H1R-7B DATA=sft.jsonl OUT=runs/sft bash scripts/launch/sft_one_node.sh
# Variables: CKPT (required: a local Hugging Face directory), DATA (JSON lines of question/reasoning/final[/weight];
# default: the preset's teacher traces), OUT (run folder), GPUS (default: all visible), ZERO (3 or 2),
# SAVE_EVERY (50), PRESET (small: only for the default data and tokenizer), EXTRA (more worker flags, e.g.
# "--batch-size 64 --pack-len 8192 --steps 100").
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${CKPT:?set CKPT to a local Hugging Face checkpoint directory}"
OUT=${OUT:-runs/sft_zero}
GPUS=${GPUS:-$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")}
mkdir -p "$OUT"
exec torchrun --standalone --nproc_per_node "$GPUS" scripts/sft_ddp.py worker \
  --preset "${PRESET:-small}" --from-checkpoint "$CKPT" ${DATA:+--data "$DATA"} --recipe paper \
  --engine deepspeed --zero "${ZERO:-3}" --checkpoint-dir "$OUT/checkpoints" --save-every "${SAVE_EVERY:-50}" \
  --save-model "$OUT/final" --out "$OUT/run.json" ${EXTRA:-}
