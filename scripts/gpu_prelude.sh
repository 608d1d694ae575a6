# Source THERE (the lent GPU machine) at the start of each device command, from the repository root:
#   . scripts/gpu_prelude.sh && python3 bench/engine_check.py --out $OUT
# Installs the carried wheels of .whl/ (made here by scripts/gpu_setup.sh; carry ".whl") into /tmp/site,
# offline, and puts /tmp/site and the repository on PYTHONPATH. Sourced, not run, so that the export reaches
# the caller's shell. FALCON_H1R_WHEELS and FALCON_H1R_SITE change the two folders.
# FALCON_H1R_T0: when the device command started (the first prelude of the command sets it), so that the
# scripts' own budgets (gpu_deepconf.sh, gpu_rl_probe.sh) count the wheel install too, not only their own part.
export FALCON_H1R_T0=${FALCON_H1R_T0:-$(date +%s)}
_fh_whl=${FALCON_H1R_WHEELS:-.whl}
_fh_site=${FALCON_H1R_SITE:-/tmp/site}
# a warm machine that already installed them needs no wheels carried again
if [ ! -f "$_fh_site/.falcon_h1r_wheels" ] && [ -z "$(ls "$_fh_whl"/*.whl 2>/dev/null)" ]; then
  echo "gpu_prelude: no wheels in $_fh_whl; run scripts/gpu_setup.sh on the CPU machine and carry .whl" >&2
  return 1 2>/dev/null || exit 1
fi
if [ ! -f "$_fh_site/.falcon_h1r_wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --upgrade --target "$_fh_site" "$_fh_whl"/*.whl \
    && cp "$_fh_whl"/selective_scan_cuda.py "$_fh_site"/ && touch "$_fh_site/.falcon_h1r_wheels" \
    || { echo "gpu_prelude: installing the wheels of $_fh_whl into $_fh_site failed" >&2; return 1 2>/dev/null || exit 1; }
fi
export PYTHONPATH=$_fh_site:$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch, transformers; print('gpu_prelude: torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available())" \
  || { echo "gpu_prelude: python3 cannot import torch and transformers from $_fh_site" >&2; return 1 2>/dev/null || exit 1; }
# which hybrid kernels this run will use (falcon_h1r/kernels.py), so that every log says it
python3 -m falcon_h1r.kernels \
  || { echo "gpu_prelude: the kernel report failed" >&2; return 1 2>/dev/null || exit 1; }
