import threading

import pytest

from falcon_h1r import verify


def test_extract_boxed_nested_and_last():
    assert verify.extract_boxed(r"a \boxed{1} b \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert verify.extract_boxed("no box") is None
    assert verify.extract_boxed(r"\boxed{unclosed") is None


def test_math_tiers():
    assert verify.math_equal_tier1("0.5", r"\frac{1}{2}")
    assert verify.math_equal_tier1(r"\dfrac{2}{4}", "1/2")
    assert not verify.math_equal_tier1("3", "4")
    # tier 2: math-verify knows 2^{3} = 8, which tier 1 does not
    assert not verify.math_equal_tier1("2^{3}", "8")
    assert verify.math_equal("2^{3}", "8")
    assert not verify.math_equal("9", "8")


def test_tier1_keeps_text_content():
    # the old tier 1 dropped \text{...} with its content, so every option letter looked the same
    assert not verify.math_equal_tier1(r"\text{(E)}", r"\text{(B)}")
    assert verify.normalize_math(r"\text{(E)}") == "(E)"
    assert verify.normalize_math(r"5\text{ m/s}") == "5m/s"


def test_math_verify_off_main_thread_uses_a_worker():
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", verify.math_verify_equal("2^{3}", "8")))
    t.start()
    t.join(60)
    assert out["v"] is True


def test_science_tolerance_and_units():
    assert verify.numeric_close("12.51 m/s", "12.5", rel_tol=0.01)
    assert not verify.numeric_close("13", "12.5", rel_tol=0.01)
    assert not verify.numeric_close(None, "1")


def test_check_each_domain():
    math_p = {"domain": "math", "answer": "7"}
    assert verify.check(math_p, "<think>x</think> so \\boxed{7}").correct
    assert verify.check(math_p, "<think>\\boxed{7}</think> no answer").reason == "no_answer"
    sci = {"domain": "science", "answer": "2.5", "tolerance": 0.01}
    assert verify.check(sci, "</think> \\boxed{2.5} m").correct
    code = {"domain": "code", "tests": ["assert solve(2) == 4"], "language": "python"}
    good = "</think>\n```python\ndef solve(x):\n    return 2 * x\n```"
    bad = "</think>\n```python\ndef solve(x):\n    return x\n```"
    assert verify.check(code, good).correct
    assert verify.check(code, bad).reason.startswith("tests_failed")
    assert verify.check(code, "</think> no code").reason == "no_answer"
    assert verify.extract_code("```cpp\nint main(){}\n```") == ("cpp", "int main(){}\n")
    assert verify.detect_language("#include <vector>\nstd::vector<int> v;") == "cpp"


# ----------------------------------------------------------------------------- the tricky-case table
# (prediction, reference, reference kind, verdict a careful grader gives)
TRICKY = [
    # multiple choice inside MATH-style answers
    (r"\text{(E)}", r"\text{(B)}", "math", False),
    (r"\text{(B)}", r"\text{(B)}", "math", True),
    ("B", r"\text{(B)}", "math", True),
    ("(B)", r"\text{(B)}", "math", True),
    (r"\textbf{B}", r"\text{(B)}", "math", True),
    ("b", r"\text{(B)}", "math", False),  # a lower-case b is a variable, not an option
    ("E", "B", "multiple_choice", False),
    ("(c)", "C", "multiple_choice", True),
    ("c", "C", "multiple_choice", False),  # a bare lower-case letter is a variable
    ("The answer is C", "C", "multiple_choice", True),
    ("Option (C)", "C", "multiple_choice", True),
    # text answers
    (r"\text{Monday}", r"\text{Tuesday}", "math", False),
    (r"\text{Monday}", r"\text{Monday}", "math", True),
    ("monday.", r"\text{Monday}", "math", True),
    (r"\textbf{Even}", r"\text{even}", "math", True),
    (r"\text{even}", r"\text{odd}", "math", False),
    ("yes", "sey", "math", False),  # math-verify alone reads both as y*e*s
    ("5", r"\text{five}", "math", False),
    (r"\text{Evelyn}", "Evelyn", "text", True),
    (r"\text{no solution}", r"\text{none}", "text", False),
    # fractions, decimals, LaTeX forms
    ("0.5", r"\frac13", "math", False),
    ("0.333", r"\frac13", "math", False),
    ("0.5", r"\frac12", "math", True),
    (r"\dfrac{1}{2}", "0.5", "math", True),
    (r"\frac12", "1/2", "math", True),
    (r"\sqrt{8}", r"2\sqrt{2}", "math", True),
    (r"\sqrt{2}", r"\sqrt{3}", "math", False),
    (r"2\pi", r"\pi", "math", False),
    (r"\frac{\pi}{2}", r"\dfrac{\pi}{2}", "math", True),
    (r"30^\circ", "30", "math", True),
    (r"30^{\circ}", "30", "math", True),
    (r"\left(1,2\right)", "(1,2)", "math", True),
    (r"2\mathrm{i}", "2", "math", False),  # math-verify alone drops \mathrm{i} as a unit
    ("x=3", "3", "math", True),
    ("3x", "3", "math", False),
    # intervals and unions
    ("[1,2)", "[1,2]", "math", False),
    ("[1,2]", "[1, 2]", "math", True),
    (r"(-\infty,2]\cup[3,\infty)", r"(-\infty, 2] \cup [3, \infty)", "math", True),
    (r"(3,4)\cup(1,2)", r"(1,2)\cup(3,4)", "math", True),
    (r"[1,2)\cup(3,4]", r"[1,2)\cup(3,4)", "math", False),
    # sets and tuples
    (r"\{2,1\}", r"\{1,2\}", "math", True),
    (r"\{1,2\}", r"\{1,2,3\}", "math", False),
    ("(2,1)", "(1,2)", "math", False),
    ("(1,2,3)", "(1, 2, 3)", "math", True),
    # units
    (r"5\text{ m/s}", "5", "math", True),
    ("5 m", "5", "math", True),
    (r"6\text{ m}", "5", "math", False),
    (r"5\text{ cm}^2", "25", "math", False),
    # percentages
    (r"50\%", "50", "math", True),
    (r"50\%", "0.5", "math", True),
    ("0.5", r"50\%", "math", True),
    (r"40\%", "0.5", "math", False),
    # scientific notation and separators
    ("3e5", "300000", "math", True),
    ("3e5", "30000", "math", False),
    (r"3\times10^{5}", "300000", "math", True),
    (r"3.0 \times 10^{8}", "3e8", "math", True),
    (r"2\cdot 10^{-3}", "0.002", "math", True),
    ("1,000", "1000", "math", True),
    ("1{,}000", "1000", "math", True),
    # AIME integers (000-999)
    ("007", "7", "integer", True),
    ("070", "7", "integer", False),
    ("33.0", "33", "integer", True),
    ("33.5", "33", "integer", False),
    ("2^5", "32", "integer", True),
    (r"6.02\times10^{23}", "6.02e23", "math", True),
    ("1.2E-4", r"1.2\times 10^{-4}", "math", True),
    (r"1.5\times10^{-3}", "0.015", "math", False),
    ("1.0e6", "10^{6}", "math", True),
    # more units and LaTeX forms
    (r"5\,\text{kg}", "5", "math", True),
    (r"\$5", "5", "math", True),
    (r"12\text{ cm}", r"12\text{ cm}", "math", True),
    (r"\frac{\sqrt{3}}{2}", r"\dfrac{\sqrt3}{2}", "math", True),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}", "math", False),
    (r"3\sqrt{2}", r"\sqrt{18}", "math", True),
    (r"\sqrt[3]{8}", "2", "math", True),
    (r"x^2+2x+1", "(x+1)^2", "math", True),
    (r"-\infty", r"\infty", "math", False),
    # more intervals, sets and text
    ("(1,2]", "(1,2)", "math", False),
    (r"x \in [2, 5]", "[2,5]", "math", True),
    ("1, 2, 3", r"\{1,2,3\}", "math", True),
    (r"\text{Tuesday}", "Tuesday", "text", True),
    ("Tuesday", "Wednesday", "text", False),
    (r"\text{(C)}", "C", "multiple_choice", True),
    ("Answer: (C)", "C", "multiple_choice", True),
    # synthetic science: relative tolerance
    ("12.51", "12.5", "numeric", True),
    ("13", "12.5", "numeric", False),
]


