import ast
import random
import re
import statistics

import pytest

from falcon_h1r import tasks
from falcon_h1r.tasks import arithmetic as A
from falcon_h1r.tasks import code as C
from falcon_h1r.tasks.teachers import slipped, solve
from falcon_h1r.tokenizer import format_response
from falcon_h1r.verify import check

ALL = list(tasks.DOMAINS)


def response(t):
    return "<think>\n" + format_response(t["reasoning"], t["final"])


def run_tests_in_process(code, tests):
    """Our own reference code and our own tests: plain exec is enough here (no sandbox)."""
    env = {}
    exec(code, env)  # noqa: S102
    outcomes = []
    for t in tests:
        try:
            exec(t, env)  # noqa: S102
            outcomes.append(True)
        except AssertionError:
            outcomes.append(False)
    return outcomes


@pytest.fixture(scope="module")
def sets():
    return tasks.make_task_sets(ALL, list(tasks.LEVELS), 120, 20, seed=3)


# ------------------------------------------------------------------------------------- generation
def test_same_seed_same_sets_and_splits_disjoint(sets):
    again = tasks.make_task_sets(ALL, list(tasks.LEVELS), 120, 20, seed=3)
    other = tasks.make_task_sets(ALL, list(tasks.LEVELS), 120, 20, seed=4)
    assert sets == again
    assert sets != other
    train_q = {p["question"] for p in sets["train"]}
    assert not train_q & {p["question"] for p in sets["test"]}
    assert len(train_q) == len(sets["train"]) == 360
    assert {p["difficulty"] for p in sets["train"]} == set(tasks.LEVELS)
    for p in sets["train"]:
        assert {"id", "domain", "difficulty", "split", "question", "answer"} <= set(p)
        assert ("tests" in p and p["language"] == "python") if p["domain"] == "code" else "tests" not in p
        assert (p["tolerance"] == 0.01 and p["unit"]) if p["domain"] == "science" else "tolerance" not in p
        assert "spec" not in tasks.public(p)


def test_difficulties_per_domain():
    s = tasks.generate_split(ALL, {"math": [1, 2], "code": [7], "science": [3, 4, 5]}, 12, "t", seed=0)
    levels = {d: sorted({p["difficulty"] for p in s if p["domain"] == d}) for d in ALL}
    assert levels == {"math": [1, 2], "code": [7], "science": [3, 4, 5]}
    assert tasks.generate_split(["math"], {"math": [1, 2]}, 12, "t", 0) == tasks.generate_split(["math"], [1, 2], 12,
                                                                                                "t", 0)
    with pytest.raises(ValueError, match="no levels for domain 'code'"):
        tasks.generate_split(["code"], {"math": [1]}, 2, "t", 0)


def test_low_levels_have_room_for_a_tiny_preset():
    s = tasks.make_task_sets(ALL, [1, 2], 1500, 100, seed=0)
    assert len(s["train"]) == 4500


@pytest.mark.parametrize("style", tasks.STYLES)
def test_clean_teacher_is_always_right(sets, style):
    for p in sets["train"]:
        t = tasks.teacher_trace(p, style)
        if p["domain"] == "code":
            assert t["final"] == f"```python\n{p['answer']}```"
            assert all(run_tests_in_process(p["answer"], p["tests"])), p
        else:
            v = check(p, response(t), use_math_verify=False)
            assert v.correct, (p, t, v)


def test_clean_code_traces_pass_the_sandboxed_checker(sets):
    code = [p for p in sets["train"] if p["domain"] == "code"][:4]
    for p in code:
        v = check(p, response(tasks.teacher_trace(p, "stepwise")))
        assert v.correct, v


def test_trace_length_grows_with_difficulty(sets):
    for domain in ALL:
        for style in tasks.STYLES:
            means = [statistics.fmean(len(tasks.teacher_trace(p, style)["reasoning"]) for p in sets["train"]
                                      if p["domain"] == domain and p["difficulty"] == lv) for lv in tasks.LEVELS]
            assert means[-1] > 2.5 * means[0], (domain, style, means)
            # grows level over level, allowing for the spread of a dozen problems per level
            assert all(means[i + 3] > means[i] for i in range(len(means) - 3)), (domain, style, means)


