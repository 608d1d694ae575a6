"""Programmatic teachers: the ``<think>`` traces the SFT data is distilled from, clean or imperfect.

Two styles that reason differently, not only in wording (the single- vs multi-teacher ablation of
paper §2 mixes them):

- ``stepwise``: column methods (digit-by-digit multiplication with carries, column addition, long
  division with trial products, lcm from prime factors, expand-collect-isolate, elimination) and,
  for code, restate the plan and trace the example element by element before writing the function;
- ``terse``: decomposition methods (place-value products, running sums, chunked division, pairwise
  cross-multiplication, the two values f(0) and f(1) of a linear equation, substitution) and, for
  code, outline the function directly and check it on whole lists.

An imperfect teacher (``TeacherNoise``) fails at configured rates. ``slip`` is the realistic one:
one intermediate result goes wrong (a carry dropped, a digit off by one, a constant misread in the
code) and the rest of the trace follows from it, so the final answer is wrong while the trace looks
like a careful one; the curation's verification step has to catch it.
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from falcon_h1r.tasks.arithmetic import Work, fmt_decimal
from falcon_h1r.tasks.code import code_final, mutants, run_spec, solve_code
from falcon_h1r.tasks.math import math_final, solve_math
from falcon_h1r.tasks.science import science_final, solve_science

STYLES = ("stepwise", "terse")
# How each style computes: the arithmetic method its worked steps use.
METHOD = {"stepwise": "column", "terse": "decompose"}
_SOLVERS = {"math": solve_math, "science": solve_science, "code": solve_code}


@dataclass
class TeacherNoise:
    """How an imperfect teacher fails (rates per trace); all zero is a clean teacher."""

    wrong_answer: float = 0.0  # a plausible but wrong final answer (the reasoning stays right)
    missing_box: float = 0.0  # math/science final answer without \boxed{}
    empty_reasoning: float = 0.0
    bad_code: float = 0.0  # a syntax error in the code block
    wrong_language: float = 0.0  # JavaScript instead of Python
    runaway: float = 0.0  # the trace repeats itself far past any sane length
    slip: float = 0.0  # one intermediate step wrong, carried through to a wrong final answer


def _spec(problem: dict[str, Any]) -> dict[str, Any]:
    spec = problem.get("spec")
    if not isinstance(spec, dict):
        raise ValueError(f"problem {problem.get('id', '?')!r} has no generator spec: teachers need the problem as "
                         "generated (falcon_h1r.tasks.make_problem / generate_split), not its public() record")
    return spec


def _final(problem: dict[str, Any], answer: str) -> str:
    if problem["domain"] == "code":
        return code_final(answer)
    if problem["domain"] == "science":
        return science_final(answer, problem["unit"])
    return math_final(answer)


def solve(problem: dict[str, Any], style: str, slip_at: int | None = None,
          slip_rng: random.Random | None = None) -> tuple[str, str, int]:
    """``(reasoning, answer, n_steps)`` of one worked solution; ``slip_at`` makes that step wrong."""
    w = Work(slip_at=slip_at, rng=slip_rng or random.Random(0))
    answer = _SOLVERS[problem["domain"]](_spec(problem), METHOD[style], w)
    return w.text(), answer, w.ops


def _value(answer: str) -> Fraction:
    return Fraction(answer.replace("\\frac{", "").replace("}{", "/").replace("}", ""))


def _counts_as_right(problem: dict[str, Any], answer: str) -> bool:
    """Whether the checker would accept ``answer`` (exact for math, twice the tolerance for science)."""
    try:
        got, want = _value(answer), _value(problem["answer"])
    except (ValueError, ZeroDivisionError):
        return answer == problem["answer"]
    if problem["domain"] == "science":
        return abs(got - want) <= 2 * float(problem.get("tolerance", 0.01)) * abs(want)
    return got == want


def _test_inputs(problem: dict[str, Any]) -> list[Any]:
    """The argument of each hidden test ``assert solve(<literal>) == <literal>``."""
    out = []
    for t in problem["tests"]:
        call = ast.parse(t).body[0].test.left  # type: ignore[attr-defined]
        out.append(ast.literal_eval(call.args[0]))
    return out


def slipped(problem: dict[str, Any], style: str, rng: random.Random) -> tuple[str, str] | None:
    """A trace with one local slip whose final answer is wrong, or None when none can be made."""
    spec = _spec(problem)
    if problem["domain"] == "code":
        inputs = _test_inputs(problem)
        wrong = [m for m in mutants(spec) if any(run_spec(m, x) != run_spec(spec, x) for x in inputs)]
        if not wrong:
            return None
        m = rng.choice(wrong)
        w = Work()
        code = solve_code(m, METHOD[style], w)
        return w.text(), code
    _, _, n = solve(problem, style)
    positions = list(range(n))
    rng.shuffle(positions)
    # A slip in a low digit of a large science result can stay inside the tolerance: try further
    # positions (in random order) until one makes the answer wrong.
    for k in positions[:60]:
        try:
            reasoning, answer, _ = solve(problem, style, slip_at=k, slip_rng=random.Random(rng.getrandbits(32)))
        except (ArithmeticError, ValueError):
            continue
        if not _counts_as_right(problem, answer):
            return reasoning, answer
    return None


def teacher_trace(problem: dict[str, Any], style: str, rng: random.Random | None = None,
                  noise: TeacherNoise | None = None) -> dict[str, str]:
    """A teacher's response: ``{"reasoning": ..., "final": ..., "style": ...}`` (no chat markup)."""
    if style not in STYLES:
        raise ValueError(f"teacher style {style!r} not accepted; use one of {STYLES}")
    noise = noise or TeacherNoise()
    rng = rng or random.Random(0)
    domain = problem["domain"]
    reasoning, answer, _ = solve(problem, style)
    if rng.random() < noise.slip:
        bad = slipped(problem, style, rng)
        if bad is not None:
            reasoning, answer = bad
    final = _final(problem, answer)
    if rng.random() < noise.wrong_answer:
        if domain == "code":
            final = final.replace("return ", "return 1 + ", 1)
        else:
            final = _final(problem, _wrong_value(problem, rng))
    if domain != "code" and rng.random() < noise.missing_box:
        final = final.replace("\\boxed{", "").replace("}.", ".").replace("} ", " ")
    if rng.random() < noise.empty_reasoning:
        reasoning = ""
    if domain == "code" and rng.random() < noise.bad_code:
        final = final.replace("):\n", ")\n", 1)
    if domain == "code" and rng.random() < noise.wrong_language:
        final = "```javascript\nfunction solve(xs) {\n  return xs.length;\n}\n```"
    if rng.random() < noise.runaway:
        reasoning = (reasoning + "\nWait, let me re-check.\n") * 40
    return {"reasoning": reasoning, "final": final, "style": style}


