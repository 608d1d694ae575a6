"""Procedurally generated, verifiable reasoning problems in the paper's three domains, and the
programmatic teachers that write ``<think>`` traces for them.

The paper distils long traces from large teacher models over public math, code and science sets;
here, so the whole pipeline runs on a CPU, problems are generated from a seed and every answer is
checkable by program:

- math: multi-step integer arithmetic, fractions and small linear equations; answer in ``\\boxed{}``.
- code: write a small Python function ``solve``; hidden ``assert`` tests decide.
- science: formula-and-unit problems; a numeric answer in ``\\boxed{}`` checked with a tolerance.

Each domain has difficulty levels 1-3. Teachers come in two styles (``stepwise`` and ``terse``) so
the single- vs multi-teacher ablation has two genuinely different reasoning styles to mix.
Teachers can also be made imperfect (wrong steps, missing box, bad code, runaway length) so the
curation filters have real work; a clean teacher is the default.

A problem is a plain dict (so it flows through ``datasets``)::

    {"id": "math-train-000012", "domain": "math", "difficulty": 2, "split": "train",
     "question": "...", "answer": "17/3",
     # code only: "tests": ["assert solve(3) == 9", ...], "language": "python"
     # science only: "tolerance": 0.01, "unit": "m/s"}
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

# Bump when generation changes what a seed produces: cached tokenizers and models are keyed on it.
GENERATOR_VERSION = 2
DOMAINS = ("math", "code", "science")
STYLES = ("stepwise", "terse")


def _frac_tex(f: Fraction) -> str:
    if f.denominator == 1:
        return str(f.numerator)
    sign = "-" if f < 0 else ""
    return f"{sign}\\frac{{{abs(f.numerator)}}}{{{f.denominator}}}"


def _fmt_num(x: float) -> str:
    """Numbers as a teacher writes them: integers plain, else up to 3 significant decimals."""
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    return f"{x:.4g}"


# ============================================================================== math
def _math_problem(rng: random.Random, difficulty: int) -> dict[str, Any]:
    if difficulty == 1:
        a, b = rng.randint(2, 49), rng.randint(2, 49)
        op = rng.choice("+-")
        ans = a + b if op == "+" else a - b
        return {"question": f"Compute {a} {op} {b}.", "answer": str(ans),
                "steps": [("op", a, op, b, ans)]}
    if difficulty == 2:
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 60)
        op = rng.choice("+-")
        p = a * b
        ans = p + c if op == "+" else p - c
        return {"question": f"Compute {a} * {b} {op} {c}.", "answer": str(ans),
                "steps": [("op", a, "*", b, p), ("op", p, op, c, ans)]}
    kind = rng.choice(["frac", "linear"])
    if kind == "frac":
        b, d = rng.randint(2, 9), rng.randint(2, 9)
        a, c = rng.randint(1, b * 2), rng.randint(1, d * 2)
        total = Fraction(a, b) + Fraction(c, d)
        common = b * d
        return {"question": f"Compute {a}/{b} + {c}/{d} as a reduced fraction.", "answer": _frac_tex(total),
                "steps": [("frac", a, b, c, d, common, a * d + c * b, total)]}
    x = rng.randint(-9, 12)
    a = rng.choice([v for v in range(-6, 8) if v not in (0, 1)])
    b = rng.randint(-20, 20)
    c = a * x + b
    return {"question": f"Solve for x: {a}x + {b} = {c}.", "answer": str(x),
            "steps": [("linear", a, b, c, c - b, x)]}


def _math_trace(p: dict[str, Any], style: str) -> tuple[str, str]:
    lines = []
    for i, st in enumerate(p["steps"]):
        if st[0] == "op":
            _, x, op, y, r = st
            lines.append(f"{x} {op} {y} = {r}." if style == "terse"
                         else f"{'First' if i == 0 else 'Then'}, {x} {op} {y}. Working it out: {x} {op} {y} = {r}.")
        elif st[0] == "frac":
            _, a, b, c, d, common, num, total = st
            if style == "terse":
                lines.append(f"{a}/{b} + {c}/{d} = {num}/{common} = {_frac_tex(total)}.")
            else:
                lines.append(f"Common denominator {b} * {d} = {common}.")
                lines.append(f"Numerator {a} * {d} + {c} * {b} = {num}.")
                lines.append(f"So {num}/{common}, which reduces to {_frac_tex(total)}.")
        elif st[0] == "linear":
            _, a, b, c, rhs, x = st
            if style == "terse":
                lines.append(f"{a}x = {c} - {b} = {rhs}, x = {x}.")
            else:
                lines.append(f"Move {b} to the right: {a}x = {c} - {b} = {rhs}.")
                lines.append(f"Divide by {a}: x = {rhs} / {a} = {x}.")
    if style == "stepwise":
        lines.append("Check: the result follows from each step above.")
    final = f"The answer is \\boxed{{{p['answer']}}}."
    return "\n".join(lines), final


# ============================================================================== code
_CODE_FAMILIES: list[tuple[int, str, Callable[[random.Random], dict[str, Any]]]] = []


def _code_family(difficulty: int, name: str):
    def deco(fn):
        _CODE_FAMILIES.append((difficulty, name, fn))
        return fn
    return deco


@_code_family(1, "affine")
def _code_affine(rng):
    k, m = rng.randint(2, 9), rng.randint(1, 199)
    return {"question": f"Write a Python function solve(x) that returns {k} * x + {m}.",
            "body": f"    return {k} * x + {m}",
            "plan": [f"Multiply x by {k}.", f"Add {m}."], "fn": lambda x: k * x + m,
            "inputs": [rng.randint(-50, 50) for _ in range(5)]}


@_code_family(1, "modulo")
def _code_mod(rng):
    k, m = rng.randint(2, 9), rng.randint(1, 99)
    return {"question": f"Write a Python function solve(x) that returns the remainder of x divided by {k}, plus {m}.",
            "body": f"    return x % {k} + {m}", "plan": [f"Use the modulo operator with {k}.", f"Add {m}."],
            "fn": lambda x: x % k + m, "inputs": [rng.randint(0, 200) for _ in range(5)]}


@_code_family(2, "sum_filter")
def _code_sum_filter(rng):
    k, m = rng.randint(2, 9), rng.randint(1, 99)
    return {"question": f"Write a Python function solve(xs) that returns {m} plus the sum of the numbers in the "
                        f"list xs that are divisible by {k}.",
            "body": f"    return {m} + sum(v for v in xs if v % {k} == 0)",
            "plan": ["Loop over the list.", f"Keep values divisible by {k}.", "Add them up.", f"Add {m}."],
            "fn": lambda xs: m + sum(v for v in xs if v % k == 0),
            "inputs": [[rng.randint(0, 30) for _ in range(rng.randint(0, 6))] for _ in range(5)]}


@_code_family(2, "count_above")
def _code_count(rng):
    t, m = rng.randint(0, 20), rng.randint(1, 99)
    return {"question": f"Write a Python function solve(xs) that returns {m} plus how many numbers in the list xs "
                        f"are greater than {t}.",
            "body": f"    return {m} + sum(1 for v in xs if v > {t})",
            "plan": ["Loop over the list.", f"Count the values greater than {t}.", f"Add {m}."],
            "fn": lambda xs: m + sum(1 for v in xs if v > t),
            "inputs": [[rng.randint(0, 40) for _ in range(rng.randint(0, 6))] for _ in range(5)]}


@_code_family(3, "max_minus_min_scaled")
def _code_range(rng):
    k, m = rng.randint(2, 9), rng.randint(1, 99)
    return {"question": f"Write a Python function solve(xs) that returns {k} times the difference between the "
                        f"largest and the smallest number in the non-empty list xs, plus {m}.",
            "body": f"    return {k} * (max(xs) - min(xs)) + {m}",
            "plan": ["Find the largest value.", "Find the smallest value.", f"Multiply their difference by {k}.",
                     f"Add {m}."],
            "fn": lambda xs: k * (max(xs) - min(xs)) + m,
            "inputs": [[rng.randint(-20, 20) for _ in range(rng.randint(1, 6))] for _ in range(5)]}


@_code_family(3, "powers_of_odds")
def _code_sq(rng):
    k, m = rng.randint(1, 3), rng.randint(1, 99)
    return {"question": f"Write a Python function solve(xs) that returns {m} plus the sum of the odd numbers in the "
                        f"list xs each raised to the power {k}.",
            "body": f"    return {m} + sum(v ** {k} for v in xs if v % 2 == 1)",
            "plan": ["Loop over the list.", "Keep the odd values.", f"Raise each to the power {k} and add them up.",
                     f"Add {m}."],
            "fn": lambda xs: m + sum(v ** k for v in xs if v % 2 == 1),
            "inputs": [[rng.randint(-9, 15) for _ in range(rng.randint(0, 6))] for _ in range(5)]}


@_code_family(3, "count_between_scaled")
def _code_between(rng):
    lo = rng.randint(0, 10)
    hi, k = rng.randint(lo + 5, lo + 20), rng.randint(2, 9)
    return {"question": f"Write a Python function solve(xs) that returns {k} times how many numbers in the list xs "
                        f"lie between {lo} and {hi} inclusive.",
            "body": f"    return {k} * sum(1 for v in xs if {lo} <= v <= {hi})",
            "plan": ["Loop over the list.", f"Count values from {lo} to {hi}.", f"Multiply the count by {k}."],
            "fn": lambda xs: k * sum(1 for v in xs if lo <= v <= hi),
            "inputs": [[rng.randint(0, 40) for _ in range(rng.randint(0, 6))] for _ in range(5)]}


def _code_problem(rng: random.Random, difficulty: int) -> dict[str, Any]:
    families = [f for d, _, f in _CODE_FAMILIES if d == difficulty]
    spec = rng.choice(families)(rng)
    tests = [f"assert solve({x!r}) == {spec['fn'](x)!r}" for x in spec["inputs"]]
    code = f"def solve({'xs' if 'xs' in spec['body'] else 'x'}):\n{spec['body']}\n"
    return {"question": spec["question"], "answer": code, "tests": tests, "language": "python",
            "plan": spec["plan"]}


def _code_trace(p: dict[str, Any], style: str) -> tuple[str, str]:
    if style == "terse":
        reasoning = " ".join(p["plan"])
    else:
        reasoning = "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(p["plan"])) + \
                    "\nThe function should handle every input the same way."
    return reasoning, f"```python\n{p['answer']}```"


# ============================================================================== science
def _science_problem(rng: random.Random, difficulty: int) -> dict[str, Any]:
    if difficulty == 1:
        d, t = rng.randint(10, 200), rng.randint(2, 20)
        v = d / t
        return {"question": f"A cart travels {d} m in {t} s at constant speed. What is its speed in m/s?",
                "answer": _fmt_num(v), "unit": "m/s",
                "steps": [f"speed = distance / time = {d} / {t} = {_fmt_num(v)} m/s"]}
    if difficulty == 2:
        kind = rng.choice(["force", "ohm"])
        if kind == "force":
            m, a = rng.randint(1, 99), rng.randint(1, 12)
            return {"question": f"A {m} kg mass accelerates at {a} m/s^2. What net force acts on it, in N?",
                    "answer": str(m * a), "unit": "N", "steps": [f"F = m * a = {m} * {a} = {m * a} N"]}
        i, r = rng.randint(1, 20), rng.randint(2, 99)
        return {"question": f"A current of {i} A flows through a {r} ohm resistor. What is the voltage in V?",
                "answer": str(i * r), "unit": "V", "steps": [f"V = I * R = {i} * {r} = {i * r} V"]}
    kind = rng.choice(["kinetic", "kmh"])
    if kind == "kinetic":
        m, v = rng.randint(1, 40), rng.randint(1, 30)
        e = 0.5 * m * v * v
        return {"question": f"What is the kinetic energy, in J, of a {m} kg body moving at {v} m/s?",
                "answer": _fmt_num(e), "unit": "J",
                "steps": [f"v^2 = {v} * {v} = {v * v}", f"E = 0.5 * m * v^2 = 0.5 * {m} * {v * v} = {_fmt_num(e)} J"]}
    kmh = rng.randint(10, 300)
    ms = kmh / 3.6
    return {"question": f"Convert {kmh} km/h to m/s.", "answer": _fmt_num(ms), "unit": "m/s",
            "steps": ["1 km/h = 1000 m / 3600 s = 1/3.6 m/s", f"{kmh} / 3.6 = {_fmt_num(ms)} m/s"]}


def _science_trace(p: dict[str, Any], style: str) -> tuple[str, str]:
    if style == "terse":
        reasoning = "; ".join(p["steps"]) + "."
    else:
        reasoning = "Identify the formula and the given quantities.\n" + "\n".join(p["steps"]) + \
                    f"\nThe unit is {p['unit']}."
    return reasoning, f"The answer is \\boxed{{{p['answer']}}} {p['unit']}."


# ============================================================================== public API
_MAKERS = {"math": _math_problem, "code": _code_problem, "science": _science_problem}
_TRACERS = {"math": _math_trace, "code": _code_trace, "science": _science_trace}
_PRIVATE_KEYS = ("steps", "plan")


def make_problem(domain: str, difficulty: int, rng: random.Random) -> dict[str, Any]:
    if domain not in _MAKERS:
        raise ValueError(f"unknown domain {domain!r}; accepted: {', '.join(DOMAINS)}")
    if difficulty not in (1, 2, 3):
        raise ValueError(f"difficulty {difficulty!r} not accepted; use 1, 2 or 3")
    p = _MAKERS[domain](rng, difficulty)
    p.update(domain=domain, difficulty=difficulty)
    if domain == "science":
        p["tolerance"] = 0.01
    return p


def public(problem: dict[str, Any]) -> dict[str, Any]:
    """The record without the generator's private working (steps/plan), as stored and shown."""
    return {k: v for k, v in problem.items() if k not in _PRIVATE_KEYS}


