"""Public entry points of the sandbox: run a program, grade it against tests, grade many at once.

Every program runs in its own sandbox process (see :mod:`falcon_h1r.sandbox.runner`); the verdict
is computed here, in the trusted grader, from the plain data the program returned
(:mod:`falcon_h1r.sandbox.verdict`).
"""

from __future__ import annotations

import ast
import json
import random
import signal
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from falcon_h1r.sandbox import verdict as V
from falcon_h1r.sandbox.harness import EXIT_CPU
from falcon_h1r.sandbox.pool import ANSWER_GRACE_S, POOL, SandboxUnavailable

Test = str | V.StdioCase | Mapping[str, str]


@dataclass
class SandboxLimits:
    """Per-run resource limits. CPU and wall time in seconds, memory = address space.

    Disk: the program's only writable place is a tmpfs of ``max_files * max_file_bytes`` bytes and
    ``max_files`` files (plus a few for the interpreter's own use).
    """

    cpu_s: float = 5.0
    wall_s: float = 10.0
    memory_mb: int = 512
    max_procs: int = 64
    max_output_bytes: int = 65536
    max_file_bytes: int = 1 << 20
    max_open_files: int = 64
    max_files: int = 32

    def __post_init__(self) -> None:
        floors = {"cpu_s": 0.05, "wall_s": 0.1, "memory_mb": 64, "max_procs": 1, "max_output_bytes": 1,
                  "max_file_bytes": 0, "max_open_files": 16, "max_files": 0}
        for name, floor in floors.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= floor:
                raise ValueError(f"SandboxLimits.{name} must be a number >= {floor}, got {value!r}")


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run. ``passed`` is the binary code reward."""

    passed: bool
    reason: str  # ok | timeout | memory | cpu | output_limit | syntax_error | runtime_error: ... |
    #              tests_failed: <first failing test> | forbidden: network|process|native | sandbox_error: ...
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    returncode: int = 0
    tests_passed: int = 0
    tests_total: int = 0
    test_outcomes: list[bool] = field(default_factory=list)
    cpu_s: float = 0.0
    pid: int = 0  # the program's first process, as the host sees it
    detail: str = ""  # what was forbidden, or the error message
    sandbox_uid: int = 0  # the uid the program ran as (one per program)


def syntax_ok(code: str) -> bool:
    """True when ``code`` parses as Python (used by the data-curation filter)."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: source contains NUL bytes
        return False
    return True


def sample_tests(tests: list, sample: int | None, seed: int = 0) -> list:
    """Up to ``sample`` tests drawn without replacement (seeded), kept in their original order."""
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise ValueError(f"sample must be a positive int or None, got {sample!r}")
    if sample is None or sample >= len(tests):
        return list(tests)
    keep = sorted(random.Random(seed).sample(range(len(tests)), sample))
    return [tests[i] for i in keep]


# ----------------------------------------------------------------------------- one run
def _execute(code: str, mode: str, calls: list[str], stdin: str, limits: SandboxLimits,
             guard: bool = True) -> dict[str, Any]:
    """Send one program to a sandbox server; the raw answer (status, output, report lines)."""
    for attempt in (0, 1):
        req = {"op": "run", "code": code, "mode": mode, "calls": calls, "stdin": stdin, "limits": asdict(limits),
               "uid": POOL.next_uid(), "guard": guard}
        try:
            with POOL.server() as srv:
                return srv.request(req, limits.wall_s + ANSWER_GRACE_S)
        except SandboxUnavailable:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _events(raw: str) -> list[dict[str, Any]]:
    out = []
    for line in raw.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("e"), str):
            out.append(ev)
    return out


