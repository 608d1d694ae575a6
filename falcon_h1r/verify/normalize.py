"""Cheap, exact canonical forms of answers (tier 1), and which kind of answer a reference is.

Why our own code next to math-verify: math-verify decides whether two *mathematical* expressions are
equal, and does it well (intervals, sets, units, percentages, ``\\frac`` vs decimals). It is not built
for the other answer forms the benchmarks use, and there it errs in both directions:

- words are parsed as products of symbols, so ``yes`` equals ``sey`` (``y*e*s``);
- an option letter in ``\\text{(E)}`` and a unit in ``5\\text{ m/s}`` are both text: deciding which
  text is a unit to drop and which is the answer needs the reference's kind;
- scientific notation ``3e5`` is read as ``3*e*5``, and a one-letter ``\\mathrm{i}`` is dropped as a unit;
- it is ~1000x slower than an exact comparison, and DeepConf groups 10^4+ answers per problem.

So this module (a) classifies a reference as multiple choice, text or math, (b) gives text and
letters a content key, and (c) gives numbers an exact rational value (integers with leading zeros,
decimals, fractions, scientific notation, thousands separators). Tier 1 is *sound*, never complete:
two answers it calls equal are equal; when it says "different" for math, math-verify decides.
"""

from __future__ import annotations

import re
from fractions import Fraction

from falcon_h1r.verify.extract import _WRAPPER, choice_letter, unwrap_text_macros

ANSWER_KINDS = ("integer", "math", "multiple_choice", "text", "numeric", "code", "judge")

# Spacing and sizing macros that never change a value.
_SPACING = re.compile(r"\\left|\\right|\\big[lr]?|\\Big[lr]?|\\bigg[lr]?|\\Bigg[lr]?|\\displaystyle|\\!|\\,|\\;|\\:"
                      r"|\\ |\\quad|\\qquad|~|\$|\s+")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|°|\\degree")
_PERCENT = re.compile(r"\\%|%")
_ONE_LETTER_ROMAN = re.compile(r"\\(?:mathrm|text|operatorname)\s*\{\s*([A-Za-z])\s*\}")


def normalize_math(ans: str) -> str:
    """Canonical string for tier-1 comparison.

    No spaces, sizing macros, ``$``, trailing period, degree signs or percent signs; ``\\dfrac`` and
    ``\\tfrac`` become ``\\frac``; ``\\text{...}``-like wrappers are replaced by their *content* (never
    dropped with it: ``\\text{(E)}`` and ``\\text{(B)}`` must stay different); one pair of outer braces
    is removed.
    """
    s = str(ans).strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("−", "-").replace("\\{,\\}", "")
    s = s.replace("{,}", "")
    s = _ONE_LETTER_ROMAN.sub(lambda m: m.group(1), s)  # \mathrm{i} is the letter i, not a unit
    s = unwrap_text_macros(s)
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub("", s)
    s = _SPACING.sub("", s)
    s = s.rstrip(".")
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1]
    return s


_FRAC = re.compile(r"^([-+]?)\\frac(?:\{([-+]?\d+)\}|(\d))(?:\{([-+]?\d+)\}|(\d))$")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SLASH = re.compile(r"[-+]?\d+/[-+]?\d+")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_TIMES_TEN = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+))(?:\\times|\\cdot|×|\*)10\^(?:\{([-+]?\d+)\}|([-+]?\d))$")


