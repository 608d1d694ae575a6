#!/usr/bin/env bash
# Notebook 05's DeepConf records on a GPU machine, in time-limited pieces, without the notebook (the lent image
# has no papermill): the notebook then renders them on any machine.
#
#   . scripts/gpu_prelude.sh && bash scripts/gpu_deepconf.sh PRESET [KEY=VALUE ...]
#
# KEY=VALUE: preset values for every step (`--override`, as `falcon-h1r reproduce --override`), e.g.
# 'eval.base_seeds=[0, 1, 2, 3, 4]' for more bases; the records still go to $FALCON_H1R_RESULTS (default results/),
# so point it elsewhere for a variant that should not replace the committed records.
#
# Steps, each skipped when already done on this machine:
#  1. Unpack carried bases (.carry/base_PRESET_*.tgz, as scripts/gpu_rl_probe.sh bundles them) into the cache and
#     carried pools (.carry/deepconf05_pools_PRESET.tgz.part*, as step 3 bundles them) into the section's _work.
#  2. The SFT bases (`python -m falcon_h1r.sections.bases`, one process per base, resumable), then each base
#     trained here bundled into $OUT/base_PRESET_<dir>.tgz (about 13 MB at small: carry two a call with the
#     wheels, so a later session skips this step).
#  3. The trace pools, one process per base (`python -m falcon_h1r.sections.deepconf --pools-only --parallel`),
#     kept chunk by chunk (4 problems a chunk at small) so a piece cut off by the budget loses at most a chunk;
#     what is made so far comes back as $OUT/deepconf05_pools_PRESET.tgz.part* (15 MB parts), so a piece on a
#     fresh machine continues from it (the chunks live only on the machine otherwise).
#  4. The records (`--records`: screen, replay, live runs, overhead), then $OUT/deepconf05_PRESET.tgz (the section
#     folder without _work). Here: `tar -xzf deepconf05_PRESET.tgz -C results/PRESET && falcon-h1r reproduce
#     --preset PRESET --sections 05` renders notebook 05 from them.
# DEEPCONF_BUDGET_S (default 570) seconds from the start (the device command's, FALCON_H1R_T0, when
# scripts/gpu_prelude.sh set it: the wheel install counts) bound the whole piece (under a device call's 600 s);
# DEEPCONF_RECORDS_S (default 150) is what step 4 needs (it is not started with less left).
# Exit: 0 done, 3 not finished (run the same command again: on this machine it continues), 2 bad usage.
# PYTHON picks the interpreter (default python3, as on the GPU image).
set -u -o pipefail
[ $# -ge 1 ] || { echo "usage: $0 PRESET [KEY=VALUE ...]" >&2; exit 2; }
PRESET=$1; shift
OVR=()
for kv in "$@"; do
  case "$kv" in *=*) OVR+=(--override "$kv");; *) echo "gpu_deepconf: '$kv' is not KEY=VALUE" >&2; exit 2;; esac
done
case "$PRESET" in tiny|small|paper) ;; *) echo "gpu_deepconf: PRESET is tiny, small or paper, got '$PRESET'" >&2; exit 2;; esac
PY=${PYTHON:-python3}
ROOT=${FALCON_H1R_RESULTS:-results}
CACHE="$ROOT/$PRESET/_cache"
SEC="$ROOT/$PRESET/05_deepconf"
BUNDLES=${OUT:-${DEEPCONF_OUT:-/tmp/falcon_h1r_deepconf}}
BUDGET=${DEEPCONF_BUDGET_S:-570}
RECORDS=${DEEPCONF_RECORDS_S:-150}
mkdir -p "$CACHE" "$BUNDLES"
. "$(dirname "$0")/gpu_clock.sh"   # t0 (the device command's start) and left()
quiet() { tr '\r' '\n' | grep -v "it/s\]\|s/it\]\|Backend impl\|falling back\|^ *$"; }

# ---- 1. carried bases and pools
CARRIED=""
for f in .carry/base_"$PRESET"_*.tgz; do
  [ -f "$f" ] || continue
  tar -xzf "$f" -C "$CACHE" && CARRIED="$CARRIED $(basename "$f" .tgz)" && echo "gpu_deepconf: unpacked $f"
