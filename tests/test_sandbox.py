"""The sandbox that grades generated code (paper §3.2 code reward): tests parsed and compared outside
the jail, type-strict; programs and stdin/stdout cases graded; the jail's layers reported."""

from __future__ import annotations

import ast
import dis
import os
import tempfile
import time
import types
import warnings

import pytest

from falcon_h1r import sandbox as sb
from falcon_h1r.sandbox import api, harness, jail, pool
from falcon_h1r.sandbox import verdict as V

FAST = sb.SandboxLimits(cpu_s=1.0, wall_s=3.0, memory_mb=256, max_procs=32, max_output_bytes=16384,
                        max_file_bytes=1 << 20, max_open_files=32, max_files=16)

ADD = "def add(a, b):\n    return a + b\n"


def test_every_public_name_is_importable():
    assert [name for name in sb.__all__ if not hasattr(sb, name)] == []


# ----------------------------------------------------------------------------- bad input
def test_syntax_ok_parses_like_ast():
    assert sb.syntax_ok(ADD)
    assert not sb.syntax_ok("def f(:\n    pass")
    assert not sb.syntax_ok("x = 1\x00")
    with pytest.raises(TypeError, match="code must be a str"):
        sb.syntax_ok(None)


def test_limits_reject_bad_values_by_name():
    with pytest.raises(ValueError, match="cpu_s"):
        sb.SandboxLimits(cpu_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        sb.SandboxLimits(memory_mb=8)
    with pytest.raises(ValueError, match="max_procs"):
        sb.SandboxLimits(max_procs=True)


def test_bad_arguments_get_clear_errors():
    with pytest.raises(TypeError, match="tests must be a list of str"):
        sb.run_python_tests(ADD, "assert add(1, 2) == 3")
    with pytest.raises(ValueError, match="tests is empty"):
        sb.run_python_tests(ADD, [])
    with pytest.raises(ValueError, match="timeout_s"):
        sb.run_python_tests(ADD, ["assert add(1, 2) == 3"], timeout_s=0)
    with pytest.raises(ValueError, match="sample"):
        sb.run_python_tests(ADD, ["assert add(1, 2) == 3"], sample=0)
    with pytest.raises(TypeError, match="stdin"):
        sb.run_python("print(1)", stdin=b"x")
    with pytest.raises(TypeError, match="mix"):
        sb.run_python_tests(ADD, ["assert add(1, 2) == 3", {"input": "", "output": ""}])
    with pytest.raises(ValueError, match="input"):
        sb.run_python_tests(ADD, [{"input": "1"}])
    with pytest.raises(ValueError, match="item 1: test 'assert add"):
        sb.grade_programs([(ADD, ["assert add(1, 2) == 3"]), (ADD, ["assert add(1, 2) > 0"])])
    with pytest.raises(ValueError, match="workers"):
        sb.grade_programs([(ADD, ["assert add(1, 2) == 3"])], workers=0)


# ----------------------------------------------------------------------------- the trusted half
def test_parse_test_splits_the_call_from_the_expected_literal():
    t = sb.parse_test("assert solve([1, 2], k=3) == {'a': (1, 2.5)}")
    assert (t.call, t.expected) == ("solve([1, 2], k=3)", {"a": (1, 2.5)})
    assert sb.parse_test("assert -4 == f(2)").call == "f(2)" and sb.parse_test("assert -4 == f(2)").expected == -4
    assert sb.parse_test("assert f(2) == 3, 'message ignored'").expected == 3
    assert (sb.parse_test("assert ok(1)").expected, sb.parse_test("assert not ok(1)").expected) == (True, False)
    for bad, why in (("assert f(1) > 0", "other than one '=='"), ("assert f(1) == g(2)", "no literal side"),
                     ("assert 1 == f(1) == 1", "other than one '=='"), ("x = f(1)", "single assert"),
                     ("assert f(1) == 1\nassert f(2) == 2", "single assert"), ("assert f(", "does not parse")):
        with pytest.raises(ValueError, match=why) as err:
            sb.parse_test(bad)
        assert "accepted: 'assert <expression> == <literal>'" in str(err.value)


@pytest.mark.parametrize("expected, got, equal", [
    (1, 1, True), (1, 1.0, False), (1, True, False), (0.5, 0.5, True), (float("nan"), float("nan"), False),
    ([1, [2, "x"]], [1, [2, "x"]], True), ([1, 2], (1, 2), False), ((1, (2,)), (1, (2.0,)), False),
    ({1: "a"}, {True: "a"}, False), ({"k": [1]}, {"k": [1]}, True), ({1, 2}, {2, 1}, True), ({1}, {1.0}, False),
    (None, None, True), (b"x", "x", False), ("x", "x", True), (frozenset({1}), {1}, False),
])
def test_strict_equal_compares_types_at_every_level(expected, got, equal):
    assert V.strict_equal(expected, got) is equal


def test_values_round_trip_as_tagged_plain_data():
    value = [10**5000, -3, 2.5, float("inf"), "é\n", b"\x00\xff", None, True, (1, (2,)), {"k": {3, 4}},
             frozenset({"a"}), 1 + 2j, {(1, 2): [None]}]
    back = V.decode_value(harness.encode_value(value))
    assert V.strict_equal(value, back)

    class Sneaky(int):
        def __eq__(self, other):
            return True
    assert isinstance(V.decode_value(harness.encode_value(Sneaky(3))), V.Unsupported)
    nested: list = []
    for _ in range(100):
        nested = [nested]
    assert not V.strict_equal(nested, V.decode_value(harness.encode_value(nested)))  # too deep: unsupported
    for malformed in ({"t": "int", "v": 3}, {"t": "set", "v": [{"t": "list", "v": []}]}, "x", {"t": "?"}):
        assert isinstance(V.decode_value(malformed), V.Unsupported)


def test_stdout_is_compared_after_whitespace_normalisation():
    assert V.output_matches("1 2\n3\n", "  1 2  \n3\n\n\n")
    assert not V.output_matches("1 2\n3\n", "1  2\n3\n") and not V.output_matches("1\n2", "1\n\n2")


# ----------------------------------------------------------------------------- grading
def test_program_reads_stdin_and_writes_stdout():
    code = "import sys\nn = int(input())\nprint(sum(map(int, sys.stdin.read().split()[:n])))\n"
    res = sb.run_python(code, stdin="3\n4 5 6 100\n", limits=FAST)
    assert (res.passed, res.reason, res.stdout, res.returncode) == (True, "ok", "15\n", 0)


def test_program_nonzero_exit_and_exception_are_failures():
    res = sb.run_python("import sys\nsys.exit(3)", limits=FAST)
    assert not res.passed and res.reason.startswith("runtime_error") and res.returncode == 3
    res = sb.run_python("x = 1 / 0", limits=FAST)
    assert not res.passed and res.reason == "runtime_error: ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in res.stderr  # the traceback is kept for debugging


def test_asserts_decide_the_reward_type_strict():
    good = sb.run_python_tests(ADD, ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"], limits=FAST)
    assert good.passed and good.reason == "ok"
    assert (good.tests_passed, good.tests_total, good.test_outcomes) == (2, 2, [True, True])
    bad = sb.run_python_tests(ADD, ["assert add(2, 3) == 5", "assert add(1, 1) == 3", "assert add(0, 0) == 0"],
                              limits=FAST)
    assert not bad.passed and bad.reason == "tests_failed: assert add(1, 1) == 3"
    assert bad.test_outcomes == [True, False, True] and bad.tests_passed == 2
    floaty = sb.run_python_tests(ADD, ["assert add(1.0, 1) == 2"], limits=FAST)
    assert floaty.reason == "tests_failed: assert add(1.0, 1) == 2 (returned float, expected int)"
    assert sb.run_python_tests("def ok():\n    return 1\n", ["assert ok()"], limits=FAST).reason.endswith(
        "(returned int, expected bool)")


def test_error_inside_a_test_names_the_test_and_the_error():
    res = sb.run_python_tests(ADD, ["assert sub(2, 1) == 1"], limits=FAST)
    assert not res.passed and res.reason.startswith("tests_failed: assert sub(2, 1) == 1 (NameError")


def test_memory_error_inside_a_test_is_classified_as_memory():
    res = sb.run_python_tests("def grow():\n    return bytearray(1 << 40)\n", ["assert len(grow()) == 1"],
                              limits=FAST)
    assert not res.passed and res.reason == "memory"


def test_code_that_crashes_before_tests_gets_no_reward():
    res = sb.run_python_tests("raise ValueError('boom')\n" + ADD, ["assert add(1, 2) == 3"], limits=FAST)
    assert not res.passed and res.reason == "runtime_error: ValueError: boom"
    assert res.tests_passed == 0 and res.tests_total == 1


def test_syntax_error_is_reported_without_running():
    res = sb.run_python_tests("def add(a, b:\n    return a + b", ["assert add(1, 2) == 3"], limits=FAST)
    assert not res.passed and res.reason == "syntax_error"
    assert res.tests_total == 1 and res.test_outcomes == [False]
    assert sb.run_python("print(", limits=FAST).reason == "syntax_error"


def test_sampling_is_seeded_ordered_and_graded():
    tests = [f"assert add({i}, 1) == {i + 1}" for i in range(6)]
    tests[4] = "assert add(4, 1) == 0"  # the only failing test
    for seed in range(4):
        chosen = sb.sample_tests(tests, 3, seed)
        assert len(chosen) == 3 and chosen == [t for t in tests if t in chosen]  # subset, original order
        assert chosen == sb.sample_tests(tests, 3, seed)  # deterministic per seed
        res = sb.run_python_tests(ADD, tests, sample=3, seed=seed, limits=FAST)
        assert res.tests_total == 3 and res.passed == (tests[4] not in chosen)
    assert len({tuple(sb.sample_tests(tests, 3, s)) for s in range(20)}) > 1
    assert sb.sample_tests(tests, 100, 0) == tests and sb.sample_tests(tests, None, 0) == tests


def test_stdin_stdout_cases_one_process_each():
    code = "a, b = map(int, input().split())\nprint(a + b)\nprint()\n"
    cases = [{"input": "1 2\n", "output": "3"}, sb.StdioCase("10 -4", " 6 \n\n")]
    res = sb.run_python_tests(code, cases, limits=FAST)
    assert res.passed and res.test_outcomes == [True, True]
    wrong = sb.run_python_tests(code, [cases[0], {"input": "2 2", "output": "5"}, cases[1]], limits=FAST)
    assert not wrong.passed and wrong.reason == "tests_failed: stdin/stdout case 1 (output differs)"
    assert wrong.test_outcomes == [True, False, False]  # the first failing case ends the run
    crash = sb.run_python_tests("raise SystemExit(2)", cases, limits=FAST)
    assert crash.reason == "runtime_error: SystemExit(2)" and crash.test_outcomes == [False, False]


def test_grade_programs_keeps_order_and_matches_one_by_one():
    items = [(ADD, [f"assert add({i}, {i}) == {2 * i + (i % 2)}"]) for i in range(6)]  # odd i fail
    items.append(("print(int(input()) * 2)", [{"input": "21", "output": "42"}]))
    results = sb.grade_programs(items, timeout_s=3, workers=2)
    assert [r.passed for r in results] == [i % 2 == 0 for i in range(6)] + [True]
    assert len({r.sandbox_uid for r in results}) == len(items)  # one uid per program
    one = sb.run_python_tests(*items[1], timeout_s=3)
    assert (one.passed, one.reason) == (results[1].passed, results[1].reason)


def test_common_stdlib_solutions_run_under_the_guard():
    code = (
        "import asyncio, collections, dataclasses, heapq, fractions, decimal, functools, itertools, tempfile\n"
        "import pathlib, os, uuid, random, subprocess, typing, enum, statistics\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "P = collections.namedtuple('P', 'x y')\n"
        "@dataclasses.dataclass\nclass A:\n    x: int\n"
        "async def main():\n    await asyncio.sleep(0)\n    return 7\n"
        "assert asyncio.run(main()) == 7\n"
        "with ThreadPoolExecutor(4) as ex:\n    assert list(ex.map(lambda v: v * v, range(4))) == [0, 1, 4, 9]\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    p = pathlib.Path(d) / 'a.txt'\n    p.write_text('hi')\n    assert p.read_text() == 'hi'\n"
        "with open('scratch.txt', 'w') as f:\n    f.write('x')\n"
        "assert 'scratch.txt' in os.listdir('.')\nos.remove('scratch.txt')\n"
        "print(P(1, 2), A(3), fractions.Fraction(1, 3) + 1, decimal.Decimal('1.1') * 2, uuid.uuid4().version,"
        " functools.lru_cache(None)(lambda n: n)(5), statistics.mean([1, 2, 3]), open(__file__).read()[:6])\n"
    )
    res = sb.run_python(code, limits=FAST)
    assert res.reason == "ok", (res.reason, res.detail, res.stderr[-500:])
    assert res.stdout == "P(x=1, y=2) A(x=3) 4/3 2.2 4 5 2 import\n"


def test_hash_seed_is_fixed_so_outputs_are_reproducible():
    code = "print(hash('falcon'), list({'a', 'b', 'c', 'd'}))"
    assert sb.run_python(code, limits=FAST).stdout == sb.run_python(code, limits=FAST).stdout


def test_environment_is_built_from_scratch(monkeypatch):
    monkeypatch.setenv("FALCON_H1R_SECRET", "do-not-leak-42")
    res = sb.run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('FALCON_H1R_SECRET'))",
                        limits=FAST)
    assert res.passed and "do-not-leak-42" not in res.stdout
    keys = ast.literal_eval(res.stdout.splitlines()[0])  # the child's own printout of its variable names
    assert set(keys) <= {"PATH", "LANG", "LC_ALL", "PYTHONHASHSEED", "PYTHONIOENCODING", "HOME", "TMPDIR"}
    assert res.stdout.splitlines()[1] == "None"


