# Sourced by the GPU scripts (gpu_deepconf.sh, gpu_rl_probe.sh, gpu_sft_grid.sh) once BUDGET is set: t0, the
# device command's start when scripts/gpu_prelude.sh set FALCON_H1R_T0 (its wheel install counts too), and
# left(), the seconds of BUDGET left. A start older than the budget is an earlier command's (a shell that sourced
# the prelude before), not this one's.
t0=${FALCON_H1R_T0:-$(date +%s)}; [ $(( $(date +%s) - t0 )) -lt "$BUDGET" ] || t0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - t0) )); }
