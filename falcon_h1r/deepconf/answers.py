"""The answer a trace votes for, and which answers count as the same vote.

Answers that math-verify finds equal share a vote (:class:`AnswerClasses`); the official DeepConf code
groups by exact string instead (deepconf issue #15), which splits ``0.5`` and ``\\frac{1}{2}``. math-verify
(a kept library) does the parsing; the fast paths in front of it only skip calls whose outcome is known.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from falcon_h1r.verify import extract_boxed, final_answer_part, math_verify_equal, normalize_math, to_rational


def extract_answer(text: str | None) -> str | None:
    """The answer a trace votes for, or None.

    math-verify first, on the answer part (after ``</think>``), with its anchored extractors only
    (``\\boxed{}``, "the final answer is ..."): without anchors it would pull a stray number out of an
    unfinished chain of thought, which the paper's boxed-only extraction never votes for. If
    math-verify finds nothing it can parse (e.g. ``\\boxed{Yes}`` fails on some inputs), fall back to
    the last ``\\boxed{}`` content. Empty answers count as none.

    Fast path (the same string, ~1000x cheaper; pools hold 10^4+ traces): an answer part whose only
    box holds a plain integer returns it without calling math-verify, whose anchored extraction would
    pick the same box and print the integer unchanged (decimals and fractions it rewrites, e.g.
    ``0.5`` -> ``\\frac{1}{2}``, so those still go through it).
    """
    if not isinstance(text, str) or not text:
        return None
    part = final_answer_part(text)
    if part.count("\\boxed") == 1 and "final answer" not in part.lower():
        boxed = extract_boxed(part)
        if boxed and _INTEGER.fullmatch(boxed):
            return boxed
    return _extract_answer_math_verify(part)


_INTEGER = re.compile(r"-?\d+")


def _extract_answer_math_verify(part: str) -> str | None:
    """:func:`extract_answer` without its fast path (the tests compare the two)."""
    try:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

        # signal.alarm (math-verify's timeout) only works on the main thread.
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        parsed = parse(part, extraction_config=[LatexExtractionConfig(try_extract_without_anchor=False),
                                                ExprExtractionConfig(try_extract_without_anchor=False)],
                       parsing_timeout=timeout)
    except Exception:  # a math-verify failure means "no parse", never a crash
        parsed = []
    if len(parsed) >= 2 and str(parsed[1]).strip():
        return str(parsed[1]).strip()
    boxed = extract_boxed(part)
    return boxed if boxed else None


def _tier1_key(answer: str) -> tuple[str, Any]:
    value = to_rational(answer)
    return ("q", value) if value is not None else ("s", normalize_math(answer))


class AnswerClasses:
    """Equivalence classes of answer strings, so that ``0.5`` and ``\\frac{1}{2}`` share a vote.

    Tier 1 (normalized string / exact rational, free) first; math-verify only for an answer whose
    tier-1 key is new, and only against each existing class's first answer (its leader), skipping
    pairs that are both plain rationals (tier 1 already decided those). Class ids follow first
    appearance. Memoized per string, so one instance shared across many votes over one problem's pool
    (e.g. 64 resamplings) calls math-verify at most once per pair of distinct answers.
    """

    def __init__(self, use_math_verify: bool = True):
        self.use_math_verify = use_math_verify
        self._by_string: dict[str, int] = {}
        self._by_key: dict[tuple[str, Any], int] = {}
        self.leaders: list[str] = []

    def __call__(self, answer: str | None) -> int | None:
        if answer is None or not str(answer).strip():
            return None
        answer = str(answer)
        if answer in self._by_string:
            return self._by_string[answer]
        key = _tier1_key(answer)
        cls = self._by_key.get(key)
        if cls is None and self.use_math_verify:
            for c, leader in enumerate(self.leaders):
                if key[0] == "q" and _tier1_key(leader)[0] == "q":
                    continue
                if math_verify_equal(answer, leader):
                    cls = c
                    break
        if cls is None:
            cls = len(self.leaders)
            self.leaders.append(answer)
        self._by_key.setdefault(key, cls)
        self._by_string[answer] = cls
        return cls


def is_correct(answer: str | None, gold: str | None) -> bool:
    """Grade a voted answer against the ground truth (tier 1, then math-verify)."""
    from falcon_h1r.verify import math_equal

    return answer is not None and gold is not None and math_equal(answer, str(gold))


__all__ = ["extract_answer", "AnswerClasses", "is_correct"]