def _run_reason(ans: dict[str, Any], limits: SandboxLimits, program: bool) -> tuple[str | None, dict[str, Any]]:
    """The reason a run failed before its outputs could count (None if it finished), and its events."""
    status, events = ans.get("status") or {}, _events(ans.get("report", ""))
    first = {}
    for ev in events:
        first.setdefault(ev["e"], ev)
    sig, code, cpu = int(status.get("signal", 0) or 0), int(status.get("code", 0) or 0), float(status.get("cpu", 0.0))
    error, forbidden = first.get("error"), first.get("forbidden")
    if status.get("internal"):
        reason = "sandbox_error: " + str(status["internal"]).strip().splitlines()[-1][:200]
    elif "syntax_error" in first:
        reason = "syntax_error"
    elif forbidden:
        reason = f"forbidden: {forbidden.get('what')}"
    elif ans.get("over"):
        reason = "output_limit"
    elif status.get("timeout") or ans.get("backstop"):
        reason = "timeout"
    elif code == EXIT_CPU or sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= 0.9 * max(1, limits.cpu_s)):
        reason = "cpu"
    elif sig == signal.SIGXFSZ or (error and error.get("errno") == 27):  # EFBIG
        reason = "output_limit"
    elif (error and error.get("type") == "MemoryError") or (sig and "MemoryError" in ans.get("stderr", "")):
        reason = "memory"
    elif error:
        reason = f"runtime_error: {error.get('message') or error.get('type')}"
    elif sig:
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        reason = f"runtime_error: killed by {name}"
    elif program and not ("done" in first and code == 0):
        reason = f"runtime_error: exit status {code}"
    elif not program and "done" not in first:
        reason = f"runtime_error: exited before the tests finished (exit status {code})"
    else:
        reason = None
    detail = str((forbidden or {}).get("detail") or (error or {}).get("message") or "")
    return reason, {"events": events, "detail": detail, "code": code, "cpu": cpu}


def _result(ans: dict[str, Any], reason: str, passed: bool, info: dict[str, Any], outcomes: list[bool]) -> SandboxResult:
    status = ans.get("status") or {}
    return SandboxResult(passed=passed, reason=reason, stdout=ans.get("stdout", ""), stderr=ans.get("stderr", ""),
                         wall_s=float(status.get("wall", ans.get("wall", 0.0))), returncode=info["code"],
                         tests_passed=sum(outcomes), tests_total=len(outcomes), test_outcomes=outcomes,
                         cpu_s=info["cpu"], pid=int(status.get("wpid", 0) or 0), detail=info["detail"],
                         sandbox_uid=int(status.get("uid", 0) or 0))


def _grade_calls(code: str, tests: list[V.CallTest], limits: SandboxLimits, guard: bool = True) -> SandboxResult:
    ans = _execute(code, "calls", [t.call for t in tests], "", limits, guard)
    reason, info = _run_reason(ans, limits, program=False)
    got: dict[int, dict[str, Any]] = {}
    for ev in info["events"]:
        if ev["e"] == "result" and type(ev.get("i")) is int and 0 <= ev["i"] < len(tests):
            got.setdefault(ev["i"], ev)
    outcomes, notes = [], []
    for i, t in enumerate(tests):
        ev = got.get(i)
        if ev is None:
            outcomes.append(False)
            notes.append("no result")
        elif "error" in ev:
            outcomes.append(False)
            notes.append(str(ev["error"])[:300])
        else:
            value = V.decode_value(ev.get("v"))
            outcomes.append(V.strict_equal(t.expected, value))
            notes.append(V.describe_mismatch(t.expected, value))
    if reason is None:
        if all(outcomes):
            reason = "ok"
        else:
            i = outcomes.index(False)
            shown = tests[i].source.strip().replace("\n", "; ")[:200]
            reason = ("memory" if notes[i] == "MemoryError" else
                      f"tests_failed: {shown}" + (f" ({notes[i]})" if notes[i] else ""))
    return _result(ans, reason, reason == "ok", info, outcomes)


def _run_program(code: str, stdin: str, limits: SandboxLimits, guard: bool = True) -> tuple[SandboxResult, str | None]:
    ans = _execute(code, "program", [], stdin, limits, guard)
    reason, info = _run_reason(ans, limits, program=True)
    return _result(ans, reason or "ok", reason is None, info, []), reason


def _grade_stdio(code: str, cases: list[V.StdioCase], limits: SandboxLimits, guard: bool = True) -> SandboxResult:
    """One process per case, in order; the first failing case ends the run (the rest count as failed)."""
    outcomes: list[bool] = []
    last = None
    for i, case in enumerate(cases):
        last, reason = _run_program(code, case.input, limits, guard)
        if reason is None and not V.output_matches(case.output, last.stdout):
            reason = f"tests_failed: stdin/stdout case {i} (output differs)"
        if reason is not None:
            outcomes += [False] * (len(cases) - i)
            return replace(last, passed=False, reason=reason, tests_passed=sum(outcomes), tests_total=len(cases),
                           test_outcomes=outcomes)
        outcomes.append(True)
    return replace(last, passed=True, reason="ok", tests_passed=len(cases), tests_total=len(cases),
                   test_outcomes=outcomes)


# ----------------------------------------------------------------------------- public
def _check_code(code: Any) -> None:
    if not isinstance(code, str):
        raise TypeError(f"code must be a str of Python source, got {type(code).__name__}")