@dataclass
class TeacherNoise:
    """How an imperfect teacher fails (rates per trace); all zero is a clean teacher."""

    wrong_answer: float = 0.0  # a plausible but wrong final answer
    missing_box: float = 0.0  # math/science final answer without \boxed{}
    empty_reasoning: float = 0.0
    bad_code: float = 0.0  # a syntax error in the code block
    wrong_language: float = 0.0  # JavaScript instead of Python
    runaway: float = 0.0  # the trace repeats itself far past any sane length


def teacher_trace(problem: dict[str, Any], style: str, rng: random.Random | None = None,
                  noise: TeacherNoise | None = None) -> dict[str, str]:
    """A teacher's response: ``{"reasoning": ..., "final": ..., "style": ...}`` (no chat markup)."""
    if style not in STYLES:
        raise ValueError(f"teacher style {style!r} not accepted; use one of {STYLES}")
    reasoning, final = _TRACERS[problem["domain"]](problem, style)
    noise = noise or TeacherNoise()
    rng = rng or random.Random(0)
    domain = problem["domain"]
    if rng.random() < noise.wrong_answer:
        if domain == "code":
            final = final.replace("return ", "return 1 + ", 1)
        else:
            wrong = str(_wrong_value(problem["answer"], rng))
            final = final.replace(f"\\boxed{{{problem['answer']}}}", f"\\boxed{{{wrong}}}")
    if domain != "code" and rng.random() < noise.missing_box:
        final = final.replace("\\boxed{", "").replace("}.", ".").replace("} ", " ")
    if rng.random() < noise.empty_reasoning:
        reasoning = ""
    if domain == "code" and rng.random() < noise.bad_code:
        final = final.replace("):\n", ")\n", 1)
    if domain == "code" and rng.random() < noise.wrong_language:
        final = "```javascript\nfunction solve(x) {\n  return x;\n}\n```"
    if rng.random() < noise.runaway:
        reasoning = (reasoning + "\nWait, let me re-check.\n") * 40
    return {"reasoning": reasoning, "final": final, "style": style}


