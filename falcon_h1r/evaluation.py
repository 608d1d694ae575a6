"""Evaluation harness: pass@1 averaged over n samples, the paper's protocol (paper §4.1), and the one
held-out evaluation every section uses (:func:`evaluate`; the RL section passes its reward pool as the
``grader``, the SFT ablations ask :func:`evaluate_outcomes` for per-problem outcomes and output entropy).

Prompts and the thinking/answer split come from the one prompt builder (:mod:`falcon_h1r.prompts`): the
package's tokenizer at the tiny and small presets, a checkpoint's own chat template at the paper preset. A
response is graded on its answer part only (what follows the thinking; a response whose thinking never
closed has no answer) by :func:`falcon_h1r.verify.check` with the problem's ``answer_kind``.

At the tiny and small presets it scores held-out synthetic problems; at the paper preset
:func:`evaluate_benchmarks` runs the paper's benchmarks (read from local copies by
:func:`falcon_h1r.benchmarks.load_benchmark`) each with its own protocol
(:func:`falcon_h1r.benchmarks.eval_protocol`: samples, temperature, top-p, max length).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from falcon_h1r.benchmarks import EvalProtocol, eval_protocol
from falcon_h1r.config import GenerationConfig
from falcon_h1r.inference import Completion, generate
from falcon_h1r.prompts import PromptBuilder, as_prompt_builder, split_response
from falcon_h1r.verify import check

# Grades responses against their problems in one call: ``grader(problems, responses)`` -> one verdict per
# response, each with ``correct``, ``extracted`` and ``reason`` (``verify.Verdict``, ``rewards`` results).
# The responses are whole assistant turns (``PromptBuilder.full_response``: the opened thinking put back).
Grader = Callable[[Sequence[dict[str, Any]], Sequence[str]], Sequence[Any]]


# One name for callers that hold a tokenizer of either kind (the package's, or a checkpoint's builder).
prompt_builder = as_prompt_builder


@dataclass
class EvalReport:
    pass1: float  # mean over problems of (correct samples / n)
    pass1_by_domain: dict[str, float]
    pass1_by_difficulty: dict[str, float]
    n_problems: int
    n_samples: int
    mean_response_tokens: float
    per_problem: list[dict[str, Any]] = field(default_factory=list)
    ci95: float = 0.0  # normal-approximation half-width over problems

    def flat(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}pass1": self.pass1, f"{prefix}pass1_ci95": self.ci95}
        out.update({f"{prefix}pass1_{d}": v for d, v in self.pass1_by_domain.items()})
        return out


def score_completions(problems: Sequence[dict[str, Any]], completions: Sequence[Completion], n: int, *,
                      grader: Grader | None = None, builder: PromptBuilder | None = None,
                      **check_kw: Any) -> EvalReport:
    """Grade ``n`` completions per problem (problem-major order) and aggregate pass@1.

    Each completion is split by ``builder`` (default: the package's format, the text starting inside
    ``<think>``) and its answer part goes through ``verify.check(problem, answer, **check_kw)``; ``grader``
    instead grades the whole responses in one call (e.g. the RL reward pool: parallel, memoized sandbox)."""
    if len(completions) != len(problems) * n:
        raise ValueError(f"expected {len(problems) * n} completions ({len(problems)} problems x {n}), "
                         f"got {len(completions)}")
    repeated = [p for p in problems for _ in range(n)]
    if grader is not None:
        full = builder.full_response if builder is not None else (lambda text: "<think>\n" + text)
        verdicts = list(grader(repeated, [full(c.text) for c in completions]))
    else:
        split = builder.split if builder is not None else split_response
        verdicts = [check(p, split(c.text).answer, **check_kw) for p, c in zip(repeated, completions)]
    per_problem = []
    for i, p in enumerate(problems):
        comps, vs = completions[i * n:(i + 1) * n], verdicts[i * n:(i + 1) * n]
        per_problem.append({
            "id": p["id"], "domain": p["domain"], "difficulty": p["difficulty"],
            "correct": sum(v.correct for v in vs), "n": n,
            "tokens": [c.num_tokens for c in comps], "answers": [v.extracted for v in vs],
            "reasons": Counter(v.reason.split(":")[0] for v in vs),
        })
    return _aggregate(per_problem, n)


def _aggregate(per_problem: list[dict[str, Any]], n: int) -> EvalReport:
    rates = [r["correct"] / r["n"] for r in per_problem]
    by_dom, by_diff = defaultdict(list), defaultdict(list)
    for r, rate in zip(per_problem, rates):
        by_dom[r["domain"]].append(rate)
        by_diff[str(r["difficulty"])].append(rate)
    mean = sum(rates) / max(1, len(rates))
    var = sum((x - mean) ** 2 for x in rates) / max(1, len(rates) - 1)
    toks = [t for r in per_problem for t in r["tokens"]]
    return EvalReport(
        pass1=mean, pass1_by_domain={d: sum(v) / len(v) for d, v in sorted(by_dom.items())},
        pass1_by_difficulty={d: sum(v) / len(v) for d, v in sorted(by_diff.items())},
        n_problems=len(per_problem), n_samples=n, mean_response_tokens=sum(toks) / max(1, len(toks)),
        per_problem=per_problem, ci95=1.96 * math.sqrt(var / max(1, len(rates))),
    )


def _sample(model: Any, tokenizer: Any, problems: Sequence[dict[str, Any]], gen: GenerationConfig, n: int, *,
            seed: int, progress: bool, desc: str) -> tuple[list[str], list[Completion]]:
    builder = prompt_builder(tokenizer)
    if builder is not None:
        prompts = builder.prompts(problems, n, stage="evaluation")
        return prompts, generate(model, builder, prompts, gen, seed=seed, progress=progress, desc=desc)
    prompts = [tokenizer.prompt(p["question"]) for p in problems for _ in range(n)]
    return prompts, generate(model, tokenizer, prompts, gen, seed=seed, progress=progress, desc=desc)


def evaluate(model: Any, tokenizer: Any, problems: Sequence[dict[str, Any]], gen: GenerationConfig, *,
             n_samples: int, seed: int = 0, progress: bool = True, grader: Grader | None = None,
             desc: str = "eval", **check_kw: Any) -> EvalReport:
    """pass@1 over ``n_samples`` sampled responses per problem (greedy when temperature is 0): the one
    held-out evaluation, prompts and answer split by ``tokenizer``'s prompt builder. ``grader``: see
    :func:`score_completions`."""
    _, comps = _sample(model, tokenizer, problems, gen, n_samples, seed=seed, progress=progress, desc=desc)
    return score_completions(problems, comps, n_samples, grader=grader, builder=prompt_builder(tokenizer),
                             **check_kw)


def evaluate_outcomes(model: torch.nn.Module, tokenizer: Any, problems: Sequence[dict[str, Any]],
                      gen: GenerationConfig, seed: int) -> dict[str, Any]:
    """:func:`evaluate` with one response per problem, flattened for result rows: pass@1 (by domain and
    difficulty), each problem's outcome (the unit paired statistics pair on) and the output entropy."""
    prompts, comps = _sample(model, tokenizer, problems, gen, 1, seed=seed, progress=False, desc="generate")
    rep = score_completions(problems, comps, 1, builder=prompt_builder(tokenizer))
    return {"acc": rep.pass1, **{f"acc_{d}": v for d, v in rep.pass1_by_domain.items()},
            **{f"acc_level{k}": v for k, v in rep.pass1_by_difficulty.items()},
            "entropy": output_entropy(model, tokenizer, prompts, comps),
            "mean_response_tokens": rep.mean_response_tokens,
            "outcomes": [int(r["correct"]) for r in rep.per_problem],
            "outcome_levels": [int(r["difficulty"]) for r in rep.per_problem],
            "outcome_domains": [r["domain"] for r in rep.per_problem]}


