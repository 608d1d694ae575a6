#!/usr/bin/env bash
# Section 02's §2 ablation grid on a GPU machine, in time-limited resumable pieces, with what the next piece (on
# this machine or a fresh one) needs bundled into $OUT.
#
#   . scripts/gpu_prelude.sh && bash scripts/gpu_sft_grid.sh PRESET [KEY=VALUE ...]
#
# KEY=VALUE are preset overrides (e.g. sft_ablations.start_steps=600). Steps:
#  1. Check the preset and the overrides (exit 2 before any work), then unpack .carry/sft_grid_PRESET.tgz.part*
#     (an earlier piece's work folder and common start), if carried.
#  2. The probe, once per start (its record kept in the work folder): it builds the start, the pools and one
#     reference arm and prints a verdict. Anything but "ok" stops here (exit 4): the start or the arms' steps
#     must change first, because a grid at the floor or the ceiling cannot answer the paper's questions (the
#     answers-only start's grid at small: results/small/02_sft/ablation_floor_probe.json).
#  3. The grid with SFT_WORKERS processes sharing the GPU (default 8: 37 runs in 460 s on one H200), starting no run once SFT_GRID_BUDGET_S
#     (default 560 s from the start) minus SFT_RUN_TAIL_S (default 150 s: a normalization run under sharing) is
#     spent; `timeout` is the backstop. Rows are kept as they finish.
#  4. When every run is done: `python -m falcon_h1r.sections.sft_ablation_export` writes notebook 02's two records (ablation_rows.jsonl, ablation_start.json;
#     no training) into $OUT/sft02_records_PRESET.tgz; then notebook 02 (`falcon-h1r reproduce --sections 02`, the
#     bases' part from their committed records) if the time left allows. Unpacked into results/PRESET/ on any
#     machine, the records let `falcon-h1r reproduce --preset PRESET --sections 02` render the whole analysis.
#  5. Bundles: $OUT/sft_grid_PRESET.tgz.part* (the work folder and the start, split in 15 MiB pieces: a device
#     call brings back files of at most 16 MiB) and, when the notebook ran, $OUT/sft02_PRESET.tgz (the section
#     folder). Carry the parts back in .carry/ when the machine is a fresh one.
# Exit: 0 the grid is done (its records bundled), 3 not finished (run again), 4 the probe's verdict is not ok,
# 2 bad usage.
# SFT_GRID_IGNORE_VERDICT=1 runs the grid whatever the verdict (the tiny preset, at the floor by design, on a CPU).
# PYTHON picks the interpreter (default python3, as on the GPU image).
set -u -o pipefail
[ $# -ge 1 ] || { echo "usage: $0 PRESET [KEY=VALUE ...]" >&2; exit 2; }
PRESET=$1; shift
case "$PRESET" in tiny|small|paper) ;; *) echo "gpu_sft_grid: PRESET is tiny, small or paper, got '$PRESET'" >&2; exit 2;; esac
PY=${PYTHON:-python3}
REPO=$(pwd)
WORK="results/$PRESET/02_sft/_work"
CACHE="results/$PRESET/_cache"
BUNDLES=${OUT:-${SFT_GRID_OUT:-/tmp/falcon_h1r_sft_grid}}
BUDGET=${SFT_GRID_BUDGET_S:-560}
TAIL=${SFT_RUN_TAIL_S:-150}
WORKERS=${SFT_WORKERS:-8}
. "$(dirname "$0")/gpu_clock.sh"   # t0 (the device command's start) and left()
ARGS=()
for kv in "$@"; do
  case "$kv" in *=*) ARGS+=(--override "$kv");; *) echo "gpu_sft_grid: '$kv' is not KEY=VALUE" >&2; exit 2;; esac
done

bundle() {
  rm -f "$BUNDLES"/sft_grid_"$PRESET".tgz.part*
  tar -czf - "$WORK" $(ls -d "$CACHE"/sft-start-* 2>/dev/null | grep -v '\.tmp-') \
    | split -b 15M - "$BUNDLES/sft_grid_$PRESET.tgz.part" \
    && echo "gpu_sft_grid: state bundle $(ls "$BUNDLES"/sft_grid_"$PRESET".tgz.part* | wc -l) part(s) in $BUNDLES"
}

# ---- 1. the checks: the preset, the overrides and the start's key (its probe record is named by it)
KEY=$("$PY" - "$PRESET" "$@" <<'EOF'
import sys, yaml
from falcon_h1r.config import RecipeError, load_preset
from falcon_h1r.sections.sft_ablation_data import start_key
from falcon_h1r.sections.sft_ablations import load_ablations, load_grids, load_trainer
try:
    over = {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])}
    p = load_preset(sys.argv[1], over)
    load_grids(p)
    print(start_key(p, load_ablations(p), load_trainer(p)))
