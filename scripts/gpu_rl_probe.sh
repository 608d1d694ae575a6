#!/usr/bin/env bash
# One RL probe: notebook 03 at a preset with recipe overrides, written to a results root of its own
# so the committed results/<preset>/03_rl stay as they are, then bundled into $OUT.
#
#   . scripts/gpu_prelude.sh && bash scripts/gpu_rl_probe.sh PRESET NAME [KEY=VALUE ...]
#   . scripts/gpu_prelude.sh && RL_PROBE_BASE_ONLY=1 bash scripts/gpu_rl_probe.sh PRESET
#
# KEY=VALUE are `falcon-h1r reproduce --override` values, e.g. 'rl_experiments.curricula=[math_only]'
# rl_experiments.steps=200 (the experiment's block) or rl.lr=5e-5 (the trainer's).
# Steps:
#  1. The SFT base in results/PRESET/_cache (git-ignored). If .carry/base_PRESET.tgz exists (a bundle an
#     earlier run brought back and sent along to the GPU machine), it is unpacked there first;
#     otherwise the base is trained here (small: about 5 minutes on an H100). The base and its tokenizer
#     are then bundled into $OUT/base_PRESET.tgz at once, so a later run can carry them.
#  2. With RL_PROBE_BASE_ONLY=1, stop there. Otherwise run notebook 03 with the overrides under
#     FALCON_H1R_RESULTS=$FALCON_H1R_PROBE_ROOT/NAME (default /tmp/falcon_h1r_probe/NAME), sharing the
#     base cache through a link, inside `timeout RL_PROBE_BUDGET_S` (default 540 s) so the device
#     command's own 600 s limit never cuts off step 3. With rl_experiments.resumable (the small preset's) the run
#     state stays in that root; the same command again on the same machine continues the run.
#  3. Bundle the section folder (records, tables, figures, the executed notebook; not _work) into
#     $OUT/rl_NAME.tgz and print summary.json and the math-only trajectory.
# Without $OUT (a CPU check) the bundles go to RL_PROBE_OUT (default: the probe root).
# PYTHON picks the interpreter (default python3, as on the GPU image; here: PYTHON=.venv/bin/python).
set -u -o pipefail
[ $# -ge 1 ] || { echo "usage: $0 PRESET NAME [KEY=VALUE ...]   |   RL_PROBE_BASE_ONLY=1 $0 PRESET" >&2; exit 2; }
PRESET=$1; shift
NAME=""
if [ -z "${RL_PROBE_BASE_ONLY:-}" ]; then
  [ $# -ge 1 ] || { echo "gpu_rl_probe: name the probe: $0 $PRESET NAME [KEY=VALUE ...]" >&2; exit 2; }
  NAME=$1; shift
  case "$NAME" in *[!A-Za-z0-9._-]*|"") echo "gpu_rl_probe: NAME may use letters, digits, . _ - only" >&2; exit 2;; esac
fi
PY=${PYTHON:-python3}
REPO=$(pwd)
CACHE="$REPO/results/$PRESET/_cache"
BUNDLES=${OUT:-${RL_PROBE_OUT:-${FALCON_H1R_PROBE_ROOT:-/tmp/falcon_h1r_probe}}}
mkdir -p "$CACHE" "$BUNDLES"
t0=$(date +%s)

# ---- 1. the SFT base (unpacked from a carried bundle, or trained), bundled at once
if [ -f ".carry/base_$PRESET.tgz" ]; then
  tar -xzf ".carry/base_$PRESET.tgz" -C "$CACHE" && echo "gpu_rl_probe: unpacked .carry/base_$PRESET.tgz into $CACHE"
fi
BASE=$(FALCON_H1R_RESULTS="$REPO/results" "$PY" - "$PRESET" "$@" <<'EOF'
import sys
from falcon_h1r.cli import parse_overrides
from falcon_h1r.config import load_preset
from falcon_h1r.sections.common import get_base_model

cfg = load_preset(sys.argv[1], parse_overrides(sys.argv[2:]))
base = get_base_model(cfg, progress=False)
print(f"gpu_rl_probe: SFT base {base.path.name}: held-out greedy accuracy {base.info.get('greedy_acc_after')}, "
      f"trained in {base.info.get('train_wall_s')} s", file=sys.stderr)
print(base.path.name)
EOF
) || { echo "gpu_rl_probe: the SFT base could not be built or loaded" >&2; exit 1; }
TOKS=$(cd "$CACHE" && ls -d tokenizer-* 2>/dev/null)
tar -czf "$BUNDLES/base_$PRESET.tgz" -C "$CACHE" "$BASE" $TOKS \
  && echo "gpu_rl_probe: base bundle $BUNDLES/base_$PRESET.tgz ($(du -h "$BUNDLES/base_$PRESET.tgz" | cut -f1)), $(( $(date +%s) - t0 )) s in"
if [ "$(stat -c %s "$BUNDLES/base_$PRESET.tgz" 2>/dev/null || echo 0)" -gt 16000000 ]; then
  echo "gpu_rl_probe: the base bundle is over 16 MB: too big to bring back from the GPU machine" >&2
fi
[ -n "${RL_PROBE_BASE_ONLY:-}" ] && exit 0

# ---- 2. notebook 03 with the overrides, under its own results root
ROOT=${FALCON_H1R_PROBE_ROOT:-/tmp/falcon_h1r_probe}/$NAME
mkdir -p "$ROOT/$PRESET"
ln -sfn "$CACHE" "$ROOT/$PRESET/_cache"
ARGS=()
for kv in "$@"; do ARGS+=(--override "$kv"); done
BUDGET=${RL_PROBE_BUDGET_S:-540}
LEFT=$(( BUDGET - ($(date +%s) - t0) ))
[ "$LEFT" -gt 30 ] || { echo "gpu_rl_probe: no time left for the notebook in RL_PROBE_BUDGET_S=$BUDGET; run again" >&2; exit 124; }
echo "gpu_rl_probe: notebook 03 at $PRESET, ${LEFT}s left, records in $ROOT/$PRESET/03_rl"
FALCON_H1R_RESULTS="$ROOT" timeout -k 20 "$LEFT" "$PY" -m falcon_h1r reproduce --preset "$PRESET" --sections 03 "${ARGS[@]}"
rc=$?
[ $rc -eq 124 ] && echo "gpu_rl_probe: the notebook hit the budget; with rl_experiments.resumable the same command continues it" >&2

# ---- 3. bundle the records and show the headline
SEC="$ROOT/$PRESET/03_rl"
if [ -d "$SEC" ]; then
  tar -czf "$BUNDLES/rl_$NAME.tgz" -C "$ROOT/$PRESET" --exclude=_work 03_rl \
    && echo "gpu_rl_probe: records bundle $BUNDLES/rl_$NAME.tgz ($(du -h "$BUNDLES/rl_$NAME.tgz" | cut -f1))"
  [ -f "$SEC/summary.json" ] && cat "$SEC/summary.json"
  [ -f "$SEC/math_only_trajectory.md" ] && cat "$SEC/math_only_trajectory.md"
fi
echo "gpu_rl_probe: rc $rc, $(( $(date +%s) - t0 )) s in all"
exit $rc