def output_entropy(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str],
                   completions: Sequence[Completion]) -> float:
    """Mean entropy (nats) of the model's next-token distribution over its own generated tokens,
    computed exactly (full vocabulary) in one teacher-forced pass."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(prompts), 64):
            rows = [(tokenizer.encode(p), list(c.token_ids)) for p, c in zip(prompts[s:s + 64], completions[s:s + 64])]
            rows = [(p, c) for p, c in rows if c]
            if not rows:
                continue
            width = max(len(p) + len(c) for p, c in rows)
            ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
            attn = torch.zeros_like(ids)
            gen = torch.zeros(ids.shape, dtype=torch.bool)
            for i, (p, c) in enumerate(rows):
                ids[i, :len(p) + len(c)] = torch.tensor(p + c)
                attn[i, :len(p) + len(c)] = 1
                gen[i, len(p) - 1:len(p) + len(c) - 1] = True  # positions whose prediction is a generated token
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).logits.float()
            logp = torch.log_softmax(logits, -1)
            ent = -(logp.exp() * logp).sum(-1).cpu()
            total += float(ent[gen].sum())
            count += int(gen.sum())
    return total / max(count, 1)


def pass1_callback(tokenizer: Any, problems: Sequence[dict[str, Any]], gen: GenerationConfig, *,
                   model: torch.nn.Module, n_samples: int = 1, seed: int = 0) -> Callable[[int], dict[str, Any]]:
    """An ``eval_fn`` for ``sft.train_sft``: pass@1 of ``model`` (unwrapped from DDP / DeepSpeed) on
    held-out problems with :func:`evaluate`."""
    from falcon_h1r.distributed import unwrap

    def run(step: int) -> dict[str, Any]:
        rep = evaluate(unwrap(model), tokenizer, problems, gen, n_samples=n_samples, seed=seed, progress=False)
        return {"pass1": rep.pass1, **{f"pass1_{d}": v for d, v in rep.pass1_by_domain.items()}}

    return run


# ============================================================================== the paper's benchmarks
@dataclass
class BenchmarkResult:
    """One benchmark run with the paper's protocol (possibly capped for a smoke run)."""

    name: str
    protocol: EvalProtocol  # the paper's samples, temperature, top-p and max length
    n_samples: int  # used (the protocol's, or fewer when capped)
    max_new_tokens: int  # used
    report: EvalReport

    @property
    def capped(self) -> bool:
        return self.n_samples < self.protocol.n_samples or self.max_new_tokens < self.protocol.max_response_len

    def record(self) -> dict[str, Any]:
        """Flat JSON-able fields (pass@1 as a fraction, per-problem rates, what was capped)."""
        rep = self.report
        return {"benchmark": self.name, "pass1": rep.pass1, "pass1_ci95": rep.ci95, "n_problems": rep.n_problems,
                "n_samples": self.n_samples, "protocol_n_samples": self.protocol.n_samples,
                "max_new_tokens": self.max_new_tokens, "protocol_max_response_len": self.protocol.max_response_len,
                "temperature": self.protocol.temperature, "top_p": self.protocol.top_p, "capped": self.capped,
                "mean_response_tokens": rep.mean_response_tokens,
                "reasons": dict(sum((Counter(r["reasons"]) for r in rep.per_problem), Counter())),
                "per_problem": {r["id"]: r["correct"] / r["n"] for r in rep.per_problem}}


