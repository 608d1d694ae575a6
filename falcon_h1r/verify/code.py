"""Grading code answers by running them in the sandbox against the problem's tests.

Two test formats:

- ``tests``: Python ``assert <call> == <literal>`` statements (the package's synthetic tasks and curated
  training sets): the sandbox evaluates the call and the verdict is computed outside the program;
- ``test_cases`` (LiveCodeBench): ``{"input", "output"}`` pairs with ``test_type`` ``"stdin"`` (the
  program reads stdin and writes stdout) or ``"functional"`` (``input`` holds one JSON value per line,
  the arguments of ``fn_name``; ``output`` is the JSON result). Functional cases become such assert
  statements, the JSON read here, in the trusted process (one sandbox process); stdin cases run the program
  once per case, because a program reads the real standard input (``sys.stdin``, ``input()``, ``open(0)``),
  which only a fresh process gives. Stdout is compared as LiveCodeBench does: line by line after stripping,
  a line also matching when both parse as the same list of decimals.

Functional results: LiveCodeBench compares ``prediction == expected`` with Python's ``==`` (after turning a
top-level tuple into a list), so ``2`` matches an expected ``2.0`` and ``True`` an expected ``1``, while the
sandbox compares type-strictly (``1 != 1.0``). We keep the strict sandbox and compare canonical forms
(:func:`lcb_canonical`): numbers of equal value share one form (an integral float or a bool becomes the int),
containers keep their kind (a nested tuple still differs from a list, as under ``==``), so the strict
comparison of the two canonical forms gives exactly LiveCodeBench's verdict
(:func:`lcb_reference_equal` is the plain rule the tests compare against). The returned value is
canonicalised inside the sandbox (the same function's source, in the prelude), the expected JSON here.

The sandbox is the package's own (:mod:`falcon_h1r.sandbox`); the reward is 1 only if every test passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

TEST_TYPES = ("stdin", "functional")

# Standard-library names a competitive-programming solution uses without importing them (LiveCodeBench
# grades functional solutions with such a preamble, so ``List[int]`` annotations and ``deque`` resolve).
FUNCTIONAL_PRELUDE = (
    "from typing import *\n"
    "from collections import *\n"
    "from itertools import *\n"
    "from functools import *\n"
    "from heapq import *\n"
    "from bisect import *\n"
    "from math import *\n"
    "import collections, itertools, functools, heapq, bisect, math, string, re, copy, operator, random\n"
    "import sys\n"
    "sys.setrecursionlimit(1 << 16)\n"
)


def lcb_canonical(value, top=True):  # noqa: ANN001, ANN201 - its source also runs in the sandbox's prelude
    """The form in which two values compare strictly equal exactly when LiveCodeBench's ``==`` says equal:
    a top-level tuple becomes a list; bools, ints and integral floats become ints, other floats stay;
    complex numbers with no imaginary part become their real part; frozensets become sets; lists, tuples,
    sets and dict keys and values are canonicalised inside. NaN stays NaN (equal to nothing, as under ==)."""
    if top and type(value) is tuple:
        value = list(value)
    t = type(value)
    if t is bool:
        return int(value)
    if t is complex and value.imag == 0:
        value, t = value.real, float
    if t is float:
        return int(value) if value == value and value not in (float("inf"), float("-inf")) \
            and value == int(value) else value
    if t is list or t is tuple:
        return t(lcb_canonical(v, False) for v in value)
    if t is set or t is frozenset:
        return set(lcb_canonical(v, False) for v in value)
    if t is dict:
        return {lcb_canonical(k, False): lcb_canonical(v, False) for k, v in value.items()}
    return value


def lcb_reference_equal(prediction: Any, expected: Any) -> bool:
    """LiveCodeBench's own rule for a functional case, plainly: a top-level tuple as a list, then ``==``."""
    if isinstance(prediction, tuple):
        prediction = list(prediction)
    return bool(prediction == expected)


def _literal(value: Any) -> str:
    """A Python literal of a canonical JSON value (``ast.literal_eval`` reads it back); NaN has none."""
    if isinstance(value, float) and value != value:
        raise ValueError("functional test case: the expected output holds NaN, which equals nothing")
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "-1e999" if value < 0 else "1e999"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _prelude() -> str:
    import inspect

    return FUNCTIONAL_PRELUDE + inspect.getsource(lcb_canonical).replace("lcb_canonical", "_falcon_lcb") + "\n"


