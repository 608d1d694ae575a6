"""Export the GRPO recipe and the curated RL pool to verl (configuration YAML + command line + Parquet).

    # the paper's Table 2 recipe (the paper preset's rl block) and a pool given as JSON lines of problems
    python scripts/export_verl.py --preset paper --pool rl_pool.jsonl --model /ckpt/Falcon-H1R-7B-SFT \
        --nnodes 32 --gpus-per-node 8 --rollout-tp 2 --out verl_run/

    # the preset's own curated pool (curation section; computes the SFT base's pass rates if not cached)
    python scripts/export_verl.py --preset small --from-curation --model /ckpt/sft --out verl_run/

Writes ``OUT/grpo_falcon_h1r.yaml`` (+ ``.sh``, the same as command-line overrides), ``OUT/rl_train.parquet`` and
``OUT/rl_val.parquet`` (``--val-fraction`` of the pool, seeded), and ``OUT/field_map.json`` (each recipe field's verl
key, or what verl lacks). Run there: ``bash OUT/grpo_falcon_h1r.sh`` in verl's own environment. The last stdout line
is one JSON record.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pool", help="JSON lines, one problem per line (id, domain, question, answer or tests)")
    src.add_argument("--from-curation", action="store_true", help="the preset's curated RL pool (notebook 01)")
    ap.add_argument("--model", required=True, help="the SFT checkpoint verl starts from (a local directory)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--nnodes", type=int, default=1)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--rollout-tp", type=int, default=1)
    ap.add_argument("--max-prompt-length", type=int, default=2048)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--system-prompt", default=None, help="default: the package's RL system prompt")
    args = ap.parse_args(argv)

    from falcon_h1r.config import load_preset
    from falcon_h1r.scaleout import verl_export as ve
    from falcon_h1r.sections.rl import load_recipes
    from falcon_h1r.tokenizer import DEFAULT_SYSTEM_PROMPT

    preset = load_preset(args.preset)
    rl, _ = load_recipes(preset)
    if args.pool:
        path = Path(args.pool)
        if not path.exists():
            print(f"--pool {path}: no such file", file=sys.stderr)
            return 2
        problems = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        from falcon_h1r.sections.curation import curate_rl_pool

        problems = curate_rl_pool(preset).problems
    if not problems:
        print("the RL pool is empty: nothing to export", file=sys.stderr)
        return 2
    order = list(range(len(problems)))
    random.Random(preset.seed).shuffle(order)
    n_val = max(1, round(len(problems) * args.val_fraction)) if len(problems) > 1 else 0
    val, train = [problems[i] for i in order[:n_val]], [problems[i] for i in order[n_val:]]
    out = Path(args.out)
    system = DEFAULT_SYSTEM_PROMPT if args.system_prompt is None else args.system_prompt
    train_path = ve.export_pool(train, out / "rl_train.parquet", "train", system_prompt=system)
    val_path = ve.export_pool(val or train[:1], out / "rl_val.parquet", "val", system_prompt=system)
    cfg = ve.export_config(rl, model_path=args.model, train_files=str(train_path.resolve()),
                           val_files=str(val_path.resolve()), max_prompt_length=args.max_prompt_length,
                           n_gpus_per_node=args.gpus_per_node, nnodes=args.nnodes, rollout_tp=args.rollout_tp)
    cfg_path = ve.write_config(cfg, out / "grpo_falcon_h1r.yaml")
    (out / "field_map.json").write_text(json.dumps({k: asdict(m) for k, m in ve.FIELD_MAP.items()}, indent=2) + "\n")
    print(json.dumps({"kind": "verl_export", "preset": args.preset, "config": str(cfg_path), "train": len(train),
                      "val": len(val), "verl_version": ve.VERL_VERSION, "lacking": sorted(ve.LACKING)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
