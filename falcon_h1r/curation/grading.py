"""Verification-based grading of many responses at once: :func:`falcon_h1r.verify.check` for every record,
with two additions. Math answers that tier 1 calls wrong go to math-verify with ``raise_on_error`` so a
timeout is counted (``verify_timeout``) instead of passing as "wrong"; and code runs through the sandbox's
batch grader (:func:`run_code_batch`: one program per sandboxed process, several processes in flight, the
verdict computed outside the program). ``verify.check`` per record is its plain twin (tests compare them)."""

from __future__ import annotations

import threading
from typing import Any, Sequence

from falcon_h1r.curation.recipe import CurationRecipe
from falcon_h1r.verify import Verdict, check, extract_code, to_rational


def on_main_thread(fn, *args, **kw):
    """math-verify times out with signal.alarm, which only the main thread may use."""
    if threading.current_thread() is threading.main_thread():
        return fn(*args, **kw)
    from falcon_h1r.verify import _pool

    return _pool().submit(fn, *args, **kw).result()


def _math_verify_strict(pred: str, gold: str, timeout_s: int) -> str:
    """'equal' | 'different' | 'timeout' | 'error: ...' (math-verify with errors raised, not hidden)."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    try:
        g = parse(f"${gold}$", parsing_timeout=timeout_s, raise_on_error=True)
        p = parse(f"${pred}$", parsing_timeout=timeout_s, raise_on_error=True)
        if not g or not p:
            return "different"
        return "equal" if verify(g, p, timeout_seconds=timeout_s, raise_on_error=True) else "different"
    except TimeoutException:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        return f"error: {type(exc).__name__}: {str(exc)[:120]}"


# math-verify entry point; tests replace it to simulate a timeout.
math_verify_strict = _math_verify_strict

def run_code_batch(items: Sequence[tuple[str, Sequence[str]]], *, timeout_s: float = 5.0, workers: int = 2,
                   progress: bool = False) -> list[tuple[bool, str]]:
    """``(passed, reason)`` for each ``(code, tests)``: every program in its own sandboxed process
    (:func:`falcon_h1r.sandbox.grade_programs`), ``workers`` in flight.

    Why no batching of several programs per process (the old fast path): programs sharing an interpreter can
    tamper with each other's tests and builtins, and curation grades model-generated code, which is untrusted.
    """
    from falcon_h1r.sandbox import grade_programs

    results = grade_programs([(c, list(t)) for c, t in items], timeout_s=timeout_s, workers=workers,
                             progress=progress)
    return [(r.passed, "ok" if r.passed else f"tests_failed: {r.reason}") for r in results]


def _distinct_exact_rationals(pred: str, gold: str) -> bool:
    """Both exact rationals written without decimals (integers, a/b, \\frac{a}{b}) that tier 1 found
    different. Two such values differ by at least 1/(b1*b2), so below 10^6 math-verify (which compares
    at 6 decimals) cannot call them equal either: skipping it changes no verdict and saves its ~50 ms
    per wrong answer, most of the grading time of a weak model's rollouts."""
    if "." in pred or "." in gold:
        return False
    a, b = to_rational(pred), to_rational(gold)
    return a is not None and b is not None and a != b and a.denominator * b.denominator < 10**6


def grade(problems: Sequence[dict[str, Any]], responses: Sequence[str], *, use_math_verify: bool = True,
          math_verify_timeout_s: int = 2, code_timeout_s: float = 5.0, code_workers: int = 2,
          progress: bool = False) -> list[Verdict]:
    """Grade responses (``<think>`` trace + final answer) against their problems, like
    ``verify.check``, but with code batched in the sandbox and math-verify timeouts reported as
    ``reason == "verify_timeout"`` (errors as ``"verify_error: ..."``) rather than as "wrong"."""
    if len(problems) != len(responses):
        raise ValueError(f"{len(problems)} problems but {len(responses)} responses")
    out: list[Verdict | None] = [None] * len(problems)
    code_idx, code_items = [], []
    from falcon_h1r.sandbox import syntax_ok

    for i, (p, r) in enumerate(zip(problems, responses)):
        if p.get("domain") == "code" and isinstance(r, str):
            lang, code = extract_code(r)
            want = p.get("language", "python")
            if code is None:
                out[i] = Verdict(False, None, "no_answer")
            elif lang != want:
                out[i] = Verdict(False, code, f"wrong_language: {lang} (expected {want})")
            elif not syntax_ok(code):
                out[i] = Verdict(False, code, "tests_failed: syntax_error")
            else:
                code_idx.append(i)
                code_items.append((code, p["tests"]))
            continue
        v = check(p, r, use_math_verify=False)
        if (p.get("domain") == "math" and not v.correct and v.extracted is not None and use_math_verify
                and not _distinct_exact_rationals(v.extracted, p["answer"])):
            res = on_main_thread(math_verify_strict, v.extracted, p["answer"], math_verify_timeout_s)
            if res == "equal":
                v = Verdict(True, v.extracted, "ok")
            elif res == "timeout":
                v = Verdict(False, v.extracted, "verify_timeout")
            elif res.startswith("error"):
                v = Verdict(False, v.extracted, f"verify_error: {res[7:]}")
        out[i] = v
    graded = run_code_batch(code_items, timeout_s=code_timeout_s, workers=code_workers,
                            progress=progress)
    for i, (code, _), (ok, reason) in zip(code_idx, code_items, graded):
        out[i] = Verdict(ok, code, reason)
    return [v for v in out if v is not None]


def grade_kwargs(recipe: CurationRecipe) -> dict[str, Any]:
    """The recipe's grading settings, as keyword arguments of :func:`grade` / :func:`estimate_pass_rates`."""
    return {"use_math_verify": recipe.use_math_verify, "math_verify_timeout_s": recipe.math_verify_timeout_s,
            "code_timeout_s": recipe.code_timeout_s, "code_workers": recipe.code_workers}


def trace_response(rec: dict[str, Any]) -> str:
    """The full assistant text of a teacher trace, as a model would emit it (prompt opened ``<think>``)."""
    from falcon_h1r.tokenizer import format_response

    return "<think>\n" + format_response(rec["reasoning"], rec["final"])