def _wrong_value(answer: str, rng: random.Random) -> str:
    try:
        v = float(Fraction(answer)) if "\\frac" not in answer else None
    except ValueError:
        v = None
    if v is None:
        return str(rng.randint(2, 40))
    delta = rng.choice([-2, -1, 1, 2, 10])
    return _fmt_num(v + delta)


def generate_split(domains: list[str] | tuple[str, ...], difficulties: list[int], n_per_domain: int,
                   split: str, seed: int, exclude_questions: set[str] | None = None) -> list[dict[str, Any]]:
    """``n_per_domain`` unique problems per domain, spread evenly over difficulties, deterministic in seed."""
    out = []
    exclude = exclude_questions or set()
    for d_i, domain in enumerate(domains):
        rng = random.Random(f"{seed}-{split}-{domain}")
        seen: set[str] = set()
        count, tries = 0, 0
        while count < n_per_domain:
            tries += 1
            if tries > 200 * n_per_domain + 1000:
                raise RuntimeError(f"could not draw {n_per_domain} unique {domain} problems; lower the count")
            difficulty = difficulties[count % len(difficulties)]
            p = make_problem(domain, difficulty, rng)
            if p["question"] in seen or p["question"] in exclude:
                continue
            seen.add(p["question"])
            p.update(id=f"{domain}-{split}-{count:06d}", split=split)
            out.append(p)
            count += 1
    return out