def test_scratch_folder_is_private_to_each_program():
    before = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(pool.HOST_DIR_PREFIX)}
    first = sb.run_python("import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd())", limits=FAST)
    second = sb.run_python("import os\nprint(sorted(os.listdir('.')))", limits=FAST)
    assert first.passed and second.stdout.strip() == "['solution.py']"  # nothing of the first program
    after = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(pool.HOST_DIR_PREFIX)}
    assert after <= before  # no host folder left behind


def test_timeout_is_bounded_and_leaves_no_process():
    t0 = time.monotonic()
    res = sb.run_python_tests("import time\ntime.sleep(30)", ["assert True"], timeout_s=0.5, limits=FAST)
    assert res.reason == "timeout" and not res.passed
    assert time.monotonic() - t0 < 3.0
    assert not sb.sandbox_processes(res.sandbox_uid)


def test_output_is_capped():
    res = sb.run_python("while True:\n    print('y' * 4096)", limits=FAST)
    assert res.reason == "output_limit" and len(res.stdout.encode()) <= FAST.max_output_bytes


def test_guard_functions_look_up_no_patchable_globals():
    # The program runs in the same interpreter as the guard: a global lookup inside the audit hook
    # (say `type` or a module constant) could be monkeypatched to switch its checks off.
    nested = [c for c in harness.install_guard.__code__.co_consts if isinstance(c, types.CodeType)]
    assert {"hook", "on_import"} <= {c.co_name for c in nested}
    for code in nested:
        globals_used = {i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"}
        assert not globals_used, (code.co_name, globals_used)


def test_seccomp_filter_is_well_formed():
    if os.uname().machine != "x86_64":
        pytest.skip("the filter has a system call table for x86_64 only")
    prog = jail.seccomp_filter()
    assert len(prog) % 8 == 0 and 40 < len(prog) // 8 < 256
    assert prog[-8:] == bytes.fromhex("06000000") + (jail._RET_ALLOW).to_bytes(4, "little")


def test_verify_check_grades_code_through_the_sandbox():
    from falcon_h1r.verify import check

    problem = {"domain": "code", "language": "python", "tests": ["assert add(2, 3) == 5"]}
    ok = check(problem, "<think>easy</think>\n```python\n" + ADD + "```", code_timeout_s=3)
    bad = check(problem, "```python\ndef add(a, b):\n    return a - b\n```", code_timeout_s=3)
    assert ok.correct and not bad.correct


# ----------------------------------------------------------------------------- layers and degraded mode
def test_isolation_report_names_every_layer_and_why_any_is_missing():
    report = sb.isolation_report()
    assert set(pool.REQUIRED_LAYERS) <= set(report["layers"]) and report["layers"]["verdict_outside"]
    assert set(report["why_missing"]) == set(report["missing"]) and all(report["why_missing"].values())
    if os.geteuid() == 0:  # root on Linux (the CI machine): every layer must be on
        assert not report["missing"], report["why_missing"]
        assert report["host_folders"] == "none"


def test_degraded_mode_is_reported_and_still_grades(monkeypatch, tmp_path):
    monkeypatch.setattr(api, "POOL", pool.ServerPool())
    monkeypatch.setenv(pool.DISABLE_ENV, "private_root,pid_namespace,seccomp")
    pool._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with api.POOL.server() as srv:
            report = pool.report_from_hello(srv.hello)
    assert {"private_root", "mount_namespace", "pid_namespace", "seccomp"} <= set(report["missing"])
    assert "FALCON_H1R_SANDBOX_DISABLE" in report["why_missing"]["seccomp"]
    assert any("sandbox isolation degraded" in str(w.message) for w in caught)
    res = sb.run_python_tests(ADD, ["assert add(2, 3) == 5"], timeout_s=3)
    assert res.passed
    res = sb.run_python("import os\nprint(os.getcwd())", limits=FAST)
    workdir = res.stdout.strip()
    assert os.path.basename(workdir).startswith(pool.HOST_DIR_PREFIX) and not os.path.exists(workdir)
    api.POOL.close()


def test_stale_folders_of_dead_servers_are_swept(tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])  # a pid that has exited
    gone.wait()
    stale = tmp_path / f"{pool.HOST_DIR_PREFIX}{gone.pid}_abc123"
    live = tmp_path / f"{pool.HOST_DIR_PREFIX}{os.getpid()}_def456"
    for d in (stale, live):
        (d / "sub").mkdir(parents=True)
    assert pool.sweep_stale_dirs(str(tmp_path)) == [str(stale)]
    assert live.exists() and not stale.exists()
