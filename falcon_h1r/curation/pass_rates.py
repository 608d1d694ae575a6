"""Pass rates (paper §3.1): k sampled rollouts per problem from a model, graded, aggregated into the number
correct, the majority answer (canonical form) and how many rollouts hit the length limit."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from falcon_h1r.curation.grading import grade
from falcon_h1r.verify import Verdict, to_rational


@dataclass
class PassRate:
    id: str
    domain: str
    difficulty: int
    k: int
    correct: int
    majority_answer: str | None  # most frequent extracted answer (normalised), any rollout
    majority_freq: int
    n_truncated: int  # rollouts that hit the length limit
    mean_tokens: float
    reasons: dict[str, int] = field(default_factory=dict)  # grading outcome counts

    @property
    def pass_rate(self) -> float:
        return self.correct / self.k


def answer_key(domain: str, extracted: str | None) -> str | None:
    """A canonical form for majority voting: exact rationals for math, rounded numbers for science,
    whitespace-collapsed code."""
    if extracted is None:
        return None
    if domain == "math":
        from falcon_h1r.verify import normalize_math

        q = to_rational(extracted)
        return str(q) if q is not None else normalize_math(extracted)
    if domain == "science":
        from falcon_h1r.verify import parse_number

        x = parse_number(extracted)
        return f"{x:.4g}" if x is not None else extracted.strip()
    return re.sub(r"\s+", " ", extracted).strip()


def pass_rates_from_verdicts(problems: Sequence[dict[str, Any]], verdicts: Sequence[Verdict],
                             finish: Sequence[str], tokens: Sequence[int], k: int) -> list[PassRate]:
    """Aggregate ``k`` graded rollouts per problem (problem-major order) into pass rates."""
    if not (len(verdicts) == len(finish) == len(tokens) == len(problems) * k):
        raise ValueError(f"expected {len(problems) * k} rollouts ({len(problems)} problems x {k})")
    out = []
    for i, p in enumerate(problems):
        vs, fin, tok = verdicts[i * k:(i + 1) * k], finish[i * k:(i + 1) * k], tokens[i * k:(i + 1) * k]
        keys = Counter(a for a in (answer_key(p["domain"], v.extracted) for v in vs) if a is not None)
        maj, freq = keys.most_common(1)[0] if keys else (None, 0)
        out.append(PassRate(p["id"], p["domain"], int(p.get("difficulty", 0)), k, sum(v.correct for v in vs), maj, freq,
                            sum(f == "length" for f in fin), sum(tok) / k,
                            dict(Counter(v.reason.split(":")[0] for v in vs))))
    return out


def estimate_pass_rates(model: Any, tokenizer: Any, problems: Sequence[dict[str, Any]], gen: Any, *, k: int = 8,
                        seed: int = 0, progress: bool = True, **grade_kw: Any) -> list[PassRate]:
    """``k`` sampled rollouts per problem from ``model`` (batched ``generate``), graded.

    ``gen`` is the GenerationConfig to sample with (the paper: T 0.6, top-p 0.95, max 32K tokens).
    """
    # ``gen.engine`` picks the static-cache CUDA-graph engine on GPU, transformers' loop on CPU.
    from falcon_h1r.inference import generate

    from falcon_h1r.prompts import as_prompt_builder

    # the one prompt builder (a checkpoint's own chat template at the paper preset); responses are graded as
    # whole assistant turns, the thinking the prompt opened put back in front
    builder = as_prompt_builder(tokenizer)
    if builder is not None:
        prompts, tokenizer, full = builder.prompts(problems, k, stage="curation"), builder, builder.full_response
    else:
        prompts = [tokenizer.prompt(p["question"]) for p in problems for _ in range(k)]
        full = "<think>\n".__add__
    comps = generate(model, tokenizer, prompts, gen, seed=seed, progress=progress, desc=f"pass-rate rollouts (k={k})")
    expanded = [p for p in problems for _ in range(k)]
    verdicts = grade(expanded, [full(c.text) for c in comps], progress=progress, **grade_kw)
    return pass_rates_from_verdicts(problems, verdicts, [c.finish_reason for c in comps],
                                    [c.num_tokens for c in comps], k)


def pass_rate_histogram(rates: Sequence[PassRate], k: int) -> list[int]:
    """Problems per number of correct rollouts, 0..k."""
    counts = Counter(r.correct for r in rates)
    return [counts.get(c, 0) for c in range(k + 1)]
