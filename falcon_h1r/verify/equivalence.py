"""One answer-equivalence, used both for grading and for DeepConf's vote grouping.

:func:`answers_equivalent` decides whether a predicted answer means the reference; :func:`answer_key`
gives the hashable tier-1 form (equal keys imply equivalent answers); :class:`AnswerClasses` groups a
stream of answers into vote classes with the same rules. Per answer kind:

- ``multiple_choice``: the option letters are compared (a letter, ``(C)``, ``\\text{(C)}``, ``Answer: C``
  or the text of an option when the options are known);
- ``text``: the contents are compared (``\\text{Monday}`` = ``monday.``), never math-verify;
- ``integer`` / ``math``: tier 1 (normalized string, exact rational; paper §3.2) and, only when it
  says "different", tier 2 = math-verify. A ``math`` reference is first classified
  (:func:`~falcon_h1r.verify.normalize.classify_answer`): MATH-500's ``\\text{(C)}`` is compared as a
  letter and ``\\text{even}`` as text. A prediction that is a letter or words never equals a math
  reference. Percentages are accepted either as the number or as the fraction (``50\\%`` = 50 = 0.5);
- ``numeric``: relative tolerance (the synthetic science tasks).

math-verify bounds its work with ``signal.alarm``, which only the main thread may use, so calls from
other threads go to worker processes.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import multiprocessing as mp
import re
import threading
from collections.abc import Hashable, Sequence
from typing import Any

from falcon_h1r.verify.extract import choice_letter
from falcon_h1r.verify.normalize import (_ONE_LETTER_ROMAN, classify_answer, is_percent, normalize_math,
                                         numeric_close, parse_number, text_key, to_rational)

_E_NOTATION = re.compile(r"\d[eE][-+]?\d")
EQUIVALENCE_KINDS = ("integer", "math", "multiple_choice", "text", "numeric")


# ----------------------------------------------------------------------------- math-verify (tier 2)
def _math_verify_one(pred: str, gold: str, timeout_s: int) -> bool:
    from math_verify import parse, verify

    g = parse(f"${gold}$", parsing_timeout=timeout_s)
    p = parse(f"${pred}$", parsing_timeout=timeout_s)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=timeout_s))


def _math_verify_safe(args: tuple[str, str, int]) -> bool:
    try:
        return _math_verify_one(*args)
    except Exception:  # a parse error or timeout counts as "not equal", never as a crash
        return False


_POOL: cf.ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> cf.ProcessPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            # fork is cheap and safe here: workers only run math-verify (no torch threads used).
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            _POOL = cf.ProcessPoolExecutor(max_workers=2, mp_context=ctx)
            atexit.register(_shutdown_pool)
        return _POOL


def _shutdown_pool() -> None:
    """Close the workers before interpreter teardown (else the executor's finalizer runs too late)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=True, cancel_futures=True)
            _POOL = None


def math_verify_equal(pred: str, gold: str, timeout_s: int = 5) -> bool:
    """math-verify's verdict; runs in-process on the main thread, else in a worker process."""
    if threading.current_thread() is threading.main_thread():
        return _math_verify_safe((pred, gold, timeout_s))
    return _pool().submit(_math_verify_safe, (pred, gold, timeout_s)).result(timeout=4 * timeout_s)


def _for_math_verify(ans: str) -> str:
    """What math-verify sees: ``\\mathrm{i}`` as the letter (math-verify drops it as a unit) and
    ``3e5`` as a number (math-verify reads ``3*e*5``)."""
    if _E_NOTATION.search(ans):
        q = to_rational(ans)
        if q is not None:
            return str(q.numerator) if q.denominator == 1 else f"\\frac{{{q.numerator}}}{{{q.denominator}}}"
    return _ONE_LETTER_ROMAN.sub(lambda m: m.group(1), str(ans))


# ----------------------------------------------------------------------------- tier 1
def math_equal_tier1(pred: str | None, gold: str) -> bool:
    """Normalized string match or exact rational match (never math-verify). Sound, not complete."""
    if pred is None:
        return False
    if normalize_math(pred) == normalize_math(gold):
        return True
    a, b = to_rational(pred), to_rational(gold)
    return a is not None and b is not None and a == b


def _percent_match(pred: str, gold: str) -> bool:
    """``50\\%`` against 0.5 (or ``0.5`` against ``50\\%``): the percent read as a fraction."""
    a, b = to_rational(pred), to_rational(gold)
    if a is None or b is None:
        return False
    return (is_percent(pred) and a / 100 == b) or (is_percent(gold) and b / 100 == a)


# ----------------------------------------------------------------------------- the one equivalence
def _check_kind(kind: str) -> None:
    if kind not in EQUIVALENCE_KINDS:
        raise ValueError(f"answer kind {kind!r} has no equivalence; accepted: {', '.join(EQUIVALENCE_KINDS)} "
                         "(code answers are graded by running tests, judge answers by a judge)")


def _effective_kind(reference: str, kind: str) -> str:
    return classify_answer(reference) if kind == "math" else kind


def answer_key(answer: str | None, kind: str = "math", *, choices: Sequence[str] | None = None) -> Hashable | None:
    """Hashable tier-1 form of an answer; equal keys mean equivalent answers. None = no answer.

    ``("choice", "C")`` for option letters, ``("text", "monday")`` for words, ``("q", Fraction)`` for
    plain numbers, ``("s", normalized string)`` for other math, ``("num", rounded)`` for ``numeric``.
    """
    _check_kind(kind)
    if answer is None or not str(answer).strip():
        return None
    answer = str(answer)
    if kind == "numeric":
        x = parse_number(answer)
        return ("num", float(f"{x:.4g}")) if x is not None else ("text", text_key(answer))
    own = classify_answer(answer) if kind in ("math", "integer") else kind
    if own == "multiple_choice":
        letter = choice_letter(answer, choices=choices)
        if letter is not None:
            return ("choice", letter)
        own = "text"
    if own == "text":
        key = text_key(answer)
        return ("text", key) if key else None
    q = to_rational(answer)
    if q is not None:
        return ("q", q)
    s = normalize_math(answer)
    return ("s", s) if s else None


def answers_equivalent(pred: str | None, reference: str | None, kind: str = "math", *,
                       choices: Sequence[str] | None = None, use_math_verify: bool = True,
                       rel_tol: float = 1e-2) -> bool:
    """Does ``pred`` mean the same answer as ``reference``? The one equivalence for grading and voting.

    ``kind`` is the reference's answer kind (:data:`EQUIVALENCE_KINDS`); ``choices`` are the option
    texts of a multiple-choice problem in presented order; ``rel_tol`` applies to ``numeric`` only.
    Two different words, two different letters, or a word and a number are never equivalent.
    """
    _check_kind(kind)
    if pred is None or reference is None or not str(pred).strip():
        return False
    pred, reference = str(pred), str(reference)
    if kind == "numeric":
        return numeric_close(pred, reference, rel_tol=rel_tol)
    ref_kind = _effective_kind(reference, kind)
    if ref_kind == "multiple_choice":
        want = choice_letter(reference, choices=choices)
        if want is None:
            raise ValueError(f"multiple-choice reference {reference!r} names no option letter")
        return choice_letter(pred, choices=choices) == want
    if ref_kind == "text":
        return classify_answer(pred) != "multiple_choice" and text_key(pred) == text_key(reference)
    # integer / math reference: a letter or words never equal it.
    if classify_answer(pred) in ("multiple_choice", "text"):
        return False
    a, b = to_rational(pred), to_rational(reference)
    if a is not None and b is not None:  # two plain numbers: exact comparison decides
        return a == b or _percent_match(pred, reference)
    if math_equal_tier1(pred, reference):
        return True
    return use_math_verify and math_verify_equal(_for_math_verify(pred), _for_math_verify(reference))


def math_equal(pred: str | None, gold: str, *, use_math_verify: bool = True) -> bool:
    """:func:`answers_equivalent` for a ``math`` reference (tier 1, then math-verify)."""
    return answers_equivalent(pred, gold, "math", use_math_verify=use_math_verify)


# ----------------------------------------------------------------------------- vote grouping
class AnswerClasses:
    """Equivalence classes of answers for voting, under :func:`answers_equivalent`'s rules.

    Equal :func:`answer_key` -> same class (free). A new key joins an existing class only when
    :func:`answers_equivalent` says it equals that class's first answer (its leader), and math-verify is
    asked only for math keys (``"s"``, or one side ``"q"``): two different letters, two different words,
    or two distinct plain rationals never merge. Class ids follow first appearance. Memoized per
    string, so one instance shared across many votes over one problem's pool calls math-verify at most
    once per pair of distinct answers. (Equivalence by leader is not transitive in general -- ``50\\%``
    equals both ``50`` and ``0.5`` -- so classes can depend on arrival order for such answers.)
    """

    def __init__(self, use_math_verify: bool = True, kind: str = "math", choices: Sequence[str] | None = None,
                 rel_tol: float = 1e-2):
        _check_kind(kind)
        self.use_math_verify = use_math_verify
        self.kind, self.choices, self.rel_tol = kind, list(choices) if choices else None, rel_tol
        self._by_string: dict[str, int | None] = {}
        self._by_key: dict[Hashable, int] = {}
        self._leader_keys: list[Hashable] = []
        self.leaders: list[str] = []

    def __call__(self, answer: str | None) -> int | None:
        if answer is None or not str(answer).strip():
            return None
        answer = str(answer)
        if answer in self._by_string:
            return self._by_string[answer]
        key = answer_key(answer, self.kind, choices=self.choices)
        if key is None:
            self._by_string[answer] = None
            return None
        cls = self._by_key.get(key)
        if cls is None:
            for c, (leader, lkey) in enumerate(zip(self.leaders, self._leader_keys)):
                if self._may_merge(key, lkey) and answers_equivalent(
                        answer, leader, self.kind, choices=self.choices,
                        use_math_verify=self.use_math_verify, rel_tol=self.rel_tol):
                    cls = c
                    break
        if cls is None:
            cls = len(self.leaders)
            self.leaders.append(answer)
            self._leader_keys.append(key)
        self._by_key.setdefault(key, cls)
        self._by_string[answer] = cls
        return cls

    def _may_merge(self, key: Any, leader_key: Any) -> bool:
        """Can two answers whose keys differ still be equivalent? Only through math-verify or a tolerance."""
        if self.kind == "numeric":
            return key[0] == "num" and leader_key[0] == "num"
        kinds = {key[0], leader_key[0]}
        # different letters or words differ; two distinct exact rationals are different numbers
        return not (kinds & {"choice", "text"}) and kinds != {"q"}
