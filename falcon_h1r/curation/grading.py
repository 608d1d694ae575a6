"""Verification-based grading of many responses at once: :func:`falcon_h1r.verify.check` for every record,
with two additions. Math answers that tier 1 calls wrong go to math-verify with ``raise_on_error`` so a
timeout is counted (``verify_timeout``) instead of passing as "wrong"; and code runs in the sandbox in
*batches* (:func:`run_code_batch`): one sandbox process grades many candidates, each in a fresh namespace.
That is the fast path; ``verify.check`` per record is its plain twin (tests compare them)."""

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

_HARNESS = '''
import builtins as _b
_CANDIDATES = {payload}
__falcon_batch__ = []
for _src, _tests in _CANDIDATES:
    _g = {{"__name__": "__main__", "__builtins__": _b}}
    try:
        exec(compile(_src, "<candidate>", "exec", dont_inherit=True), _g)
        for _t in _tests:
            exec(compile(_t, "<test>", "exec", dont_inherit=True), _g)
        __falcon_batch__.append(True)
    except BaseException:
        __falcon_batch__.append(False)
    del _g
'''


def run_code_batch(items: Sequence[tuple[str, Sequence[str]]], *, timeout_s: float = 5.0, batch_size: int = 128,
                   workers: int = 2, progress: bool = False) -> list[tuple[bool, str]]:
    """``(passed, reason)`` for each ``(code, tests)``, graded in the sandbox ``batch_size`` at a time.

    Why batches: one sandbox process costs ~0.1-0.3 s to start, which dominates grading thousands of
    short programs. Each candidate runs in a fresh namespace, with the same pass/fail semantics as
    ``sandbox.run_python_tests`` (code, then every test; pass only if nothing raises). A batch that
    ends abnormally (timeout, forbidden call, crash) is re-graded one candidate per process, so one
    bad candidate never decides another's verdict. What batching gives up: candidates in one batch
    share an interpreter, so one could tamper with builtins to make a later one pass; use
    ``batch_size=1`` for untrusted, adversarial code.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from falcon_h1r.sandbox import run_python_tests

    items = [(c, list(t)) for c, t in items]
    results: list[tuple[bool, str] | None] = [None] * len(items)

    def one(i: int) -> None:
        r = run_python_tests(items[i][0], items[i][1], timeout_s=timeout_s)
        results[i] = (r.passed, "ok" if r.passed else f"tests_failed: {r.reason}")

    def chunk(idx: list[int]) -> None:
        if len(idx) == 1:
            return one(idx[0])
        payload = repr([items[i] for i in idx])
        code = _HARNESS.format(payload=payload)
        r = run_python_tests(code, [f"assert __falcon_batch__[{j}]" for j in range(len(idx))],
                             timeout_s=timeout_s * 2)
        if r.reason == "ok" or r.reason.startswith("tests_failed"):
            for j, i in enumerate(idx):
                ok = r.test_outcomes[j]
                results[i] = (ok, "ok" if ok else "tests_failed: batch")
        else:  # the harness itself did not finish: grade each candidate alone
            for i in idx:
                one(i)

    chunks = [list(range(s, min(s + batch_size, len(items)))) for s in range(0, len(items), batch_size)]
    with tqdm(total=len(items), desc="code tests (sandbox)", disable=not progress or not items, leave=False) as bar:
        if workers > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                for c in ex.map(lambda c: chunk(c) or c, chunks):
                    bar.update(len(c))
        else:
            for c in chunks:
                chunk(c)
                bar.update(len(c))
    return [r for r in results if r is not None]


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
          math_verify_timeout_s: int = 2, code_timeout_s: float = 5.0, code_batch_size: int = 128,
          code_workers: int = 2, progress: bool = False) -> list[Verdict]:
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
    graded = run_code_batch(code_items, timeout_s=code_timeout_s, batch_size=code_batch_size, workers=code_workers,
                            progress=progress)
    for i, (code, _), (ok, reason) in zip(code_idx, code_items, graded):
        out[i] = Verdict(ok, code, reason)
    return [v for v in out if v is not None]


def grade_kwargs(recipe: CurationRecipe) -> dict[str, Any]:
    """The recipe's grading settings, as keyword arguments of :func:`grade` / :func:`estimate_pass_rates`."""
    return {"use_math_verify": recipe.use_math_verify, "math_verify_timeout_s": recipe.math_verify_timeout_s,
            "code_timeout_s": recipe.code_timeout_s, "code_batch_size": recipe.code_batch_size,
            "code_workers": recipe.code_workers}


def trace_response(rec: dict[str, Any]) -> str:
    """The full assistant text of a teacher trace, as a model would emit it (prompt opened ``<think>``)."""
    from falcon_h1r.tokenizer import format_response

    return "<think>\n" + format_response(rec["reasoning"], rec["final"])