@pytest.mark.parametrize("pred,ref,kind,verdict", TRICKY)
def test_tricky_answer_table(pred, ref, kind, verdict):
    assert verify.answers_equivalent(pred, ref, kind) is verdict
    key_p, key_r = verify.answer_key(pred, kind), verify.answer_key(ref, kind)
    if key_p == key_r:  # equal keys must mean equivalent answers (grouping relies on it)
        assert verdict


def test_boxed_text_option_graded_by_its_letter():
    """Issue 19's bug: \\boxed{\\text{(E)}} was graded correct against \\text{(B)}."""
    p = {"domain": "math", "answer": r"\text{(B)}"}
    assert not verify.check(p, r"</think> \boxed{\text{(E)}}").correct
    assert verify.check(p, r"</think> \boxed{\text{(B)}}").correct
    assert verify.check(p, r"</think> \boxed{B}").correct


CHOICES = ["A metal compound from the fifth period.", "42 J", "The reaction is exothermic", "None of the above"]
MC_RESPONSES = [
    ("<think>maybe B</think>\nAnswer: C", "C"),
    ("</think>The answer is (D).", "D"),
    (r"</think>\boxed{\text{(C)}}", "C"),
    ("</think>**Answer:** B", "B"),
    ("</think>Answer: A metal compound from the fifth period.", "A"),
    (r"</think>\boxed{42 J}", "B"),  # the option's text names its letter
    ("</think>I think it's C.\n\nAnswer: $\\boxed{D}$", "D"),
    ("</think>Answer: C because of the energy", "C"),
    (r"</think>\boxed{B}" + "\nWait, actually Answer: C", "C"),  # the later statement wins
    ("</think>the answer is a prime number", None),
    ("</think>Answer: E", None),  # only four options
    ("<think>Answer: B</think> no idea", None),  # said while thinking only
    ("</think>Final answer: (b)", "B"),
    ("</think>Final answer: b", None),
]