def make_task_sets(domains: list[str], difficulties: list[int], train_per_domain: int, test_per_domain: int,
                   seed: int) -> dict[str, list[dict[str, Any]]]:
    """Train and held-out test sets that never share a question (the test set is drawn first)."""
    test = generate_split(domains, difficulties, test_per_domain, "test", seed)
    test_q = {p["question"] for p in test}
    train = generate_split(domains, difficulties, train_per_domain, "train", seed, exclude_questions=test_q)
    return {"train": train, "test": test}


def style_for(problem_index: int, teacher_style: str, seed: int) -> str:
    """The teacher style of one problem: fixed, or per-problem random for ``mixed``."""
    if teacher_style in STYLES:
        return teacher_style
    if teacher_style == "mixed":
        return random.Random(f"{seed}-style-{problem_index}").choice(STYLES)
    raise ValueError(f"teacher style {teacher_style!r} not accepted; use 'stepwise', 'terse' or 'mixed'")


__all__ = ["DOMAINS", "STYLES", "TeacherNoise", "generate_split", "make_problem", "make_task_sets", "public",
           "style_for", "teacher_trace"]


def teacher_records(problems: Sequence[dict[str, Any]], teacher_style: str, seed: int,
                    rollouts: int = 1, noise: TeacherNoise | None = None) -> list[dict[str, Any]]:
    """``rollouts`` teacher traces per problem (the paper's "n responses per prompt"): each problem's record
    with ``reasoning``, ``final``, ``style`` and ``rollout`` added."""
    rng = random.Random(f"{seed}-teacher")
    out = []
    for i, p in enumerate(problems):
        for r in range(rollouts):
            style = style_for(i * 7919 + r, teacher_style, seed)
            t = teacher_trace(p, style, rng, noise)
            out.append({**p, "reasoning": t["reasoning"], "final": t["final"], "style": t["style"], "rollout": r})
    return out
