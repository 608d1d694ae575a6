#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment with the pinned stack.
# Idempotent: does nothing when .venv already matches pyproject.toml, this script and the mode asked for.
#   VENV=path          where to put it (default .venv)
#   PYTHON=python3     the interpreter that creates it
#   TORCH_INDEX_URL=u  where torch comes from (e.g. https://download.pytorch.org/whl/cpu on a laptop without
#                      CUDA; unset: pip's configured index)
#   GPU=1              also install the hybrid kernels against the installed torch: the `gpu` extra of
#                      pyproject.toml (mamba-ssm, causal-conv1d, liger-kernel), built without build isolation
#                      so that their setup.py sees this torch; then print which kernels are active.
#                      Sticky: a venv made with GPU=1 stays a GPU venv when it is refreshed.
# Every step that fails stops the script and names itself.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.falcon_h1r_stamp"
want=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)
old=$(cat "$stamp" 2>/dev/null || true)
mode=cpu
if [ -n "${GPU:-}" ] && [ "${GPU}" != 0 ]; then mode=gpu; fi
if [ "$mode" = cpu ] && [ "${old#* }" = gpu ]; then mode=gpu; fi   # keep a GPU venv a GPU venv
if [ -x "$VENV/bin/python" ] && { [ "$old" = "$want $mode" ] || [ "$old" = "$want gpu" ]; }; then
  exit 0
fi

# step NAME COMMAND...: run one step; on failure say which step failed and stop.
step() {
  local name=$1
  shift
  echo "[setup] $name" >&2
  # sed only drops one harmless pip notice; with pipefail the command's own exit status decides.
  if ! "$@" 2>&1 | sed '/^WARNING: Location .* is ignored/d' >&2; then
    echo "[setup] FAILED at step '$name' (command: $*); see the messages above" >&2
    exit 1
  fi
}
pip() { "$VENV/bin/python" -m pip -q --disable-pip-version-check "$@"; }
# the pins live in pyproject.toml only
pin() { grep -oE "\"$1==[^\";]+" pyproject.toml | head -1 | tr -d '"'; }
torch_pin=$(pin torch)
deepspeed_pin=$(pin deepspeed)
[ -n "$torch_pin" ] && [ -n "$deepspeed_pin" ] || { echo "[setup] pyproject.toml pins no torch or deepspeed" >&2; exit 1; }

echo "[setup] creating $VENV with the pinned stack ($mode; first run: a few minutes)" >&2
[ -x "$VENV/bin/python" ] || step "create the virtual environment with $PY" "$PY" -m venv "$VENV"
step "upgrade pip, setuptools and wheel" pip install --upgrade "pip>=24" "setuptools>=77" wheel
# torch first, so no other package pulls a CUDA build onto a CPU machine.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  step "install $torch_pin from $TORCH_INDEX_URL" pip install "$torch_pin" --index-url "$TORCH_INDEX_URL"
else
  step "install $torch_pin" pip install "$torch_pin"
fi
step "check the installed torch is ${torch_pin#torch==}" "$VENV/bin/python" -W ignore::UserWarning -c \
  "import sys, torch; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '${torch_pin#torch==}' else f'torch {torch.__version__} is installed, not ${torch_pin#torch==}; set TORCH_INDEX_URL (see README)')"
# deepspeed ships only a source archive whose setup.py imports torch: build it against ours.
step "install $deepspeed_pin (built against this torch)" pip install --no-build-isolation "$deepspeed_pin"
step "install the project with its dev extra" pip install -e ".[dev]"
step "check the project's imports" "$VENV/bin/python" -c "import falcon_h1r, transformers, deepspeed, math_verify, papermill"
# verl's config code only (no dependencies), in its own folder: tests/test_verl_export.py validates against it
step "install verl's configuration code into $VENV/verl-config" bash scripts/verl_config_env.sh "$VENV"
if [ "$mode" = gpu ]; then
  step "check torch is a CUDA build (GPU=1)" "$VENV/bin/python" -c \
    "import sys, torch; sys.exit(0 if torch.version.cuda else f'GPU=1 needs a CUDA build of torch, but torch {torch.__version__} is CPU-only: unset TORCH_INDEX_URL or point it at a CUDA index of PyTorch')"
  # mamba-ssm and causal-conv1d ship only source archives whose setup.py imports torch to pick a prebuilt
  # wheel for this torch and CUDA (or to compile one with nvcc when none matches): no build isolation.
  step "install the build tools of the GPU kernels" pip install packaging ninja
  step "install the GPU kernels (pyproject.toml's gpu extra) against this torch" \
    pip install --no-build-isolation -e ".[dev,gpu]"
  step "check the GPU kernels import" "$VENV/bin/python" -m falcon_h1r.kernels \
    --require-importable mamba_ssm,causal_conv1d,liger_kernel
fi
step "register the notebooks' IPython kernel" "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3
echo "$want $mode" > "$stamp"
echo "[setup] ready: $VENV ($mode)" >&2
