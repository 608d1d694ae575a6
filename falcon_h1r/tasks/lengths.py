"""Trace lengths in tokens, per domain and level, for choosing a preset's difficulties and lengths.

Trains the BPE tokenizer the way the shared stages do (questions and mixed-style teacher traces of
the training set) and reports p10 / median / p90 / max of the SFT traces (the assistant turn)::

    python -m falcon_h1r.tasks.lengths --difficulties 1-10 --per-domain 3000 --vocab 1024

prints one JSON record: the overall summary and one row per (domain, level).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Any, Sequence

from falcon_h1r.tasks import (DOMAINS, LEVELS, generate_split, length_summary, teacher_records,
                              trace_token_lengths)


def parse_levels(text: str) -> list[int]:
    """``"1-4"`` or ``"1,2,5"`` -> a list of levels."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    bad = [v for v in out if v not in LEVELS]
    if bad or not out:
        raise ValueError(f"levels {text!r} not accepted; use levels from {LEVELS[0]} to {LEVELS[-1]}, e.g. 1-4")
    return out


def trace_length_report(domains: Sequence[str], difficulties: Sequence[int], per_domain: int, vocab_size: int,
                        style: str = "stepwise", seed: int = 0) -> dict[str, Any]:
    """Length summaries of the SFT traces of a training split, overall and per (domain, level)."""
    from falcon_h1r.tokenizer import format_response, train_tokenizer

    problems = generate_split(list(domains), list(difficulties), per_domain, "train", seed)
    corpus_recs = teacher_records(problems, "mixed", seed)
    tok = train_tokenizer([r["question"] for r in corpus_recs]
                          + [format_response(r["reasoning"], r["final"]) for r in corpus_recs], vocab_size)
    recs = teacher_records(problems, style, seed)
    lengths = trace_token_lengths(recs, tok)
    prompt = [len(tok.encode(tok.prompt(p["question"]))) for p in problems]
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r, n in zip(recs, lengths):
        groups[(r["domain"], r["difficulty"])].append(n)
    return {"style": style, "vocab_size": vocab_size, "per_domain": per_domain, "difficulties": list(difficulties),
            "overall": length_summary(lengths), "prompt_tokens_max": max(prompt),
            "by_domain_level": [{"domain": d, "level": lv, **length_summary(v)} for (d, lv), v in sorted(groups.items())]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--difficulties", default="1-10", help="levels, e.g. 1-4 or 1,3,5")
    ap.add_argument("--domains", default=",".join(DOMAINS))
    ap.add_argument("--per-domain", type=int, default=600)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--style", default="stepwise", choices=["stepwise", "terse", "mixed"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        levels = parse_levels(args.difficulties)
        domains = [d for d in args.domains.split(",") if d]
        if not domains or any(d not in DOMAINS for d in domains):
            raise ValueError(f"domains {args.domains!r} not accepted; use a subset of {','.join(DOMAINS)}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(trace_length_report(domains, levels, args.per_domain, args.vocab, args.style, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
