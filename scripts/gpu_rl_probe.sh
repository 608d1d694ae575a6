#!/usr/bin/env bash
# Notebook 03 (RL) on a GPU machine in time-limited, resumable pieces, with what a later piece on another
# machine needs bundled into $OUT.
#
#   . scripts/gpu_prelude.sh && bash scripts/gpu_rl_probe.sh PRESET NAME [KEY=VALUE ...]
#
# NAME "main" writes the section's records to results/PRESET/03_rl (what gets committed); any other NAME writes
# under a probe root of its own ($FALCON_H1R_PROBE_ROOT/NAME, default /tmp/falcon_h1r_probe/NAME) so the
# committed records stay as they are. KEY=VALUE are `falcon-h1r reproduce --override` values, e.g.
# rl_experiments.steps=8 or 'rl_experiments.curricula=[math_only]'.
#
# Steps:
#  1. Unpack what earlier pieces brought back and the caller carried in .carry/: SFT bases (base_PRESET_*.tgz, one
#     per base: each fits the 16 MiB a file may bring back) and the RL run's finished units (rl_state_PRESET.tgz:
#     pools, evaluations and finished runs as JSON; the model states of a run in progress are too big to carry, so
#     a unit cut off on another machine restarts). Carry only the bases the next piece works on (the notebook loads
#     a base only while one of its units is unfinished): two small bases and the wheels fit the 64 MiB carry.
#  2. (A base the notebook needs and does not find is trained by it, section 02's stage, on the same budget.)
#  3. Notebook 03 with the overrides (without papermill, as with the slim wheels of .whl_g: its records alone,
#     `python -m falcon_h1r.sections.rl_records --records --parallel`: one process per base sharing the GPU, then the
#     records from their kept units; notebook 03 renders them on any machine). The preset's
#     rl_experiments.budget_s stops it at a step boundary (small: 420 s), and `timeout` RL_PROBE_BUDGET_S
#     (default 570 s from the start) is the backstop under the device command's 600 s. An incomplete run exits
#     3: run the same command again (on this machine it continues from the saved state; on a fresh one carry the
#     bundles back in .carry/ first).
#  4. Bundle any base trained here, the RL state (JSON only) into $OUT/rl_state_PRESET.tgz and, when done, the
#     section folder (records, tables, figures, the executed notebook) into $OUT/rl_NAME.tgz; print the
#     headline and the per-unit timings.
# Without $OUT (a CPU check) the bundles go to RL_PROBE_OUT (default: the probe root).
# PYTHON picks the interpreter (default python3, as on the GPU image; here: PYTHON=.venv/bin/python).
set -u -o pipefail
[ $# -ge 2 ] || { echo "usage: $0 PRESET NAME [KEY=VALUE ...]   (NAME 'main' writes results/PRESET/03_rl)" >&2; exit 2; }
PRESET=$1; NAME=$2; shift 2
case "$NAME" in *[!A-Za-z0-9._-]*|"") echo "gpu_rl_probe: NAME may use letters, digits, . _ - only" >&2; exit 2;; esac
PY=${PYTHON:-python3}
REPO=$(pwd)
CACHE="$REPO/results/$PRESET/_cache"
PROBES=${FALCON_H1R_PROBE_ROOT:-/tmp/falcon_h1r_probe}
BUNDLES=${OUT:-${RL_PROBE_OUT:-$PROBES}}
BUDGET=${RL_PROBE_BUDGET_S:-570}
mkdir -p "$CACHE" "$BUNDLES"
. "$(dirname "$0")/gpu_clock.sh"   # t0 (the device command's start) and left()

# ---- 1. what earlier pieces brought back
for f in .carry/base_"$PRESET"*.tgz .carry/rl_state_"$PRESET".tgz; do
  [ -f "$f" ] && tar -xzf "$f" -C "$CACHE" && echo "gpu_rl_probe: unpacked $f into $CACHE"
done

# ---- 2. the overrides (the SFT bases are loaded by the notebook, and only those it still works on)
ARGS=()
for kv in "$@"; do ARGS+=(--override "$kv"); done
CARRIED=$(cd "$CACHE" && ls -d base-* 2>/dev/null | grep -v '\.' | tr '\n' ' ')
echo "gpu_rl_probe: SFT bases here before the run: ${CARRIED:-none}"