def _limits(limits: SandboxLimits | None) -> SandboxLimits:
    if limits is None:
        return SandboxLimits()
    if not isinstance(limits, SandboxLimits):
        raise TypeError(f"limits must be a SandboxLimits or None, got {type(limits).__name__}")
    return limits


def _parse_tests(tests: Any) -> list[V.CallTest] | list[V.StdioCase]:
    if not isinstance(tests, (list, tuple)):
        raise TypeError("tests must be a list of str (Python assert statements such as 'assert f(1) == 2') "
                        "or of stdin/stdout cases ({'input': ..., 'output': ...})")
    if not tests:
        raise ValueError("tests is empty: a code reward needs at least one test")
    if all(isinstance(t, str) for t in tests):
        return [V.parse_test(t) for t in tests]
    if any(isinstance(t, str) for t in tests):
        raise TypeError("tests mix assert statements and stdin/stdout cases; give one kind per program")
    return [V.parse_stdio_case(t) for t in tests]


def _grade(code: str, parsed: list, limits: SandboxLimits, guard: bool = True) -> SandboxResult:
    if not syntax_ok(code):
        n = len(parsed)
        return SandboxResult(False, "syntax_error", tests_total=n, test_outcomes=[False] * n)
    if isinstance(parsed[0], V.CallTest):
        return _grade_calls(code, parsed, limits, guard)
    return _grade_stdio(code, parsed, limits, guard)


def _timed(limits: SandboxLimits | None, timeout_s: float) -> SandboxLimits:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    limits = _limits(limits)
    return replace(limits, wall_s=float(timeout_s), cpu_s=min(limits.cpu_s, float(timeout_s)))


def run_python(code: str, *, stdin: str = "", limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` as a program (stdin in, stdout out). ``passed`` = it exited 0 within the limits."""
    _check_code(code)
    if not isinstance(stdin, str):
        raise TypeError(f"stdin must be a str, got {type(stdin).__name__}")
    limits = _limits(limits)
    if not syntax_ok(code):
        return SandboxResult(False, "syntax_error")
    return _run_program(code, stdin, limits)[0]


def run_python_tests(code: str, tests: Sequence[Test], *, timeout_s: float = 5.0,
                     limits: SandboxLimits | None = None, sample: int | None = None, seed: int = 0) -> SandboxResult:
    """Grade ``code`` against ``tests`` in its own sandbox; ``passed`` (reward 1.0) only if all pass.

    ``tests`` are either assert statements (``assert solve(3) == 9``: the sandbox evaluates
    ``solve(3)``, the grader compares with ``9``, type-strict) or stdin/stdout cases
    (``{"input": ..., "output": ...}``, one process per case, output compared after whitespace
    normalisation). Any other test form raises ValueError naming it. ``timeout_s`` is the wall budget
    of a run (CPU is capped at the same value); ``sample`` = the paper's "up to N test cases sampled
    per problem".
    """
    _check_code(code)
    limits = _timed(limits, timeout_s)
    chosen = sample_tests(list(tests), sample, seed) if isinstance(tests, (list, tuple)) else tests
    return _grade(code, _parse_tests(chosen), limits)


def grade_programs(items: Sequence[tuple[str, Sequence[Test]]], *, timeout_s: float = 5.0,
                   limits: SandboxLimits | None = None, workers: int = 2, progress: bool = False) -> list[SandboxResult]:
    """Grade many ``(code, tests)`` pairs, each program in its own sandbox, ``workers`` at a time.

    Same semantics as :func:`run_python_tests` per item (no sampling: pass the tests to use). Every
    test of every item is parsed before anything runs, so a malformed test raises ValueError naming
    the item, not half-way through.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    limits = _timed(limits, timeout_s)
    parsed = []
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"item {i} must be a (code, tests) pair, got {type(item).__name__}")
        _check_code(item[0])
        try:
            parsed.append((item[0], _parse_tests(list(item[1]) if isinstance(item[1], tuple) else item[1])))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"item {i}: {exc}") from None
    from tqdm.auto import tqdm

    results: list[SandboxResult] = []
    with (tqdm(total=len(parsed), desc="code tests (sandbox)", disable=not progress or not parsed, leave=False) as bar,
          ThreadPoolExecutor(max_workers=workers) as ex):
        for r in ex.map(lambda p: _grade(p[0], p[1], limits), parsed):
            results.append(r)
            bar.update(1)
    return results