def test_code_problems_have_tests_that_reject_one_slip_solutions(sets):
    total_caught, total = 0, 0
    for p in (q for q in sets["train"] if q["domain"] == "code"):
        assert 5 <= len(p["tests"]) <= C.MAX_TESTS
        for t in p["tests"]:
            node = ast.parse(t).body[0]
            assert isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)
            assert node.test.left.func.id == "solve" and len(node.test.left.args) == 1
            ast.literal_eval(node.test.left.args[0]), ast.literal_eval(node.test.comparators[0])
        spec = p["spec"]
        rng = random.Random(p["id"])
        probe = [C.random_input(rng, p["difficulty"]) for _ in range(100)]
        distinguishable = [m for m in C.mutants(spec)
                           if any(C.run_spec(m, xs) != C.run_spec(spec, xs) for xs in probe)]
        assert distinguishable
        caught = [not all(run_tests_in_process(C.code_of(m), p["tests"])) for m in distinguishable]
        assert sum(caught) >= len(caught) - 1, (p["question"], sum(caught), len(caught))
        total_caught, total = total_caught + sum(caught), total + len(caught)
        # generic wrong answers fail too
        assert not all(run_tests_in_process("def solve(xs):\n    return 0\n", p["tests"]))
        assert not all(run_tests_in_process("def solve(xs):\n    return sum(xs)\n", p["tests"]))
    assert total_caught >= 0.98 * total


def test_the_example_in_the_question_is_what_the_reference_returns(sets):
    for p in (q for q in sets["train"] if q["domain"] == "code"):
        m = re.search(r"For example, solve\((\[.*?\])\) == (-?\d+)\.", p["question"])
        env = {}
        exec(p["answer"], env)  # noqa: S102
        assert env["solve"](ast.literal_eval(m.group(1))) == int(m.group(2))


# ------------------------------------------------------------------------------------- teachers
def test_styles_reason_differently(sets):
    # what only one method writes (math: from level 2, where the numbers are worked out at all)
    markers = {"stepwise": {"mul": "carry", "div": "Long division", "frac": "lcm", "linear": "Expand",
                            "system": "Eliminate", "pipeline": "Trace the example", "loop": "Trace the example",
                            "kinetic": "half of it", "heat": "m * c = ", "pressure": "F = m * g",
                            "force": "a = ", "electric": "P = V * I"},
               "terse": {"mul": ", so ", "div": "in chunks", "frac": ")/(", "linear": "f(0)", "system": "Substitute",
                         "pipeline": "after step", "loop": "Write it directly", "kinetic": "m / 2",
                         "heat": "J per kg", "pressure": "m * g / A", "force": "m * dv", "electric": "V^2"}}
    for p in sets["train"]:
        fam = tasks.family_of(p)
        if fam in ("mul", "div") and p["difficulty"] == 1 or fam in ("force", "electric") and p["difficulty"] < 3:
            continue
        if fam == "speed":  # differs only in its arithmetic (long vs chunked division)
            continue
        step, terse = tasks.teacher_trace(p, "stepwise")["reasoning"], tasks.teacher_trace(p, "terse")["reasoning"]
        for mine, other, style in ((step, terse, "stepwise"), (terse, step, "terse")):
            assert markers[style][fam] in mine and markers[style][fam] not in other, (fam, style, mine, other)

    def shapes(text):  # line templates: the structure with the numbers taken out
        return {re.sub(r"-?\d+", "N", line) for line in text.splitlines()}

    big = [p for p in sets["train"] if p["difficulty"] >= 5]
    overlap = [len(shapes(tasks.teacher_trace(p, "stepwise")["reasoning"]) & shapes(tasks.teacher_trace(p, "terse")
                   ["reasoning"])) / len(shapes(tasks.teacher_trace(p, "stepwise")["reasoning"])) for p in big]
    assert statistics.fmean(overlap) < 0.3


@pytest.mark.parametrize("field, rate", [("slip", 0.3), ("wrong_answer", 0.2)])
def test_noisy_teacher_fails_at_the_configured_rate(field, rate):
    probs = tasks.generate_split(ALL, [2, 4, 6], 400, "noise", seed=1)
    noise = tasks.TeacherNoise(**{field: rate})
    rng = random.Random(5)
    for domain in ALL:
        wrong = 0
        mine = [p for p in probs if p["domain"] == domain]
        for p in mine:
            t = tasks.teacher_trace(p, "stepwise", rng, noise)
            if domain == "code":
                code = t["final"].removeprefix("```python\n").removesuffix("```")
                wrong += not all(run_tests_in_process(code, p["tests"]))
            else:
                wrong += not check(p, response(t), use_math_verify=False).correct
        assert abs(wrong / len(mine) - rate) < 0.07, (domain, wrong / len(mine))  # 3 sd at n = 400


