"""Evaluation harness: pass@1 averaged over n samples, the paper's protocol (paper §4.1), and the one
held-out evaluation every section uses (:func:`evaluate`; the RL section passes its reward pool as the
``grader``, the SFT ablations ask :func:`evaluate_outcomes` for per-problem outcomes and output entropy).

At the tiny and small presets it scores held-out synthetic problems; at the paper preset it reads the
paper's benchmarks from local copies (``datasets.load_from_disk`` or JSONL files) and says clearly
what is missing when they are not there: nothing is downloaded.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from falcon_h1r.config import GenerationConfig
from falcon_h1r.inference import Completion, generate
from falcon_h1r.verify import check

# Grades responses against their problems in one call: ``grader(problems, responses)`` -> one verdict per
# response, each with ``correct``, ``extracted`` and ``reason`` (``verify.Verdict``, ``rewards`` results).
Grader = Callable[[Sequence[dict[str, Any]], Sequence[str]], Sequence[Any]]

# Samples per query and max response length per benchmark (paper §4.1; also papers/eval_protocol.csv).
PAPER_PROTOCOL: dict[str, tuple[int, int]] = {
    "aime24": (16, 65536), "aime25": (16, 65536), "amo_bench": (16, 65536), "hmmt25": (16, 65536),
    "gpqa_diamond": (5, 32768), "livecodebench_v6": (3, 65536), "mmlu_pro": (3, 32768),
    "scicode": (1, 65536), "hle": (1, 65536), "math500": (1, 32768), "ifbench": (1, 32768),
}
# Which of our verifiers grades each locally stored benchmark (the others need their own harness:
# agentic ones such as tau2-Telecom and Terminal-Bench are out of scope here).
BENCHMARK_DOMAIN = {"aime24": "math", "aime25": "math", "amo_bench": "math", "hmmt25": "math", "math500": "math",
                    "gpqa_diamond": "science", "livecodebench_v6": "code"}


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
                      grader: Grader | None = None, **check_kw: Any) -> EvalReport:
    """Grade ``n`` completions per problem (problem-major order) and aggregate pass@1.

    ``grader`` grades them all in one call (e.g. the RL reward pool: parallel, memoized sandbox); without
    one each response goes through ``verify.check(problem, response, **check_kw)``."""
    if len(completions) != len(problems) * n:
        raise ValueError(f"expected {len(problems) * n} completions ({len(problems)} problems x {n}), "
                         f"got {len(completions)}")
    responses = ["<think>\n" + c.text for c in completions]
    if grader is not None:
        verdicts = list(grader([p for p in problems for _ in range(n)], responses))
    else:
        verdicts = [check(p, r, **check_kw) for p, r in zip((p for p in problems for _ in range(n)), responses)]
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
    prompts = [tokenizer.prompt(p["question"]) for p in problems for _ in range(n)]
    return prompts, generate(model, tokenizer, prompts, gen, seed=seed, progress=progress, desc=desc)


def evaluate(model: Any, tokenizer: Any, problems: Sequence[dict[str, Any]], gen: GenerationConfig, *,
             n_samples: int, seed: int = 0, progress: bool = True, grader: Grader | None = None,
             desc: str = "eval", **check_kw: Any) -> EvalReport:
    """pass@1 over ``n_samples`` sampled responses per problem (greedy when temperature is 0): the one
    held-out evaluation. ``grader``: see :func:`score_completions`."""
    _, comps = _sample(model, tokenizer, problems, gen, n_samples, seed=seed, progress=progress, desc=desc)
    return score_completions(problems, comps, n_samples, grader=grader, **check_kw)


def evaluate_outcomes(model: torch.nn.Module, tokenizer: Any, problems: Sequence[dict[str, Any]],
                      gen: GenerationConfig, seed: int) -> dict[str, Any]:
    """:func:`evaluate` with one response per problem, flattened for result rows: pass@1 (by domain and
    difficulty), each problem's outcome (the unit paired statistics pair on) and the output entropy."""
    prompts, comps = _sample(model, tokenizer, problems, gen, 1, seed=seed, progress=False, desc="generate")
    rep = score_completions(problems, comps, 1)
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


def paper_generation_config(benchmark: str, base: GenerationConfig) -> tuple[GenerationConfig, int]:
    """The paper's sampling for one benchmark: T 0.6, top-p 0.95, its n and max length."""
    if benchmark not in PAPER_PROTOCOL:
        raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(sorted(PAPER_PROTOCOL))}")
    n, max_len = PAPER_PROTOCOL[benchmark]
    return replace(base, temperature=0.6, top_p=0.95, max_new_tokens=max_len), n


def load_benchmark(name: str, root: str | Path | None) -> list[dict[str, Any]]:
    """A paper benchmark from a local directory, as task records (``question``, ``answer``, ``domain``).

    Accepted layouts under ``root``: ``<name>/`` saved by ``datasets.save_to_disk``, or ``<name>.jsonl``
    with ``question``/``problem`` and ``answer`` fields.
    """
    if name not in BENCHMARK_DOMAIN:
        raise ValueError(f"benchmark {name!r} has no local grader here; gradable: {', '.join(sorted(BENCHMARK_DOMAIN))}")
    if root is None:
        raise FileNotFoundError(f"benchmark {name!r}: set eval.benchmark_dir to a local directory holding "
                                f"{name}/ (datasets.save_to_disk) or {name}.jsonl; nothing is downloaded")
    root = Path(root).expanduser()
    rows: list[dict[str, Any]]
    if (root / name).is_dir():
        from datasets import load_from_disk

        rows = [dict(r) for r in load_from_disk(str(root / name))]
    elif (root / f"{name}.jsonl").exists():
        rows = [json.loads(line) for line in (root / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    else:
        raise FileNotFoundError(f"benchmark {name!r} not found under {root}: expected {root / name}/ "
                                f"(datasets.save_to_disk) or {root / (name + '.jsonl')}; nothing is downloaded")
    out = []
    for i, r in enumerate(rows):
        q = r.get("question") or r.get("problem") or r.get("prompt")
        if q is None or "answer" not in r:
            raise ValueError(f"{name} row {i}: needs a question/problem and an answer field, has {sorted(r)}")
        out.append({"id": f"{name}-{i}", "domain": BENCHMARK_DOMAIN[name], "difficulty": 0, "question": q,
                    "answer": str(r["answer"]), **({"tests": r["tests"]} if "tests" in r else {})})
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


__all__ = ["BENCHMARK_DOMAIN", "EvalReport", "Grader", "PAPER_PROTOCOL", "evaluate", "evaluate_outcomes",
           "load_benchmark", "majority_answer_baseline", "output_entropy", "paper_generation_config",
           "pass1_callback", "score_completions", "wilson_interval"]