# ---- 3. notebook 03, under its own results root unless NAME is main
if [ "$NAME" = main ]; then ROOT="$REPO/results"; else
  ROOT="$PROBES/$NAME"; mkdir -p "$ROOT/$PRESET"; ln -sfn "$CACHE" "$ROOT/$PRESET/_cache"; fi
[ "$(left)" -gt 60 ] || { echo "gpu_rl_probe: under a minute left in RL_PROBE_BUDGET_S=$BUDGET; run again" >&2; exit 3; }
echo "gpu_rl_probe: notebook 03 at $PRESET, $(left) s left, records in $ROOT/$PRESET/03_rl"
if "$PY" -c "import papermill" 2>/dev/null; then
  FALCON_H1R_RESULTS="$ROOT" timeout -k 20 "$(left)" "$PY" -m falcon_h1r reproduce --preset "$PRESET" --sections 03 "${ARGS[@]}"
else  # the slim wheels (no papermill): the records alone; notebook 03 renders them on any machine
  echo "gpu_rl_probe: no papermill here: computing the records only (python -m falcon_h1r.sections.rl_records --records, one process per base)"
  PAR=(--parallel); [ "$PRESET" = tiny ] && PAR=()   # tiny is not resumable (one process, a CPU minute or two)
  FALCON_H1R_RESULTS="$ROOT" timeout -k 20 "$(left)" "$PY" -m falcon_h1r.sections.rl_records --preset "$PRESET" --records \
    "${PAR[@]}" "${ARGS[@]}"
fi
rc=$?

# ---- 4. bundles and the headline
for dir in $(cd "$CACHE" && ls -d base-* 2>/dev/null | grep -v '\.'); do   # a base trained by this piece
  case " $CARRIED " in *" $dir "*) continue;; esac
  TOKS=$(cd "$CACHE" && ls -d tokenizer-* 2>/dev/null)
  tar -czf "$BUNDLES/base_${PRESET}_$dir.tgz" -C "$CACHE" "$dir" $TOKS \
    && echo "gpu_rl_probe: base bundle $BUNDLES/base_${PRESET}_$dir.tgz ($(du -h "$BUNDLES/base_${PRESET}_$dir.tgz" | cut -f1))"
done
STATE=$(cd "$CACHE" && ls -d rl-* 2>/dev/null)
if [ -n "$STATE" ]; then
  tar -czf "$BUNDLES/rl_state_$PRESET.tgz" -C "$CACHE" --exclude='*.pt' --exclude='*.tmp' $STATE \
    && echo "gpu_rl_probe: RL state bundle $BUNDLES/rl_state_$PRESET.tgz ($(du -h "$BUNDLES/rl_state_$PRESET.tgz" | cut -f1))"
fi
SEC="$ROOT/$PRESET/03_rl"
if [ $rc -eq 0 ] && [ -d "$SEC" ]; then
  tar -czf "$BUNDLES/rl_$NAME.tgz" -C "$ROOT/$PRESET" --exclude=_work 03_rl \
    && echo "gpu_rl_probe: records bundle $BUNDLES/rl_$NAME.tgz ($(du -h "$BUNDLES/rl_$NAME.tgz" | cut -f1))"
  "$PY" - "$SEC" <<'EOF'
import json, sys
import os
s = json.load(open(f"{sys.argv[1]}/summary.json")) if os.path.exists(f"{sys.argv[1]}/summary.json") else {}
t = json.load(open(f"{sys.argv[1]}/timings.json"))
keys = ["rl_seeds", "math_only_minus_sft_math", "math_only_minus_sft_math_ci95", "rl_pool_pass_rate_inside_fraction_code",
        "backfill_gen_call_saving_vs_nocache", "backfill_gen_call_saving_vs_nocache_ci95",
        "backfill_gen_call_saving_vs_reject", "backfill_gen_call_saving_vs_reject_ci95"]
print(json.dumps({k: s.get(k) for k in keys}, indent=1))
print(json.dumps({k: round(v) for k, v in t.items() if k.endswith("_s")}, indent=1))
EOF
  echo "gpu_rl_probe: done, $(( $(date +%s) - t0 )) s"
  exit 0
fi
echo "gpu_rl_probe: the RL run is not finished (rc $rc, $(( $(date +%s) - t0 )) s); run the same command again" >&2
exit 3