def test_a_slip_is_local_and_carried_to_the_answer(sets):
    rng = random.Random(0)
    none = 0
    for p in sets["train"]:
        if p["domain"] == "code" or p["difficulty"] < 4:
            continue
        clean, answer, _ = solve(p, "stepwise")
        bad = slipped(p, "stepwise", rng)
        if bad is None:  # every possible slip stays within the science tolerance: rare
            none += 1
            continue
        lines, bad_lines = clean.splitlines(), bad[0].splitlines()
        first = next(i for i, (a, b) in enumerate(zip(lines, bad_lines)) if a != b)
        assert bad[1] != answer
        assert lines[:first] == bad_lines[:first]  # the trace is right up to the slip
    assert none <= 2


def test_noisy_teacher_fails_in_the_other_asked_ways():
    p = tasks.make_problem("math", 3, random.Random(1))
    nobox = tasks.teacher_trace(p, "terse", random.Random(0), tasks.TeacherNoise(missing_box=1.0))
    assert "\\boxed" not in nobox["final"]
    c = tasks.make_problem("code", 1, random.Random(2))
    js = tasks.teacher_trace(c, "terse", random.Random(0), tasks.TeacherNoise(wrong_language=1.0))
    assert check(c, response(js)).reason.startswith("wrong_language")
    long = tasks.teacher_trace(c, "terse", random.Random(0), tasks.TeacherNoise(runaway=1.0))
    assert len(long["reasoning"]) > 20 * len(tasks.teacher_trace(c, "terse")["reasoning"])


def test_teacher_records_mix_styles_and_rollouts():
    probs = tasks.generate_split(ALL, [1, 2], 10, "t", seed=0)
    recs = tasks.teacher_records(probs, "mixed", 0, rollouts=2)
    assert len(recs) == 60 and {r["rollout"] for r in recs} == {0, 1}
    assert {r["style"] for r in recs} == set(tasks.STYLES)
    assert recs == tasks.teacher_records(probs, "mixed", 0, rollouts=2)
    assert all(r["style"] == "terse" for r in tasks.teacher_records(probs, "terse", 0))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown domain 'poetry'"):
        tasks.make_problem("poetry", 1, random.Random(0))
    with pytest.raises(ValueError, match="difficulty 99"):
        tasks.make_problem("math", 99, random.Random(0))
    with pytest.raises(ValueError, match="teacher style"):
        tasks.teacher_trace(tasks.make_problem("math", 1, random.Random(0)), "socratic")
    with pytest.raises(ValueError, match="public"):
        tasks.teacher_trace(tasks.public(tasks.make_problem("math", 1, random.Random(0))), "terse")


# ------------------------------------------------------------------------------------- arithmetic
def test_worked_arithmetic_matches_python():
    rng = random.Random(0)
    for _ in range(300):
        a, b = rng.randint(0, 10 ** rng.randint(1, 6)), rng.randint(1, 10 ** rng.randint(1, 5))
        for method in ("column", "decompose"):
            assert A.multiply(a, b, A.Work(), method) == a * b
            assert A.multiply(-a, b, A.Work(), method) == -a * b
            assert A.divide_exact(a * b, b, A.Work(), method) == a
        assert A.div_long(a, b, A.Work()) == divmod(a, b) == A.div_chunks(a, b, A.Work())
        assert A.add_column([a, b, a + b], A.Work()) == 2 * (a + b)
        assert A.gcd_euclid(a, b, A.Work()) == __import__("math").gcd(a, b)
    w = A.Work()
    A.mul_column(4738, 256, w)
    assert "8*6 = 48, write 8 carry 4" in w.lines and w.lines[-1] == "Sum: 1212928"


# ------------------------------------------------------------------------------------- lengths
def test_length_helpers_and_cli(capsys):
    from falcon_h1r.tasks.lengths import main, parse_levels

    s = tasks.length_summary(list(range(1, 101)))
    assert s["median"] == 50.5 and s["max"] == 100 and 10 <= s["p10"] <= 11 and 90 <= s["p90"] <= 91
    assert parse_levels("1-3,7") == [1, 2, 3, 7]
    assert main(["--difficulties", "0-12"]) == 2
    assert "levels" in capsys.readouterr().err
