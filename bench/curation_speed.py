"""How many problems data curation gets through per second on CPU: verification alone, and pass-rate
estimation (k sampled rollouts per problem from a model, then grading).

- verification: the preset's imperfect-teacher SFT traces graded by ``curation.grade`` (tiered math,
  numeric science, code tests in the sandbox, batched), and a sample graded by the plain twin
  (``verify.check`` per record, one sandbox process per code answer) for comparison;
- pass rates: ``curation.estimate_pass_rates`` with ``k`` rollouts per problem (paper: 8, τ 0.6,
  top-p 0.95) on held-out RL problems, from the preset's cached SFT base model (``--model base``, the
  default when it is cached) or random weights of the preset's shapes (``--model random``).

Prints a few readable lines; the last line is one JSON record.

    python bench/curation_speed.py --preset tiny                  # ~1 min on 2 CPU cores
    python bench/curation_speed.py --preset tiny --problems 20 --verify-records 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from falcon_h1r import curation as C  # noqa: E402
from falcon_h1r.config import load_preset  # noqa: E402
from falcon_h1r.sections import curation as SC  # noqa: E402


def _model(preset, kind: str):
    import torch

    from falcon_h1r.sections.common import cache_dir, get_base_model, get_tokenizer, recipe_hash, task_sets
    from falcon_h1r.tasks import GENERATOR_VERSION

    if kind == "auto":
        # the key get_base_model caches under: "base" only when that exact model is on disk (never train here)
        key = recipe_hash(preset.model, preset.tokenizer, preset.tasks, preset.train, preset.seed, preset.dtype,
                          GENERATOR_VERSION)
        kind = "base" if (cache_dir(preset) / f"base-{key}" / "falcon_h1r.json").exists() else "random"
    if kind == "base":
        b = get_base_model(preset, progress=False)
        return b.model.to("cpu").float().eval(), b.tokenizer, "base"
    from falcon_h1r.models import build_model

    tok = get_tokenizer(preset, task_sets(preset))
    model = build_model(preset.model, tok.vocab_size, seed=preset.seed, pad_id=tok.pad_id, eos_id=tok.eos_id,
                        dtype=torch.float32).eval()  # random weights: every rollout runs to the length limit
    return model, tok, "random"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--verify-records", type=int, default=900, help="SFT traces graded by the batched grader")
    ap.add_argument("--plain-sample", type=int, default=60, help="of those, graded again by verify.check one by one")
    ap.add_argument("--problems", type=int, default=40, help="RL problems whose pass rate is estimated")
    ap.add_argument("--k", type=int, default=None, help="rollouts per problem (default: curation.pass_rate_k)")
    ap.add_argument("--model", default="auto", choices=["auto", "base", "random"])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)

    import torch

    from falcon_h1r import verify
    from falcon_h1r.env import device_info
    from falcon_h1r.sections.common import task_sets

    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset, {"device": "cpu"})  # dtype kept: it is part of the base model's cache key
    recipe = SC.load_recipe(preset)
    sets = task_sets(preset)

    # ---- verification alone
    pool = [r for r in SC.sft_pool(preset, recipe, sets["train"])
            if C.validate_record(r) is None and C.quality_issue(r) is None]
    step = max(1, len(pool) // args.verify_records)
    pool = pool[::step][: args.verify_records]  # every domain, evenly
    responses = [C.trace_response(r) for r in pool]
    t0 = time.perf_counter()
    fast = C.grade(pool, responses, **C.grade_kwargs(recipe))
    verify_s = time.perf_counter() - t0
    stride = max(1, len(pool) // max(1, args.plain_sample))
    sample = list(range(0, len(pool), stride))[: args.plain_sample]
    t0 = time.perf_counter()
    plain = [verify.check(pool[i], responses[i]) for i in sample]
    plain_s = time.perf_counter() - t0
    agree = sum(plain[j].correct == fast[i].correct for j, i in enumerate(sample)) / max(1, len(sample))
    print(f"verification: {len(pool)} traces in {verify_s:.2f} s = {len(pool) / verify_s:.1f}/s batched; "
          f"plain verify.check {len(sample) / plain_s:.1f}/s on {len(sample)} of them (agreement {agree:.0%})")

    # ---- pass-rate estimation
    model, tok, kind = _model(preset, args.model)
    k = args.k or recipe.pass_rate_k
    probs = SC.rl_candidates(preset, recipe, sets)
    step = max(1, len(probs) // args.problems)
    probs = probs[::step][: args.problems]
    gen = SC.rollout_generation_config(preset, recipe)
    t0 = time.perf_counter()
    rates = C.estimate_pass_rates(model, tok, probs, gen, k=k, seed=preset.seed, progress=False, **C.grade_kwargs(recipe))
    rate_s = time.perf_counter() - t0
    print(f"pass rates: {len(probs)} problems x {k} rollouts (max {gen.max_new_tokens} tokens, {kind} model) in "
          f"{rate_s:.2f} s = {len(probs) / rate_s:.2f} problems/s; mean pass rate "
          f"{sum(r.pass_rate for r in rates) / len(rates):.3f}")

    info = device_info()
    record = {
        "bench": "curation_speed", "preset": preset.name, "device": "cpu", "torch_threads": args.threads,
        "cpu_count": info.get("cpu_count"), "verify_records": len(pool),
        "verify_problems_per_s": len(pool) / verify_s, "verify_plain_problems_per_s": len(sample) / plain_s,
        "verify_agreement_with_plain": agree, "pass_rate_problems": len(probs), "pass_rate_k": k,
        "pass_rate_max_new_tokens": gen.max_new_tokens, "pass_rate_model": kind,
        "pass_rate_problems_per_s": len(probs) / rate_s,
        "pass_rate_rollouts_per_s": len(probs) * k / rate_s,
    }
    print(json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
