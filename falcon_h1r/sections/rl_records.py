"""``python -m falcon_h1r.sections.rl_records --preset PRESET --records [--parallel] [--override K=V ...]``:
notebook 03's records computed without the notebook (a GPU machine without papermill; notebook 03 then renders
them anywhere).

``--parallel`` runs one process per SFT base first (``python -m falcon_h1r.sections.rl_records --base-seed S``),
each computing its base's units into the resumable state, then one pass here that finds them kept and writes the
records (the attack suite and the strategy comparison run in that pass). Why: the RL units of different bases are
independent, and a ~10M-parameter model's generation and updates are launch-bound, so three processes share a
GPU far better than one runs them in turn (the SFT bases: three at once, each 0.36 s a step on one H200).
Exit status: 0 done, 3 stopped on ``rl_experiments.budget_s`` (run the same command again), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from falcon_h1r.config import RecipeError, parse_overrides
from falcon_h1r.sections.common import StageIncomplete, base_seeds, open_section, run_mode
from falcon_h1r.sections.per_seed import claim_device_share, combined_exit, override_args, run_per_seed
from falcon_h1r.sections.recipes import validate_preset
from falcon_h1r.sections.rl import SECTION, compute_records, load_recipes


def main(argv: Sequence[str] | None = None) -> int:
    """``--records``: notebook 03's records at a preset, computed without the notebook. ``--parallel``: one process
    per base first (each computes its base's pools, SFT evaluation and curricula into the resumable state,
    sharing the device: a ~10M-parameter model leaves a GPU mostly idle from one process), then this process
    writes the records from the kept units (the attack suite and the strategy comparison run here)."""
    ap = argparse.ArgumentParser(prog="python -m falcon_h1r.sections.rl_records", description=main.__doc__)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--records", action="store_true", required=True, help="compute the records into the results root")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="a recipe value (YAML)")
    ap.add_argument("--parallel", action="store_true", help="one process per base, then the records")
    ap.add_argument("--base-seed", type=int, default=None, help="(internal, --parallel) this base's units only")
    args = ap.parse_args(argv)
    try:
        overrides = parse_overrides(args.override)
        cfg = validate_preset(args.preset, overrides)
        rl, exp = load_recipes(cfg)
        if args.base_seed is not None and args.base_seed not in base_seeds(cfg):
            raise RecipeError(f"--base-seed {args.base_seed}: the {args.preset} preset's bases are "
                              f"eval.base_seeds {base_seeds(cfg)}")
        if (args.parallel or args.base_seed is not None) and not exp.resumable:
            raise RecipeError("--parallel needs rl_experiments.resumable: true (the processes hand their units over "
                              "through the kept state)")
    except (RecipeError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.base_seed is not None:  # a child: no section writer (it would open the section folder)
        if run_mode(cfg) != "compute":
            print(f"error: this machine cannot compute the {args.preset} preset (no usable CUDA GPU)", file=sys.stderr)
            return 2
        claim_device_share()
        try:
            compute_records(cfg, rl, exp, None, only_base=args.base_seed)
        except StageIncomplete as exc:
            print(f"incomplete (base {args.base_seed}): {exc}", file=sys.stderr)
            return 3
        return 0
    sec = open_section(args.preset, SECTION, overrides)
    if sec.mode != "compute":
        print(f"error: this machine cannot compute the {args.preset} preset (no usable CUDA GPU); --records needs "
              "one", file=sys.stderr)
        return 2
    if args.parallel:
        extra = ["--records", *override_args(args.override)]
        codes = {s: rc for s, (rc, _) in run_per_seed("falcon_h1r.sections.rl_records", args.preset, base_seeds(cfg),
                                                      seed_flag="--base-seed", args=extra).items()}
        print(f"RL, one process per base: exit {codes}", file=sys.stderr)
        if combined_exit(codes) != 0:
            return combined_exit(codes)
    try:
        timings = compute_records(sec.cfg, rl, exp, sec.writer)
    except StageIncomplete as exc:
        print(f"incomplete: {exc}", file=sys.stderr)
        return 3
    sec.writer.provenance()  # where the records were computed: a later render here keeps it as computed_run
    print(f"RL records in {sec.writer.dir} ({timings['total_s']:.0f} s)", file=sys.stderr)
    return 0


__all__ = ["main"]


if __name__ == "__main__":
    raise SystemExit(main())
