"""``python -m falcon_h1r.sections.bases --preset small``: train (or resume) every base of ``eval.base_seeds``,
one process per base sharing the device, each stopping at a checkpoint when ``--budget-s`` runs out; then print
each base's sampled pass@1 per domain and difficulty level (the testbed's calibration view) as one JSON record.

Why a command of its own: on a GPU the bases are the longest shared stage (every section reads them), and a
device call has a time limit, so they are trained first, in resumable pieces, before any notebook runs.
Exit status: 0 when every base is done, 3 when one stopped on its budget (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from falcon_h1r.config import PRESETS, RecipeError, parse_overrides
from falcon_h1r.sections.common import StageIncomplete, base_seeds, get_base_model
from falcon_h1r.sections.per_seed import combined_exit, override_args, run_per_seed
from falcon_h1r.sections.recipes import validate_preset


def calibration_row(info: dict[str, Any]) -> dict[str, Any]:
    """One base's calibration figures: sampled pass@1 by domain and level, greedy accuracy, wall time."""
    smp = info.get("sampled", {})
    return {"seed": info.get("seed"), "pass1": smp.get("pass1"), "pass1_by_domain": smp.get("pass1_by_domain"),
            "pass1_by_difficulty": smp.get("pass1_by_difficulty"), "greedy_acc_after": info.get("greedy_acc_after"),
            "train_wall_s": info.get("train_wall_s"), "total_wall_s": info.get("total_wall_s"),
            "mean_response_tokens": smp.get("mean_response_tokens"), "trace_tokens": info.get("trace_tokens")}


def one_base(preset: str, overrides: dict[str, Any], seed: int, budget_s: float | None) -> int:
    cfg = validate_preset(preset, overrides)
    try:
        base = get_base_model(cfg, seed=seed, budget_s=budget_s)
    except StageIncomplete as exc:
        print(f"bases: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(calibration_row(base.info)))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m falcon_h1r.sections.bases", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", choices=PRESETS)
    ap.add_argument("--budget-s", type=float, default=None, help="stop each base at a checkpoint past this time")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="preset override (YAML)")
    ap.add_argument("--seed", type=int, default=None, help="(internal) train this one base in this process")
    args = ap.parse_args(argv)
    try:
        overrides = parse_overrides(args.override)
        cfg = validate_preset(args.preset, overrides)
    except RecipeError as exc:
        print(f"bases: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        return one_base(args.preset, overrides, args.seed, args.budget_s)
    t0 = time.time()
    extra = override_args(args.override)
    budget = [] if args.budget_s is None else ["--budget-s", str(args.budget_s)]
    done = run_per_seed("falcon_h1r.sections.bases", args.preset, base_seeds(cfg), seed_flag="--seed",
                        args=[*budget, *extra], capture=True)
    rows = [json.loads(line) for _, out in done.values() for line in out.splitlines() if line.startswith("{")]
    codes = {s: rc for s, (rc, _) in done.items()}
    record = {"preset": args.preset, "bases": rows, "exit_codes": codes, "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(record))
    return combined_exit(codes)


if __name__ == "__main__":
    raise SystemExit(main())