def _wrong_value(problem: dict[str, Any], rng: random.Random) -> str:
    """A nearby wrong answer of the same kind (integer, fraction, or a decimal off by 10-50 %)."""
    answer = problem["answer"]
    if problem["domain"] == "science":
        v = Fraction(answer)
        return fmt_decimal(v * rng.choice([Fraction(1, 2), Fraction(9, 10), Fraction(11, 10), Fraction(3, 2)])
                           if v else Fraction(rng.randint(1, 9)))
    if answer.lstrip("-").startswith("\\frac"):
        sign = "-" if answer.startswith("-") else ""
        num, den = answer.split("{")[1].rstrip("}"), answer.split("{")[2].rstrip("}")
        return f"{sign}\\frac{{{int(num) + rng.choice([-1, 1, 2])}}}{{{den}}}"
    try:
        v = Fraction(answer)
    except ValueError:
        return str(rng.randint(2, 40))
    return fmt_decimal(v + rng.choice([-2, -1, 1, 2, 10]))


def style_for(problem_index: int, teacher_style: str, seed: int) -> str:
    """The teacher style of one problem: fixed, or per-problem random for ``mixed``."""
    if teacher_style in STYLES:
        return teacher_style
    if teacher_style == "mixed":
        return random.Random(f"{seed}-style-{problem_index}").choice(STYLES)
    raise ValueError(f"teacher style {teacher_style!r} not accepted; use 'stepwise', 'terse' or 'mixed'")


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


__all__ = ["METHOD", "STYLES", "TeacherNoise", "slipped", "solve", "style_for", "teacher_records",
           "teacher_trace"]