def to_rational(ans: str) -> Fraction | None:
    """Exact value of a plain number, or None for anything else.

    Accepted: integers (also with leading zeros: AIME's ``007``), decimals, ``a/b``, ``\\frac{a}{b}``
    and ``\\frac12``, scientific notation (``3e5``, ``3.0\\times10^{8}``, ``2\\cdot10^{-3}``), thousands
    separators in strict groups of three (``1,000``, ``1{,}000``), and degree or percent signs
    (``30^\\circ`` is 30, ``50\\%`` is 50: the value a MATH-style answer key writes).
    """
    s = normalize_math(ans)
    s = s.removeprefix("+")
    try:
        m = _FRAC.match(s)
        if m:
            sign = -1 if m.group(1) == "-" else 1
            return sign * Fraction(int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5)))
        if _THOUSANDS.fullmatch(s):
            s = s.replace(",", "")
        if _PLAIN_NUMBER.fullmatch(s) or _SLASH.fullmatch(s):
            return Fraction(s)
        m = _TIMES_TEN.match(s)
        if m:
            return Fraction(m.group(1)) * Fraction(10) ** int(m.group(2) or m.group(3))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def is_percent(ans: str) -> bool:
    return bool(_PERCENT.search(str(ans)))


# ----------------------------------------------------------------------------- science (tolerance)
_NUM = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_number(ans: str | None) -> float | None:
    """The value of an answer as a float: exactly when :func:`to_rational` can, else the first number
    in the text (so ``12.5 m/s`` is 12.5)."""
    if ans is None:
        return None
    r = to_rational(ans)
    if r is not None:
        return float(r)
    m = _NUM.search(str(ans).replace(",", ""))
    return float(m.group()) if m else None


def numeric_close(pred: str | None, gold: str | float, rel_tol: float = 1e-2, abs_tol: float = 1e-6) -> bool:
    p = parse_number(pred)
    g = float(gold) if not isinstance(gold, str) else parse_number(gold)
    if p is None or g is None:
        return False
    return abs(p - g) <= max(abs_tol, rel_tol * abs(g))


# ----------------------------------------------------------------------------- kinds and text keys
_ONLY_WRAPPERS = re.compile(r"^(?:\s*" + _WRAPPER.pattern + r"[\s.,;:!?]*)+$")
_PLAIN_WORDS = re.compile(r"^[A-Za-z][A-Za-z'\- ]*[A-Za-z][.!]?$")
_THREE_LETTERS = re.compile(r"[A-Za-z]{3,}")
_MATH_WORDS = {"infty", "pi", "sqrt", "frac", "sin", "cos", "tan", "log", "ln", "exp"}


def text_key(ans: str) -> str:
    """Content of a text answer for comparison: wrappers and ``$`` removed, lower case, inner spaces
    collapsed, surrounding punctuation and quotes dropped (``\\text{Monday.}`` -> ``monday``)."""
    s = unwrap_text_macros(str(ans)).replace("$", "").replace("\\ ", " ").replace("~", " ")
    s = re.sub(r"\\[,;:!]", " ", s)
    s = re.sub(r"\s+", " ", s).strip().strip(".,;:!?\"'`").strip()
    return s.lower()


def classify_answer(ans: str) -> str:
    """``multiple_choice``, ``text`` or ``math``: how a MATH-style reference answer is compared.

    - ``multiple_choice``: an option letter, ``(C)``, ``\\text{(C)}`` or a single capital ``C``;
    - ``text``: only ``\\text{...}``-like wrappers holding no digit (``\\text{Monday}``, ``\\text{even}``),
      or plain words with no digit, operator or backslash and at least one run of three letters
      (``yes``, ``no solution``); two-letter strings like ``ab`` stay math (a product of variables);
    - ``math``: everything else (numbers, expressions, intervals, sets, tuples, numbers with units).
    """
    s = str(ans).strip().strip("$").strip()
    if not s:
        return "math"
    if re.fullmatch(r"(?:\\(?:text|textbf|mathrm|mbox)\s*\{\s*)?\(?[A-Z]\)?\s*\}?", s) and choice_letter(s):
        return "multiple_choice"
    if _ONLY_WRAPPERS.match(s):
        return "math" if re.search(r"\d", unwrap_text_macros(s)) else "text"
    if _PLAIN_WORDS.match(s) and _THREE_LETTERS.search(s):
        words = {w.lower() for w in re.findall(r"[A-Za-z]+", s)}
        return "math" if words <= _MATH_WORDS else "text"
    return "math"
