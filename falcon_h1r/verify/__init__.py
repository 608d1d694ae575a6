"""Checking answers against ground truth, as the paper's rewards, filters and benchmarks do.

A problem record says how it is graded by ``answer_kind`` (default from ``domain``: math -> ``math``,
science -> ``numeric``, code -> ``code``):

- ``integer`` (AIME), ``math`` (MATH-500, HMMT, AMO-Bench): the last ``\\boxed{}`` of the answer part,
  compared by :func:`answers_equivalent` -- tier 1 (normalized string / exact rational; paper §3.2),
  then math-verify only when tier 1 says wrong. MATH-style references that are option letters
  (``\\text{(C)}``) or words (``\\text{Monday}``) are compared by content, never by math-verify;
- ``multiple_choice`` (GPQA-Diamond, MMLU-Pro): the option letter of the last ``Answer: X`` line or boxed
  letter/option text, against the reference letter;
- ``text``: the boxed content against the reference's content;
- ``numeric``: the boxed number within ``tolerance`` (relative) of the reference (synthetic science);
- ``code``: the last fenced block run in the sandbox against ``tests`` (assert statements) or
  ``test_cases`` (LiveCodeBench stdin or functional cases);
- ``judge``: needs an LLM judge (AMO-Bench's description answers, HLE's checker); graded as
  ``needs_judge``, never as correct.

The package is split by concern: :mod:`.extract` (finding the answer), :mod:`.normalize` (tier-1
canonical forms, answer kinds), :mod:`.equivalence` (the one equivalence for grading and voting),
:mod:`.code` (running code answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from falcon_h1r.verify.code import TEST_TYPES, lcb_canonical, lcb_reference_equal, run_test_cases, stdout_matches
from falcon_h1r.verify.equivalence import _pool as _pool  # curation runs math-verify in the same workers
from falcon_h1r.verify.equivalence import (EQUIVALENCE_KINDS, AnswerClasses, answer_key, answers_equivalent,
                                           math_equal, math_equal_tier1, math_verify_equal)
from falcon_h1r.verify.extract import (LETTERS, THINK_CLOSE, THINK_OPEN, choice_letter, detect_language, extract_boxed,
                                       extract_choice, extract_code, final_answer_part, unwrap_text_macros)
from falcon_h1r.verify.normalize import (ANSWER_KINDS, classify_answer, normalize_math, numeric_close, parse_number,
                                         text_key, to_rational)

DOMAIN_DEFAULT_KIND = {"math": "math", "science": "numeric", "code": "code"}


@dataclass
class Verdict:
    correct: bool
    extracted: str | None
    reason: str  # "ok", "no_answer", "wrong", "needs_judge", "tests_failed: ...", "wrong_language: ..."


def answer_kind(problem: dict[str, Any]) -> str:
    """The problem's ``answer_kind``, or its domain's default (math -> math, science -> numeric, code -> code)."""
    kind = problem.get("answer_kind")
    if kind is None:
        domain = problem.get("domain")
        if domain not in DOMAIN_DEFAULT_KIND:
            raise ValueError(f"unknown domain {domain!r} and no answer_kind; accepted domains: "
                             f"{', '.join(DOMAIN_DEFAULT_KIND)}; answer kinds: {', '.join(ANSWER_KINDS)}")
        return DOMAIN_DEFAULT_KIND[domain]
    if kind not in ANSWER_KINDS:
        raise ValueError(f"unknown answer_kind {kind!r}; accepted: {', '.join(ANSWER_KINDS)}")
    return kind


def extract_final_answer(response: str, kind: str = "math", *, choices: Sequence[str] | None = None) -> str | None:
    """The answer a response gives, as graded and voted on: a letter for ``multiple_choice``, the
    last boxed content otherwise (code answers: use :func:`extract_code`)."""
    if not isinstance(response, str):
        return None
    if kind == "multiple_choice":
        return extract_choice(response, choices=choices)
    if kind == "code":
        raise ValueError("code answers are extracted with extract_code and graded by running tests")
    return extract_boxed(final_answer_part(response))


def _check_code(problem: dict[str, Any], response: str, code_timeout_s: float) -> Verdict:
    lang, code = extract_code(response)
    if code is None:
        return Verdict(False, None, "no_answer")
    want = problem.get("language", "python")
    if lang != want:
        return Verdict(False, code, f"wrong_language: {lang} (expected {want})")
    if problem.get("test_cases") is not None:
        ok, reason = run_test_cases(code, problem["test_cases"], problem.get("test_type", "stdin"),
                                    fn_name=problem.get("fn_name"), timeout_s=code_timeout_s)
        return Verdict(ok, code, reason)
    if problem.get("tests") is None:
        raise ValueError(f"code problem {problem.get('id')!r} has neither 'tests' (assert statements) nor "
                         "'test_cases' (input/output pairs)")
    from falcon_h1r.sandbox import run_python_tests

    result = run_python_tests(code, problem["tests"], timeout_s=code_timeout_s)
    return Verdict(result.passed, code, "ok" if result.passed else result.reason)


def check(problem: dict[str, Any], response: str, *, use_math_verify: bool = True,
          code_timeout_s: float = 5.0) -> Verdict:
    """Grade one response to one problem record (see :mod:`falcon_h1r.tasks` and
    :mod:`falcon_h1r.benchmarks` for the record formats)."""
    kind = answer_kind(problem)
    if not isinstance(response, str):
        return Verdict(False, None, "no_answer")
    if kind == "code":
        return _check_code(problem, response, code_timeout_s)
    choices = problem.get("choices")
    pred = extract_final_answer(response, kind, choices=choices)
    if pred is None:
        return Verdict(False, None, "no_answer")
    if kind == "judge":
        return Verdict(False, pred, "needs_judge")
    ok = answers_equivalent(pred, str(problem["answer"]), kind, choices=choices, use_math_verify=use_math_verify,
                            rel_tol=float(problem.get("tolerance", 1e-2)))
    return Verdict(ok, pred, "ok" if ok else "wrong")


def vote_answer(problem: dict[str, Any], response: str) -> str | None:
    """The answer ``response`` votes for in majority voting and DeepConf, by the problem's answer kind: the
    option letter for ``multiple_choice`` (so "C", "(C)" and the option's text are one vote), the last boxed
    content otherwise; None for no answer. Give the answer part of the response
    (``PromptBuilder.answer_part``) or a whole response in the package's ``<think>`` format."""
    kind = answer_kind(problem)
    if kind in ("code", "judge"):
        raise ValueError(f"problem {problem.get('id')!r}: {kind} answers are not voted on (they are graded by "
                         "running tests or by a judge)")
    return extract_final_answer(response, kind, choices=problem.get("choices"))


def vote_classes(problem: dict[str, Any], *, use_math_verify: bool = True) -> AnswerClasses:
    """:class:`AnswerClasses` for one problem's votes, with its answer kind and options: the same equivalence
    as grading (:func:`answers_equivalent`), so two letters or two different words never share a vote."""
    kind = answer_kind(problem)
    if kind not in EQUIVALENCE_KINDS:
        raise ValueError(f"problem {problem.get('id')!r}: {kind} answers are not voted on; votable kinds: "
                         f"{', '.join(EQUIVALENCE_KINDS)}")
    return AnswerClasses(use_math_verify=use_math_verify, kind=kind, choices=problem.get("choices"),
                         rel_tol=float(problem.get("tolerance", 1e-2)))


def check_batch(problems: Sequence[dict[str, Any]], responses: Sequence[str], **kw: Any) -> list[Verdict]:
    return [check(p, r, **kw) for p, r in zip(problems, responses, strict=True)]


__all__ = [
    "ANSWER_KINDS", "EQUIVALENCE_KINDS", "LETTERS", "TEST_TYPES", "THINK_CLOSE", "THINK_OPEN", "AnswerClasses",
    "Verdict", "answer_key", "answer_kind", "answers_equivalent", "check", "check_batch", "choice_letter",
    "classify_answer", "detect_language", "extract_boxed", "extract_choice", "extract_code", "extract_final_answer",
    "final_answer_part", "math_equal", "math_equal_tier1", "math_verify_equal", "normalize_math", "numeric_close",
    "parse_number", "run_test_cases", "stdout_matches", "text_key", "to_rational", "unwrap_text_macros",
    "vote_answer", "vote_classes", "lcb_canonical", "lcb_reference_equal",
]