@pytest.mark.parametrize("response,letter", MC_RESPONSES)
def test_multiple_choice_extraction(response, letter):
    assert verify.extract_choice(response, choices=CHOICES) == letter
    problem = {"domain": "science", "answer_kind": "multiple_choice", "answer": "C", "choices": CHOICES}
    verdict = verify.check(problem, response)
    assert verdict.correct is (letter == "C")
    assert verdict.reason == ("no_answer" if letter is None else "ok" if letter == "C" else "wrong")


def test_choice_letter_forms():
    assert verify.choice_letter(r"\text{(C)}") == "C"
    assert verify.choice_letter("C.") == "C"
    assert verify.choice_letter("(C) 42 J") == "C"
    assert verify.choice_letter("A metal compound") is None  # words starting with "A" name no option
    assert verify.choice_letter("J", n_choices=10) == "J" and verify.choice_letter("J", n_choices=4) is None


def test_classify_answer():
    assert verify.classify_answer(r"\text{(C)}") == "multiple_choice"
    assert verify.classify_answer(r"\text{Monday}") == "text"
    assert verify.classify_answer("no solution") == "text"
    assert verify.classify_answer("ab") == "math"  # a product of two variables
    assert verify.classify_answer(r"\text{5 apples}") == "math"
    assert verify.classify_answer(r"\infty") == "math" and verify.classify_answer("pi") == "math"


def test_unknown_kind_and_bad_reference_are_clear_errors():
    with pytest.raises(ValueError, match="accepted"):
        verify.answers_equivalent("1", "1", "code")
    with pytest.raises(ValueError, match="names no option"):
        verify.answers_equivalent("A", "banana", "multiple_choice")
    with pytest.raises(ValueError, match="unknown answer_kind"):
        verify.check({"domain": "math", "answer_kind": "essay", "answer": "x"}, r"\boxed{x}")


def test_judge_answers_are_never_counted_correct():
    v = verify.check({"domain": "math", "answer_kind": "judge", "answer": "any n"}, r"</think>\boxed{any n}")
    assert v == verify.Verdict(False, "any n", "needs_judge")


# ----------------------------------------------------------------------------- vote grouping
def test_answer_classes_group_equivalents_and_keep_words_apart():
    classes = verify.AnswerClasses()
    ids = [classes(a) for a in ["0.5", r"\frac{1}{2}", r"\dfrac12", r"\text{(E)}", r"\text{(B)}", "E",
                                r"\text{Monday}", r"\text{Tuesday}", "monday", "yes", "sey", None, "  "]]
    half, e, b, monday, tuesday, yes, sey = ids[0], ids[3], ids[4], ids[6], ids[7], ids[9], ids[10]
    assert ids[1] == ids[2] == half
    assert e != b and ids[5] == e
    assert monday != tuesday and ids[8] == monday
    assert yes != sey
    assert ids[11] is None and ids[12] is None
    assert len({i for i in ids if i is not None}) == 7


def test_answer_classes_merge_through_math_verify_only_for_math():
    classes = verify.AnswerClasses()
    assert classes("2^{3}") == classes("8")
    assert classes("[1,2)") != classes("[1,2]")
    no_mv = verify.AnswerClasses(use_math_verify=False)
    assert no_mv("2^{3}") != no_mv("8") and no_mv("0.5") == no_mv(r"\frac12")


def test_answer_classes_multiple_choice_by_letter():
    classes = verify.AnswerClasses(kind="multiple_choice", choices=CHOICES)
    assert classes("C") == classes("(C)") == classes(r"\text{(C)}") == classes("The reaction is exothermic")
    assert classes("B") == classes("42 J") != classes("C")


# ----------------------------------------------------------------------------- code: LiveCodeBench cases
def test_stdout_matches_like_livecodebench():
    assert verify.stdout_matches("3\n4 5 \n", "3\n4 5")
    assert verify.stdout_matches("0.50\n", "0.5")  # same decimals
    assert not verify.stdout_matches("3\n", "3\n4")
    assert not verify.stdout_matches("yes\n", "YES")