def functional_test(fn_name: str, case: dict[str, Any], *, class_based: bool) -> str:
    """One LiveCodeBench functional case as ``assert _falcon_lcb(<call>) == <literal>`` (needs the prelude of
    :func:`run_test_cases`: :data:`FUNCTIONAL_PRELUDE` and :func:`lcb_canonical` as ``_falcon_lcb``).

    The JSON arguments and result are parsed here, outside the sandbox, and written as Python literals (the
    result in its canonical form), so the program only ever sees its arguments."""
    import json

    if not fn_name.isidentifier():
        raise ValueError(f"fn_name must be a Python identifier, got {fn_name!r}")
    target = f"Solution().{fn_name}" if class_based else fn_name
    try:
        args = [json.loads(line) for line in str(case["input"]).split("\n") if line.strip()]
        expected = json.loads(str(case["output"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"functional test case: input and output must be JSON values, one per line ({exc})") from None
    return f"assert _falcon_lcb({target}(*{args!r})) == {_literal(lcb_canonical(expected))}"


def _decimal_line(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except (InvalidOperation, ValueError):
        return None


def stdout_matches(got: str, want: str) -> bool:
    """LiveCodeBench's stdout rule: same number of stripped lines, each equal as text or as decimals."""
    got_lines = [line.strip() for line in got.strip().split("\n")]
    want_lines = [line.strip() for line in want.strip().split("\n")]
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines):
        if g == w:
            continue
        gd, wd = _decimal_line(g), _decimal_line(w)
        if gd is None or wd is None or gd != wd:
            return False
    return True


def validate_test_cases(cases: Any, test_type: str) -> list[dict[str, str]]:
    if test_type not in TEST_TYPES:
        raise ValueError(f"test_type {test_type!r} not accepted; use one of {list(TEST_TYPES)}")
    if not isinstance(cases, (list, tuple)) or not cases:
        raise ValueError("test_cases must be a non-empty list of {'input': str, 'output': str}")
    out = []
    for i, c in enumerate(cases):
        if not isinstance(c, dict) or not isinstance(c.get("input"), str) or not isinstance(c.get("output"), str):
            raise ValueError(f"test_cases[{i}] must be {{'input': str, 'output': str}}, got {c!r:.120}")
        out.append({"input": c["input"], "output": c["output"]})
    return out


def run_test_cases(code: str, cases: Sequence[dict[str, str]], test_type: str, *, fn_name: str | None = None,
                   timeout_s: float = 6.0, sample: int | None = None, seed: int = 0) -> tuple[bool, str]:
    """(passed, reason) of ``code`` on LiveCodeBench-style cases; stops at the first failing stdin case.

    ``timeout_s`` bounds each stdin case; a functional run (one process) gets ``timeout_s`` per case.
    ``sample`` draws up to that many cases (seeded): the paper's "up to N test cases sampled per problem".
    """
    from falcon_h1r.sandbox import SandboxLimits, run_python, run_python_tests, sample_tests

    cases = validate_test_cases(cases, test_type)
    keep = sample_tests([str(i) for i in range(len(cases))], sample, seed)
    cases = [cases[int(i)] for i in keep]
    if test_type == "functional":
        if not fn_name:
            raise ValueError("functional test cases need fn_name (the function or Solution method to call)")
        class_based = "class Solution" in code
        tests = [functional_test(fn_name, c, class_based=class_based) for c in cases]
        budget = timeout_s * len(cases)
        result = run_python_tests(_prelude() + code, tests, timeout_s=budget,
                                  limits=SandboxLimits(cpu_s=budget, wall_s=budget))
        return result.passed, "ok" if result.passed else result.reason
    limits = SandboxLimits(cpu_s=timeout_s, wall_s=2 * timeout_s + 1.0, max_output_bytes=1 << 22)
    for i, case in enumerate(cases):
        result = run_python(code, stdin=case["input"], limits=limits)
        if not result.passed:
            return False, f"test {i}: {result.reason}"
        if not stdout_matches(result.stdout, case["output"]):
            return False, f"tests_failed: test {i}: wrong answer"
    return True, "ok"
