"""The trusted half of grading: tests parsed here, outputs compared here, never inside the sandbox.

A code test ``assert solve(3) == 9`` is split with :mod:`ast` into the call expression
``solve(3)``, which the sandbox evaluates, and the expected literal ``9``, which never enters it.
The sandbox ships the call's value back as type-tagged plain data; :func:`decode_value` rebuilds it
from exact builtin types and :func:`strict_equal` compares it with the expected value, types
included. A program therefore cannot report, compare or shadow anything on the grader's behalf: the
most it can do is return values, and it does not know which ones are expected.

stdin/stdout tests (LiveCodeBench style) give an input text and the expected output text; the
output is compared here after whitespace normalisation (:func:`normalise_output`).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ACCEPTED_FORMS = ("'assert <expression> == <literal>' (either side may be the literal), "
                  "'assert <expression>' (the value must be exactly True) or "
                  "'assert not <expression>' (exactly False)")


@dataclass(frozen=True)
class CallTest:
    """One parsed ``assert``: the expression the sandbox evaluates and the value it must equal."""

    source: str
    call: str
    expected: Any


@dataclass(frozen=True)
class StdioCase:
    """One stdin/stdout test: the program reads ``input`` and must print ``output``."""

    input: str
    output: str


def _literal(node: ast.expr) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def parse_test(source: str) -> CallTest:
    """Split one assert statement into (call expression, expected literal); ValueError otherwise."""
    if not isinstance(source, str):
        raise TypeError(f"a test must be a str, got {type(source).__name__}")
    shown = source.strip()[:120]
    try:
        tree = ast.parse(source.strip(), mode="exec")
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"test {shown!r} does not parse ({exc}); accepted: {ACCEPTED_FORMS}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise ValueError(f"test {shown!r} is not a single assert statement; accepted: {ACCEPTED_FORMS}")
    test = tree.body[0].test
    if isinstance(test, ast.Compare):
        if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
            raise ValueError(f"test {shown!r} compares with something other than one '=='; "
                             f"accepted: {ACCEPTED_FORMS}")
        left, right = test.left, test.comparators[0]
        right_ok, right_value = _literal(right)
        left_ok, left_value = _literal(left)
        if right_ok:
            return CallTest(source, ast.unparse(left), right_value)
        if left_ok:
            return CallTest(source, ast.unparse(right), left_value)
        raise ValueError(f"test {shown!r} has no literal side to compare with (the expected value must be "
                         f"a Python literal); accepted: {ACCEPTED_FORMS}")
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return CallTest(source, ast.unparse(test.operand), False)
    return CallTest(source, ast.unparse(test), True)


def parse_stdio_case(case: Any) -> StdioCase:
    """A :class:`StdioCase`, or a mapping with str ``input`` and ``output``; ValueError otherwise."""
    if isinstance(case, StdioCase):
        return case
    if isinstance(case, Mapping) and isinstance(case.get("input"), str) and isinstance(case.get("output"), str):
        return StdioCase(case["input"], case["output"])
    raise ValueError(f"stdin/stdout test {str(case)[:120]!r} must be a StdioCase or a mapping with str "
                     f"'input' and 'output'")


# ----------------------------------------------------------------------------- values
class Unsupported:
    """A value the program returned that is not plain data (never equal to anything)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name}: not plain data>"


def decode_value(tagged: Any) -> Any:
    """Rebuild a value from its tagged form (see ``harness.encode_value``); malformed -> Unsupported."""
    try:
        return _decode(tagged, 0)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, OverflowError):
        return Unsupported("malformed")


def _decode(t: Any, depth: int) -> Any:
    if depth > 80 or not isinstance(t, dict):
        raise ValueError("malformed")
    kind, v = t.get("t"), t.get("v")
    if kind == "bool" and type(v) is bool:
        return v
    if kind == "int" and isinstance(v, str):
        return int(v, 16)
    if kind == "float" and isinstance(v, str):
        return float(v)
    if kind == "str" and isinstance(v, str):
        return v
    if kind == "none":
        return None
    if kind == "bytes" and isinstance(v, str):
        return bytes.fromhex(v)
    if kind == "complex" and isinstance(v, list) and len(v) == 2:
        return complex(float(v[0]), float(v[1]))
    if kind in ("list", "tuple", "set", "frozenset") and isinstance(v, list):
        items = [_decode(x, depth + 1) for x in v]
        if kind in ("set", "frozenset") and any(isinstance(x, Unsupported) for x in items):
            return Unsupported(kind)
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind](items)
    if kind == "dict" and isinstance(v, list):
        pairs = [(_decode(k, depth + 1), _decode(x, depth + 1)) for k, x in v]
        if any(isinstance(k, Unsupported) for k, _ in pairs):
            return Unsupported("dict")
        return dict(pairs)
    if kind == "unsupported":
        return Unsupported(str(t.get("type"))[:100])
    raise ValueError("malformed")


def strict_equal(expected: Any, got: Any) -> bool:
    """``expected == got`` with the same exact type at every level (``1 != 1.0 != True``)."""
    if type(expected) is not type(got) or isinstance(got, Unsupported):
        return False
    if isinstance(expected, (list, tuple)):
        return len(expected) == len(got) and all(strict_equal(a, b) for a, b in zip(expected, got))
    if isinstance(expected, dict):
        if expected.keys() != got.keys():
            return False
        got_keys = {k: k for k in got}
        return all(strict_equal(k, got_keys[k]) and strict_equal(v, got[got_keys[k]]) for k, v in expected.items())
    if isinstance(expected, (set, frozenset)):
        if expected != got:
            return False
        got_items = {x: x for x in got}
        return all(strict_equal(x, got_items[x]) for x in expected)
    if isinstance(expected, float) and math.isnan(expected):
        return False  # like ==: nan equals nothing
    return bool(expected == got)


def describe_mismatch(expected: Any, got: Any) -> str:
    """A short note for a failed comparison ('' when only the value differs)."""
    if isinstance(got, Unsupported):
        return f"returned {got.type_name}, which is not plain data"
    if type(expected) is not type(got):
        return f"returned {type(got).__name__}, expected {type(expected).__name__}"
    return ""


def normalise_output(text: str) -> list[str]:
    """Lines with surrounding whitespace removed, blank lines at either end dropped (LiveCodeBench)."""
    return [line.strip() for line in text.strip().splitlines()]


def output_matches(expected: str, got: str) -> bool:
    return normalise_output(expected) == normalise_output(got)
