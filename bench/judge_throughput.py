"""Llama Guard judge throughput: judge calls per second, and the hours the paper's 245,910 calls would take
(81,970 prompts x 3 modes: reasoning only, answer only, both; paper Appendix E).

The judge is :class:`falcon_h1r.safety.LlamaGuardJudge`, batched as the safety section runs it (texts sorted by
length, at most ``--batch-size`` rows and ``--max-batch-tokens`` padded tokens per forward pass). Its model is
a local Llama-Guard-3-8B (``--guard-dir``) or, without one, random weights of its shapes (``--layers`` of its
32; a tokenizer of Llama Guard 3's kind, written by us). The texts are synthetic: per response a reasoning
of a log-normal length (``--median-tokens``, capped at ``--max-tokens``), an answer of ~150 tokens, and both
together, each judged after its prompt. Random weights rarely write the end-of-turn token, so every call
decodes ``--max-new-tokens`` tokens; the real judge stops after its 2-5 verdict tokens, so with random weights
the figure is a lower bound.

Prints a few readable lines; the last line is one JSON record.

    python bench/judge_throughput.py --device cuda                          # Llama-Guard-3-8B shapes, one GPU
    python bench/judge_throughput.py --guard-dir /models/Llama-Guard-3-8B --device cuda
    python bench/judge_throughput.py --device cpu --layers 0 --responses 8  # microscopic, a CPU smoke
    python bench/judge_throughput.py --device cuda --out results/paper/smoke/judge_throughput.json

``--out`` also writes the record, with the run's provenance (commit, device, package versions), to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PAPER_CALLS = 81_970 * 3  # paper Appendix E: prompts x modes


def synthetic_pairs(tokenizer, n: int, *, median: int, cap: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, text) pairs: per response its reasoning, its answer and both (the paper's three modes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = ["the", "step", "first", "then", "we", "compute", "value", "because", "request", "answer", "so"]
    unit = len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) / len(words)
    pairs = []
    for i in range(n):
        k = int(min(cap, max(16, rng.lognormal(np.log(median), 0.8))))
        reasoning = " ".join(rng.choice(words, size=max(1, int(k / unit))))
        answer = " ".join(rng.choice(words, size=max(1, int(150 / unit))))
        prompt = f"Request {i}: explain how this works."
        pairs += [(prompt, reasoning), (prompt, answer), (prompt, f"{reasoning}\n\n{answer}")]
    return pairs


def main(argv: list[str] | None = None) -> int:
    import torch

    from falcon_h1r.random_checkpoints import (llama_guard_3_8b_config, llama_guard_style_tokenizer,
                                               save_random_checkpoint, tiny_llama_config)
    from falcon_h1r.safety import LlamaGuardJudge

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guard-dir", default=None, help="a local Llama-Guard-3-8B (default: random weights)")
    ap.add_argument("--layers", type=int, default=32, help="random weights: Llama-Guard-3-8B layers (0: tiny)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--responses", type=int, default=128, help="responses judged (x 3 texts each)")
    ap.add_argument("--median-tokens", type=int, default=2000, help="median reasoning length in tokens")
    ap.add_argument("--max-tokens", type=int, default=16384, help="longest reasoning in tokens")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-batch-tokens", type=int, default=131072)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="also write the record (with its provenance) to this .json file")
    args = ap.parse_args(argv)
    if args.out and not args.out.endswith(".json"):
        print(f"judge_throughput: --out {args.out!r}: expected a path ending in .json", file=sys.stderr)
        return 2
    if args.responses < 1 or not 0 <= args.layers <= 32:
        print("judge_throughput: --responses must be >= 1 and --layers in 0..32", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        path = args.guard_dir
        t0 = time.perf_counter()
        if path is None:
            tok = llama_guard_style_tokenizer(vocab_size=512)
            config = llama_guard_3_8b_config(args.layers) if args.layers else tiny_llama_config(len(tok))
            path = save_random_checkpoint(Path(tmp) / "guard", config, tok, dtype=torch.bfloat16 if args.device ==
                                          "cuda" else torch.float32, device=args.device)
        judge = LlamaGuardJudge(path, device=args.device, batch_size=args.batch_size,
                                max_new_tokens=args.max_new_tokens, max_batch_tokens=args.max_batch_tokens)
        load_s = time.perf_counter() - t0
        pairs = synthetic_pairs(judge.tokenizer, args.responses, median=args.median_tokens, cap=args.max_tokens,
                                seed=args.seed)
        judge.judge([pairs[0][0]], [pairs[0][1]])  # warm-up (kernels, allocator)
        judge.stats.update(calls=0, batches=0, input_tokens=0, padded_tokens=0, generated_tokens=0, seconds=0.0)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        verdicts = judge.judge([p for p, _ in pairs], [t for _, t in pairs])
        wall = time.perf_counter() - t0
    s = judge.stats
    calls_per_s = len(verdicts) / wall
    record = {
        "bench": "judge_throughput", "judge": "local checkpoint" if args.guard_dir else "random weights",
        "llama_guard_layers": None if args.guard_dir else args.layers, "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "calls": len(verdicts), "responses": args.responses, "wall_s": round(wall, 2), "load_s": round(load_s, 1),
        "calls_per_s": round(calls_per_s, 2), "input_tokens_per_s": round(s["input_tokens"] / wall, 1),
        "mean_input_tokens": round(s["input_tokens"] / s["calls"], 1),
        "padding_overhead": round(s["padded_tokens"] / s["input_tokens"] - 1, 4), "batches": s["batches"],
        "truncated": s["truncated"], "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens, "median_reasoning_tokens": args.median_tokens,
        "paper_calls": PAPER_CALLS, "paper_calls_hours_at_this_rate": round(PAPER_CALLS / calls_per_s / 3600, 2),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device == "cuda" else None,
        "unparsed_verdicts": sum(v.rule.startswith("llama-guard:unparsed") for v in verdicts),
    }
    print(f"{len(verdicts)} judge calls in {wall:.1f} s: {calls_per_s:.1f} calls/s, "
          f"{record['input_tokens_per_s']:.0f} input tokens/s, padding +{100 * record['padding_overhead']:.1f} %; "
          f"the paper's {PAPER_CALLS:,} calls would take {record['paper_calls_hours_at_this_rate']} h")
    if args.out:
        from falcon_h1r.env import env_snapshot
        from falcon_h1r.results import write_json

        command = "python bench/judge_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_json(Path(args.out), {**record, "command": command,
                                    "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "provenance": env_snapshot()})
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