def test_livecodebench_stdin_and_functional_cases_run_in_the_sandbox():
    stdin_p = {"domain": "code", "answer_kind": "code", "language": "python", "test_type": "stdin",
               "test_cases": [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6\n"}]}
    good = "</think>\n```python\na, b = map(int, open(0).read().split())\nprint(a + b)\n```"
    wrong = "</think>\n```python\na, b = map(int, input().split())\nprint(a * b)\n```"
    assert verify.check(stdin_p, good).correct
    v = verify.check(stdin_p, wrong)
    assert not v.correct and "wrong answer" in v.reason
    fn_p = {"domain": "code", "answer_kind": "code", "language": "python", "test_type": "functional",
            "fn_name": "pairSum", "test_cases": [{"input": "[1, 2, 3]\n2", "output": "[3, 5]"}]}
    cls = ("</think>\n```python\nclass Solution:\n    def pairSum(self, nums: List[int], k: int) -> List[int]:\n"
           "        return tuple(nums[i] + nums[i + 1] for i in range(len(nums) - 1))\n```")
    assert verify.check(fn_p, cls).correct  # typing names come from the prelude; a returned tuple is a list
    off = cls.replace("nums[i + 1]", "nums[i + 1] + 1")
    assert not verify.check(fn_p, off).correct
    with pytest.raises(ValueError, match="fn_name"):
        verify.run_test_cases("x = 1", [{"input": "1", "output": "1"}], "functional")


# (the function's return statement, the case's expected JSON output): LiveCodeBench compares with Python's ==
LCB_FUNCTIONAL = [
    ("return 2", "2.0"), ("return 2.5", "2"), ("return True", "1"), ("return False", "0"), ("return [True]", "[1.0]"),
    ("return (1, 2)", "[1, 2]"), ("return [(1, 2)]", "[[1, 2]]"), ("return {'a': 1}", '{"a": 1.0}'),
    ("return {1: 2}", '{"1": 2}'), ("return None", "null"), ("return 'abc'", '"abc"'), ("return [1.0, 2]", "[1, 2]"),
    ("return {1, 2}", "[1, 2]"), ("return 1e20", "100000000000000000000"), ("return 0.1 + 0.2", "0.3"),
    ("return 2**60 + 1", "1152921504606846976"), ("return 'a'", '["a"]'), ("return [[1, 2], [3]]", "[[1, 2], [3]]"),
]


def test_functional_cases_compare_as_livecodebench_does():
    """The sandbox is type-strict; the canonical forms make its verdict equal LiveCodeBench's ``==`` (the plain
    twin ``lcb_reference_equal``) on ints vs floats, bools, tuples, dict keys and sets."""
    import json

    from falcon_h1r.verify.code import run_test_cases

    code = "class Solution:\n    def f(self, x):\n        {}\n"
    verdicts = []
    for body, out in LCB_FUNCTIONAL:
        ok, _ = run_test_cases(code.format(body), [{"input": "1", "output": out}], "functional", fn_name="f")
        want = verify.lcb_reference_equal(eval(body.removeprefix("return ")), json.loads(out))
        assert ok is want, (body, out)
        verdicts.append(ok)
    assert sum(verdicts) == 11 and not all(verdicts)  # both verdicts occur
    assert verify.lcb_canonical((1, 2.0, True)) == [1, 2, 1] and verify.lcb_canonical([(1.5,)]) == [(1.5,)]
    with pytest.raises(ValueError, match="NaN"):
        verify.run_test_cases(code.format("return 1"), [{"input": "1", "output": "NaN"}], "functional", fn_name="f")


def test_vote_answers_and_classes_follow_the_problems_kind():
    mc = {"id": "g", "domain": "science", "answer_kind": "multiple_choice", "answer": "C", "choices": CHOICES}
    votes = [verify.vote_answer(mc, r) for r in ["</think>Answer: C", "</think>The answer is (C).",
                                                   "</think>\\boxed{The reaction is exothermic}", "</think>Answer: B"]]
    assert votes == ["C", "C", "C", "B"]
    classes = verify.vote_classes(mc)
    assert classes(votes[0]) == classes(votes[1]) == classes(votes[2]) != classes(votes[3])
    text = {"id": "m", "domain": "math", "answer": r"\text{Monday}"}
    words = verify.vote_classes(text)
    assert words(r"\text{Monday}") == words("monday") != words(r"\text{Tuesday}")  # words are never one class
    assert verify.vote_answer(text, r"</think>\boxed{\text{Monday}}") == r"\text{Monday}"
    with pytest.raises(ValueError, match="not voted"):
        verify.vote_answer({"id": "c", "domain": "code"}, "x")
    with pytest.raises(ValueError, match="not voted"):
        verify.vote_classes({"id": "j", "domain": "math", "answer_kind": "judge"})