done
if ls .carry/deepconf05_pools_"$PRESET".tgz.part* >/dev/null 2>&1; then
  mkdir -p "$SEC" && cat .carry/deepconf05_pools_"$PRESET".tgz.part* | tar -xzf - -C "$SEC" \
    && echo "gpu_deepconf: unpacked the carried pools into $SEC/_work" \
    || { echo "gpu_deepconf: .carry/deepconf05_pools_$PRESET.tgz.part* did not unpack" >&2; exit 2; }
fi

# ---- 2. the bases (a finished base is loaded from the cache in seconds)
echo "gpu_deepconf: bases, $(left) s left"
timeout -k 20 "$(left)" "$PY" -m falcon_h1r.sections.bases --preset "$PRESET" --budget-s $(( $(left) - 120 )) "${OVR[@]}" 2>&1 \
  | quiet | tail -n 5
rc=${PIPESTATUS[0]}
for dir in $(cd "$CACHE" && ls -d base-* 2>/dev/null | grep -v '\.'); do
  case "$CARRIED" in *"base_${PRESET}_$dir"*) continue;; esac
  [ -f "$BUNDLES/base_${PRESET}_$dir.tgz" ] && continue
  tar -czf "$BUNDLES/base_${PRESET}_$dir.tgz" -C "$CACHE" "$dir" $(cd "$CACHE" && ls -d tokenizer-* 2>/dev/null) \
    && echo "gpu_deepconf: base bundle base_${PRESET}_$dir.tgz ($(du -h "$BUNDLES/base_${PRESET}_$dir.tgz" | cut -f1))"
done
[ "$rc" -eq 0 ] || { echo "gpu_deepconf: the bases are not finished (rc $rc); run again" >&2; exit 3; }

# ---- 3. the pools
echo "gpu_deepconf: pools, $(left) s left"
timeout -k 20 "$(left)" "$PY" -m falcon_h1r.sections.deepconf --preset "$PRESET" --pools-only --parallel \
  --budget-s $(( $(left) - 90 )) "${OVR[@]}" 2>&1 | quiet | tail -n 8
rc=${PIPESTATUS[0]}
# the pools made so far (finished pools and the chunks of unfinished ones, ~8 MB a base at small) come back in
# 15 MB parts, so a fresh machine continues from them: carry the parts in .carry/
if [ -d "$SEC/_work" ]; then
  rm -f "$BUNDLES"/deepconf05_pools_"$PRESET".tgz.part*
  tar -czf - -C "$SEC" --exclude='*.tmp' _work | split -b 15M - "$BUNDLES/deepconf05_pools_$PRESET.tgz.part" \
    && echo "gpu_deepconf: pools bundle deepconf05_pools_$PRESET.tgz.part* ($(cat "$BUNDLES"/deepconf05_pools_"$PRESET".tgz.part* | wc -c) bytes)"
fi
[ "$rc" -eq 0 ] || { echo "gpu_deepconf: the pools are not finished (rc $rc); run again (on a fresh machine carry $BUNDLES/deepconf05_pools_$PRESET.tgz.part* in .carry/)" >&2; exit 3; }

# ---- 4. the records
[ "$(left)" -ge "$RECORDS" ] || { echo "gpu_deepconf: pools done; $(left) s left, under DEEPCONF_RECORDS_S; run again" >&2; exit 3; }
echo "gpu_deepconf: records, $(left) s left"
timeout -k 20 "$(left)" "$PY" -m falcon_h1r.sections.deepconf --preset "$PRESET" --records "${OVR[@]}" 2>&1 | quiet | tail -n 3
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "gpu_deepconf: the records failed or ran out of time (rc $rc); run again" >&2; exit 3; }
tar -czf "$BUNDLES/deepconf05_$PRESET.tgz" -C "$ROOT/$PRESET" --exclude=_work 05_deepconf \
  && echo "gpu_deepconf: records bundle deepconf05_$PRESET.tgz ($(du -h "$BUNDLES/deepconf05_$PRESET.tgz" | cut -f1)), $(( $(date +%s) - t0 )) s"