def benchmark_generation(name: str, base: GenerationConfig, *, max_samples: int | None = None,
                         max_new_tokens: int | None = None) -> tuple[GenerationConfig, int, EvalProtocol]:
    """The paper's sampling for benchmark ``name`` (``papers/eval_protocol.csv``): ``base`` with the protocol's
    temperature, top-p and max length, and its samples per query. ``max_samples`` / ``max_new_tokens`` cap
    the protocol (a smoke run); at the paper's values they change nothing."""
    proto = eval_protocol(name)
    n = proto.n_samples if max_samples is None else max(1, min(proto.n_samples, max_samples))
    length = proto.max_response_len if max_new_tokens is None else max(1, min(proto.max_response_len, max_new_tokens))
    return replace(base, temperature=proto.temperature, top_p=proto.top_p, max_new_tokens=length), n, proto


def evaluate_benchmarks(model: Any, tokenizer: Any, benchmarks: Mapping[str, Sequence[dict[str, Any]]],
                        base: GenerationConfig, *, max_samples: int | None = None, max_new_tokens: int | None = None,
                        seed: int = 0, progress: bool = True, **check_kw: Any) -> dict[str, BenchmarkResult]:
    """pass@1 of ``model`` on each benchmark (name -> its problem records, from
    :func:`falcon_h1r.benchmarks.load_benchmark`) with that benchmark's protocol (:func:`benchmark_generation`),
    graded by :func:`falcon_h1r.verify.check` on the prompt builder's answer part (code: the sandbox)."""
    out = {}
    for name, problems in benchmarks.items():
        gen, n, proto = benchmark_generation(name, base, max_samples=max_samples, max_new_tokens=max_new_tokens)
        rep = evaluate(model, tokenizer, problems, gen, n_samples=n, seed=seed, progress=progress, desc=name,
                       **check_kw)
        out[name] = BenchmarkResult(name, proto, n, gen.max_new_tokens, rep)
    return out


def majority_answer_baseline(train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]]) -> float:
    """Accuracy of always answering each domain's most frequent training answer: the 'chance' line."""
    common = {}
    for d in {p["domain"] for p in train}:
        counts = Counter(p["answer"] for p in train if p["domain"] == d)
        common[d] = counts.most_common(1)[0][0]
    hits = [p["answer"] == common.get(p["domain"]) for p in test]
    return sum(hits) / max(1, len(hits))


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy ``correct / n``: unlike the normal approximation it
    stays inside [0, 1] and is honest at 0 or a few successes, where tiny-model accuracies live."""
    if n <= 0:
        raise ValueError(f"wilson_interval: n must be positive, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"wilson_interval: correct must be in [0, n={n}], got {correct}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


__all__ = ["BenchmarkResult", "EvalReport", "Grader", "benchmark_generation", "evaluate", "evaluate_benchmarks",
           "evaluate_outcomes", "majority_answer_baseline", "output_entropy", "pass1_callback", "prompt_builder",
           "score_completions", "wilson_interval"]
