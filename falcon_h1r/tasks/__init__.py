"""Procedurally generated, verifiable reasoning problems in the paper's three domains, and the
programmatic teachers that write ``<think>`` traces for them.

The paper distils long traces from large teacher models over public math, code and science sets;
here, so the whole pipeline runs anywhere, problems are generated from a seed and every answer is
checkable by program. What matters for the paper's effects is that reasoning takes real steps:

- math (:mod:`.math`): long multiplication, exact division, sums of fractions, linear equations
  and 2x2 systems, every carry, partial product and rewriting step written out;
- code (:mod:`.code`): a multi-step ``solve(xs)`` specified in words; the teacher traces the example
  through the program's state before writing it; hidden ``assert`` tests reject one-slip variants;
- science (:mod:`.science`): unit-conversion chains and chained formulas, each conversion written.

Difficulty levels run from 1 to 10 (``LEVELS``); a trace's length grows with the level (stepwise
teacher, 1,024-token BPE: median about 90-220 tokens at level 1, 750-900 at level 10, the longest
about 1,600), so a preset picks its lengths
and difficulty with ``tasks.difficulties`` (one list, or one list per domain to calibrate each domain
on its own). Errors a model makes on such traces are local slips in
long computations, which differ between samples; teachers can make the same kind of slip
(``TeacherNoise.slip``). Teacher styles: see :mod:`.teachers`.

A problem is a plain dict (so it flows through ``datasets``)::

    {"id": "math-train-000012", "domain": "math", "difficulty": 2, "split": "train",
     "question": "...", "answer": "\\frac{17}{3}",
     # code only: "tests": ["assert solve([3, 1]) == 9", ...], "language": "python"
     # science only: "tolerance": 0.01, "unit": "m/s"
     # private (dropped by public()): "spec": the generator's parameters the teachers solve from}
"""

from __future__ import annotations

import random
import statistics
from typing import Any, Callable, Mapping, Sequence

from falcon_h1r.tasks.code import make_code
from falcon_h1r.tasks.math import make_math
from falcon_h1r.tasks.science import make_science
from falcon_h1r.tasks.teachers import STYLES, TeacherNoise, style_for, teacher_records, teacher_trace

# Bump when generation changes what a seed produces: cached tokenizers and models are keyed on it.
GENERATOR_VERSION = 3
DOMAINS = ("math", "code", "science")
LEVELS = tuple(range(1, 11))
_MAKERS: dict[str, Callable[[random.Random, int], dict[str, Any]]] = {
    "math": make_math, "code": make_code, "science": make_science}
_PRIVATE_KEYS = ("spec",)


def make_problem(domain: str, difficulty: int, rng: random.Random) -> dict[str, Any]:
    """One problem of ``domain`` at level ``difficulty`` (1-10), drawn from ``rng``."""
    if domain not in _MAKERS:
        raise ValueError(f"unknown domain {domain!r}; accepted: {', '.join(DOMAINS)}")
    if difficulty not in LEVELS:
        raise ValueError(f"difficulty {difficulty!r} not accepted; use an integer level from {LEVELS[0]} to "
                         f"{LEVELS[-1]}")
    p = _MAKERS[domain](rng, difficulty)
    p.update(domain=domain, difficulty=difficulty)
    return p


def public(problem: dict[str, Any]) -> dict[str, Any]:
    """The record without the generator's private working (its spec), as stored and shown."""
    return {k: v for k, v in problem.items() if k not in _PRIVATE_KEYS}


def family_of(problem: dict[str, Any]) -> str | None:
    """The generator family (``mul``, ``linear``, ``pipeline``, ``speed``, ...) of a generated problem."""
    spec = problem.get("spec")
    return spec.get("family") if isinstance(spec, dict) else None


Difficulties = Sequence[int] | Mapping[str, Sequence[int]]


def levels_for(difficulties: Difficulties, domain: str) -> list[int]:
    """The levels of one domain: ``difficulties`` is one list for every domain, or a list per domain
    (so each domain's difficulty can be calibrated on its own)."""
    if isinstance(difficulties, Mapping):
        if domain not in difficulties:
            raise ValueError(f"difficulties: no levels for domain {domain!r}; give a list for each of "
                             f"{', '.join(DOMAINS)} or one list for all")
        levels = list(difficulties[domain])
    else:
        levels = list(difficulties)
    if not levels:
        raise ValueError(f"difficulties: an empty list for {domain!r}; use levels from {LEVELS[0]} to {LEVELS[-1]}")
    return levels


def generate_split(domains: list[str] | tuple[str, ...], difficulties: Difficulties, n_per_domain: int,
                   split: str, seed: int, exclude_questions: set[str] | None = None) -> list[dict[str, Any]]:
    """``n_per_domain`` unique problems per domain, spread evenly over its difficulties, deterministic in seed."""
    out = []
    exclude = exclude_questions or set()
    for domain in domains:
        levels = levels_for(difficulties, domain)
        rng = random.Random(f"{seed}-{split}-{domain}")
        seen: set[str] = set()
        count, tries = 0, 0
        while count < n_per_domain:
            tries += 1
            if tries > 200 * n_per_domain + 1000:
                raise RuntimeError(f"could not draw {n_per_domain} unique {domain} problems; lower the count")
            difficulty = levels[count % len(levels)]
            p = make_problem(domain, difficulty, rng)
            if p["question"] in seen or p["question"] in exclude:
                continue
            seen.add(p["question"])
            p.update(id=f"{domain}-{split}-{count:06d}", split=split)
            out.append(p)
            count += 1
    return out


def make_task_sets(domains: list[str], difficulties: Difficulties, train_per_domain: int, test_per_domain: int,
                   seed: int) -> dict[str, list[dict[str, Any]]]:
    """Train and held-out test sets that never share a question (the test set is drawn first)."""
    test = generate_split(domains, difficulties, test_per_domain, "test", seed)
    test_q = {p["question"] for p in test}
    train = generate_split(domains, difficulties, train_per_domain, "train", seed, exclude_questions=test_q)
    return {"train": train, "test": test}


def trace_token_lengths(records: Sequence[dict[str, Any]], tokenizer: Any) -> list[int]:
    """Tokens of each record's assistant turn (reasoning, ``</think>``, final answer), as SFT sees it."""
    from falcon_h1r.tokenizer import format_response

    return [len(tokenizer.encode(format_response(r["reasoning"], r["final"]))) for r in records]


def length_summary(lengths: Sequence[int]) -> dict[str, float]:
    """p10, median, p90 and max of a list of trace lengths (tokens)."""
    if not lengths:
        raise ValueError("length_summary: no lengths given")
    q = statistics.quantiles(lengths, n=10, method="inclusive") if len(lengths) > 1 else [lengths[0]] * 9
    return {"n": len(lengths), "p10": q[0], "median": statistics.median(lengths), "p90": q[8],
            "max": max(lengths), "mean": statistics.fmean(lengths)}


__all__ = ["DOMAINS", "GENERATOR_VERSION", "LEVELS", "STYLES", "TeacherNoise", "family_of", "generate_split",
           "length_summary", "levels_for", "make_problem", "make_task_sets", "public", "style_for", "teacher_records",
           "teacher_trace", "trace_token_lengths"]