except (RecipeError, yaml.YAMLError) as exc:
    sys.exit(f"gpu_sft_grid: {exc}")
EOF
) || { echo "gpu_sft_grid: the preset or an override is not valid (above); nothing was run" >&2; exit 2; }
mkdir -p "$WORK" "$CACHE" "$BUNDLES"

# ---- 1b. an earlier piece's state
if ls .carry/sft_grid_"$PRESET".tgz.part* >/dev/null 2>&1; then
  cat .carry/sft_grid_"$PRESET".tgz.part* | tar -xzf - && echo "gpu_sft_grid: unpacked the carried state"
fi

# ---- 2. the probe, once per start
PROBE="$WORK/probe-$KEY.json"
if [ ! -s "$PROBE" ]; then
  echo "gpu_sft_grid: probing the start $KEY ($(left) s left)"
  "$PY" -m falcon_h1r.sections.sft_ablations --preset "$PRESET" --probe "${ARGS[@]}" > "$PROBE.tmp" \
    && tail -n 1 "$PROBE.tmp" > "$PROBE" && rm -f "$PROBE.tmp" \
    || { rm -f "$PROBE.tmp"; bundle; echo "gpu_sft_grid: the probe failed" >&2; exit 3; }
fi
cat "$PROBE"
VERDICT=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['verdict'])" "$PROBE")
if [ "$VERDICT" != ok ] && [ "${SFT_GRID_IGNORE_VERDICT:-0}" != 1 ]; then
  bundle
  echo "gpu_sft_grid: the probe's verdict is not ok ($VERDICT): change the start or the arms' steps first" >&2
  exit 4
fi

# ---- 3. the grid
rc=3
if [ "$(left)" -gt $(( TAIL + 30 )) ]; then
  echo "gpu_sft_grid: the grid on $WORKERS workers, $(left) s left"
  timeout -k 20 $(( $(left) - 20 )) "$PY" -m falcon_h1r.sections.sft_ablations --preset "$PRESET" \
    --workers "$WORKERS" --budget-s $(( $(left) - TAIL )) "${ARGS[@]}" 2>&1 \
    | grep -v "Backend impl\|it/s\]$\|s/it\]$" | tr '\r' '\n' | grep '^{'
  rc=${PIPESTATUS[0]}
fi
"$PY" -m falcon_h1r.sections.sft_ablations --report "$WORK" > "$BUNDLES/sft_grid_report_$PRESET.json" \
  && "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({k: r[k] for k in ('runs', \
'diverged_runs', 'acc_mean_max', 'acc_mean_max_arm', 'start_acc', 'verdict')}))" "$BUNDLES/sft_grid_report_$PRESET.json"
bundle

# ---- 4. once every run is done: the records notebook 02 renders from, then the notebook itself if time allows
if [ $rc -eq 0 ]; then
  "$PY" -m falcon_h1r.sections.sft_ablation_export --preset "$PRESET" "${ARGS[@]}" \
    && tar -czf "$BUNDLES/sft02_records_$PRESET.tgz" -C "results/$PRESET" 02_sft/ablation_rows.jsonl \
         02_sft/ablation_start.json \
    && echo "gpu_sft_grid: records bundle $BUNDLES/sft02_records_$PRESET.tgz (notebook 02 renders from it anywhere)"
  if [ "$(left)" -lt 120 ]; then
    echo "gpu_sft_grid: the grid is done; render notebook 02 from the records bundle on any machine" >&2
    exit 0
  fi
  timeout -k 20 "$(left)" "$PY" -m falcon_h1r reproduce --preset "$PRESET" --sections 02 \
    --override sft_ablations.bases=committed "${ARGS[@]}"
  rc=$?
  if [ $rc -eq 0 ]; then
    tar -czf "$BUNDLES/sft02_$PRESET.tgz" -C "results/$PRESET" --exclude=_work 02_sft claims.csv claims.md \
      claims_summary.json && echo "gpu_sft_grid: section bundle $BUNDLES/sft02_$PRESET.tgz"
    echo "gpu_sft_grid: done, $(( $(date +%s) - t0 )) s"
    exit 0
  fi
  echo "gpu_sft_grid: notebook 02 failed (rc $rc); the records bundle is complete: render it on any machine" >&2
  exit 0
fi
echo "gpu_sft_grid: not finished (rc $rc, $(( $(date +%s) - t0 )) s); run the same command again" >&2
exit 3
