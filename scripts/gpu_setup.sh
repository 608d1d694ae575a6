#!/usr/bin/env bash
# Run HERE (the CPU machine with network to PyPI), once: fill a git-ignored folder (default .whl/) with the
# pure-Python wheels that the lent GPU machine lacks, so a device run can install them offline with
# scripts/gpu_prelude.sh.
#   bash scripts/gpu_setup.sh [DEST] [PYTHON]
#   EXTRA_WHEELS="papermill==2.7.0 nbclient==0.11.0" bash scripts/gpu_setup.sh   # more pure wheels, same way
#   CAUSAL_CONV1D_WHEEL=path/to/causal_conv1d-...whl bash scripts/gpu_setup.sh   # also carry a causal-conv1d
#                                                   wheel built for the GPU image's torch (see README)
# PYTHON must have torch installed (any build); it is used only to build the mamba-ssm wheel.
# Why each wheel: the GPU image has torch 2.11+cu130, triton 3.6 and transformers 5.17, whose Falcon-H1 path
# is wrong (cached decoding disagrees with a full forward), so transformers 5.23 is carried; mamba-ssm gives the
# Triton kernels (chunked scan for prefill, selective-state update for decode); einops is what mamba-ssm imports;
# liger-kernel (pure Python, Triton) gives the fused RMSNorm/RoPE/cross-entropy of falcon_h1r.kernels.apply_liger;
# math-verify, deepspeed, hjson and pydantic are what the rest of the package imports there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
py=${2:-.venv/bin/python}
mkdir -p "$dest"
grep -qxF "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude
plat=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
"$py" -m pip download -q --no-deps "${plat[@]}" -d "$dest" \
  transformers==5.23.0 einops==0.8.2 liger-kernel==0.8.5 math-verify==0.9.0 latex2sympy2_extended==1.11.0 \
  antlr4-python3-runtime==4.13.2 hjson pydantic pydantic-core annotated-types typing-inspection ${EXTRA_WHEELS:-}
# deepspeed and mamba-ssm ship only source: build pure wheels (no CUDA code is compiled here).
[ -n "$(ls "$dest"/deepspeed-0.19.8-*.whl 2>/dev/null)" ] || "$py" -m pip wheel -q --no-deps -w "$dest" deepspeed==0.19.8
[ -n "$(ls "$dest"/mamba_ssm-2.3.2.post1-*.whl 2>/dev/null)" ] || \
  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
  "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$dest" mamba-ssm==2.3.2.post1
# mamba_ssm imports the compiled Mamba-1 scan at import time; Falcon-H1 (Mamba-2) needs only its Triton
# kernels, so an empty stand-in module lets the import succeed.
echo "# stand-in for the compiled Mamba-1 selective-scan extension (unused by Mamba-2)" > "$dest/selective_scan_cuda.py"
if [ -n "${CAUSAL_CONV1D_WHEEL:-}" ]; then
  cp "$CAUSAL_CONV1D_WHEEL" "$dest"/ || { echo "gpu_setup: cannot copy CAUSAL_CONV1D_WHEEL=$CAUSAL_CONV1D_WHEEL" >&2; exit 1; }
fi
ls -la "$dest"; du -sh "$dest"
