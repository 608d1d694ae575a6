#!/usr/bin/env bash
# SFT from a Hugging Face checkpoint on several nodes: run this same script on every node (or let
# scripts/launch/sft_slurm.sbatch do it); torchrun's c10d rendezvous at MASTER_ADDR:MASTER_PORT joins them.
#   NNODES=32 NODE_RANK=0 MASTER_ADDR=node001 CKPT=/shared/Falcon-H1R-7B DATA=/shared/sft.jsonl \
#     OUT=/shared/runs/sft bash scripts/launch/sft_multi_node.sh
# The checkpoint, the data and OUT must be on a filesystem every node sees (ZeRO shards are written per rank).
# Variables as in sft_one_node.sh, plus NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (29500), GPUS_PER_NODE (8).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${CKPT:?set CKPT}" "${NNODES:?set NNODES}" "${MASTER_ADDR:?set MASTER_ADDR}"
OUT=${OUT:-runs/sft_zero}
mkdir -p "$OUT"
exec torchrun --nnodes "$NNODES" --node_rank "${NODE_RANK:-0}" --nproc_per_node "${GPUS_PER_NODE:-8}" \
  --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" --rdzv_id "${RDZV_ID:-falcon-h1r-sft}" \
  scripts/sft_ddp.py worker --preset "${PRESET:-small}" --from-checkpoint "$CKPT" ${DATA:+--data "$DATA"} \
  --recipe paper --engine deepspeed --zero "${ZERO:-3}" --checkpoint-dir "$OUT/checkpoints" \
  --save-every "${SAVE_EVERY:-50}" --save-model "$OUT/final" --out "$OUT/run.json" ${EXTRA:-}
