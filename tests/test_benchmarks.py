"""The paper's benchmarks from local copies: small fixture files written by us in the public formats."""

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest

from falcon_h1r import benchmarks as B
from falcon_h1r.verify import LETTERS, check

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def load(name, **kw):
    return B.load_benchmark(name, FIXTURES, **kw)


@pytest.mark.parametrize("name,n,kind,first_answer", [
    ("aime24", 3, "integer", "033"), ("aime25", 3, "integer", "49"), ("hmmt25", 3, "math", r"\frac{9\sqrt{3}}{4}"),
    ("amo_bench", 3, "math", "101"), ("math500", 4, "math", r"\text{(B)}"), ("mmlu_pro", 2, "multiple_choice", "B"),
    ("hle", 2, "math", "6"),
])
def test_each_math_and_choice_benchmark_loads_into_problem_records(name, n, kind, first_answer):
    recs = load(name)
    assert len(recs) == n
    r = recs[0]
    assert r["answer_kind"] == kind and r["answer"] == first_answer and r["benchmark"] == name
    assert r["id"].startswith(f"{name}-") and len({x["id"] for x in recs}) == n
    assert r["problem"].strip() in r["question"] and r["domain"] == B.BENCHMARK_DOMAIN[name]


def test_math_prompts_ask_for_a_box_and_answers_are_cleaned():
    amo = load("amo_bench")
    assert [r["answer"] for r in amo] == ["101", r"\{-2,2\}", r"\frac{n(n+1)}{2}"]  # outer \boxed{} removed
    assert all(B.MATH_INSTRUCTION in r["question"] for r in amo)
    aime = load("aime24")
    assert [r["answer"] for r in aime] == ["033", "24", "30"]  # ints read as released, kept as strings
    assert load("math500")[2]["difficulty"] == 3 and load("math500")[0]["meta"]["subject"] == "Prealgebra"


def test_amo_description_answers_need_a_judge():
    recs = load("amo_bench", parser_only=False)
    assert [r["answer_kind"] for r in recs] == ["math", "math", "math", "judge"]
    v = check(recs[3], r"</think>\boxed{f(x)=cx}")
    assert not v.correct and v.reason == "needs_judge"


def test_hle_keeps_text_only_rows():
    recs = load("hle")
    assert [r["meta"]["answer_type"] for r in recs] == ["exactMatch", "multipleChoice"]
    assert check(recs[1], "</think>Answer: A").correct and not check(recs[1], "</think>Answer: B").correct


def test_gpqa_shuffle_is_seeded_and_keeps_the_correct_option():
    a, b = load("gpqa_diamond"), load("gpqa_diamond")
    assert [r["choices"] for r in a] == [r["choices"] for r in b]
    correct = ["newton", "Carbon", "DNA"]  # the released "Correct Answer" column, stripped
    for r, text in zip(a, correct):
        assert r["answer_kind"] == "multiple_choice" and r["domain"] == "science"
        assert r["choices"][LETTERS.index(r["answer"])] == text
        assert f"{r['answer']}) {text}" in r["question"] and "Answer: X" in r["question"]
        wrong = next(letter for letter in "ABCD" if letter != r["answer"])
        assert check(r, f"</think>Answer: {r['answer']}").correct
        assert check(r, f"</think>\\boxed{{{text}}}").correct  # the option's text names its letter
        assert not check(r, f"</think>Answer: {wrong}").correct
    others = [load("gpqa_diamond", choice_seed=s) for s in range(1, 6)]
    assert any([r["choices"] for r in o] != [r["choices"] for r in a] for o in others)


def test_math500_text_and_choice_answers_grade_by_content():
    mc, day, interval, frac = load("math500")
    assert check(mc, r"</think>\boxed{B}").correct and not check(mc, r"</think>\boxed{\text{(E)}}").correct
    assert check(day, r"</think>\boxed{\text{monday}}").correct and not check(day, r"</think>\boxed{\text{Tuesday}}").correct
    assert check(interval, r"</think>\boxed{[1, 2]}").correct and not check(interval, r"</think>\boxed{[1,2)}").correct
    assert check(frac, r"</think>\boxed{\dfrac{5}{6}}").correct


def test_aime_integer_answers_with_leading_zeros():
    r = load("aime24")[0]
    assert check(r, r"</think>\boxed{33}").correct and check(r, r"</think>\boxed{033}").correct
    assert not check(r, r"</think>\boxed{330}").correct


# ----------------------------------------------------------------------------- LiveCodeBench
def test_lcb_private_tests_need_an_explicit_pickle_opt_in():
    with pytest.raises(B.BenchmarkFormatError, match="allow_pickle=True"):
        load("livecodebench_v6")
    recs = load("livecodebench_v6", allow_pickle=True)
    assert [r["test_type"] for r in recs] == ["stdin", "functional", "stdin"]
    assert len(recs[0]["test_cases"]) == 3 and recs[0]["meta"]["n_private_tests"] == 2
    assert recs[1]["fn_name"] == "arraySum" and "class Solution" in recs[1]["question"]
    public = load("livecodebench_v6", public_tests_only=True)
    assert [len(r["test_cases"]) for r in public] == [1, 1, 1]


def test_lcb_date_window():
    recs = load("livecodebench_v6", allow_pickle=True, date_from="2025-01-01", date_to="2025-03-01")
    assert [r["meta"]["title"] for r in recs] == ["Add Two"]


def test_lcb_problems_are_graded_against_all_their_tests():
    stdin_p, fn_p, _ = load("livecodebench_v6", allow_pickle=True)
    good = "</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    only_public = "</think>\n```python\nprint(5)\n```"  # passes the public case, fails the private ones
    assert check(stdin_p, good).correct and not check(stdin_p, only_public).correct
    sol = "</think>\n```python\nclass Solution:\n    def arraySum(self, nums: List[int]) -> int:\n        return sum(nums)\n```"
    assert check(fn_p, sol).correct
    assert not check(fn_p, sol.replace("sum(nums)", "max(nums, default=0)")).correct


class _Escape:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


def test_a_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = base64.b64encode(zlib.compress(pickle.dumps(_Escape(str(marker))))).decode()
    row = json.loads((FIXTURES / "livecodebench_v6" / "test6.jsonl").read_text().splitlines()[0])
    row["private_test_cases"] = payload
    (tmp_path / "livecodebench_v6.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(B.BenchmarkFormatError, match="could not be decoded safely.*refused"):
        B.load_benchmark("livecodebench_v6", tmp_path, allow_pickle=True)
    assert not marker.exists()
    row["private_test_cases"] = base64.b64encode(zlib.compress(pickle.dumps(["not", "json"]))).decode()
    (tmp_path / "livecodebench_v6.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(B.BenchmarkFormatError, match="expected a JSON string"):
        B.load_benchmark("livecodebench_v6", tmp_path, allow_pickle=True)


# ----------------------------------------------------------------------------- formats and errors
def test_parquet_and_save_to_disk_copies_read_the_same(tmp_path):
    import pandas as pd
    from datasets import Dataset

    rows = [json.loads(line) for line in (FIXTURES / "aime24.jsonl").read_text().splitlines()]
    for r in rows:
        r["answer"] = str(r["answer"])
    (tmp_path / "aime24" / "data").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(tmp_path / "aime24" / "data" / "train-00000-of-00001.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "aime_2024"))
    from_parquet = B.load_benchmark("aime24", tmp_path)
    assert from_parquet == load("aime24")
    (tmp_path / "aime24" / "data" / "train-00000-of-00001.parquet").unlink()
    (tmp_path / "aime24" / "data").rmdir()
    (tmp_path / "aime24").rmdir()
    assert B.load_benchmark("aime24", tmp_path) == from_parquet  # the save_to_disk copy under a local name


def test_only_the_benchmark_files_of_a_release_directory_are_read(tmp_path):
    import shutil

    shutil.copytree(FIXTURES / "gpqa", tmp_path / "gpqa")
    main = (FIXTURES / "gpqa" / "gpqa_diamond.csv").read_text().replace("recA1", "main1")
    (tmp_path / "gpqa" / "gpqa_main.csv").write_text(main)  # the release's other subsets sit alongside
    assert [r["id"] for r in B.load_benchmark("gpqa_diamond", tmp_path)] == [r["id"] for r in load("gpqa_diamond")]
    (tmp_path / "MMLU-Pro" / "data").mkdir(parents=True)
    rows = (FIXTURES / "mmlu_pro.jsonl").read_text()
    (tmp_path / "MMLU-Pro" / "data" / "validation-00000-of-00001.jsonl").write_text(rows)
    with pytest.raises(FileNotFoundError, match=r"named like test\*.*found: data/validation"):
        B.load_benchmark("mmlu_pro", tmp_path)
    (tmp_path / "MMLU-Pro" / "data" / "test-00000-of-00001.jsonl").write_text(rows.splitlines()[0] + "\n")
    assert len(B.load_benchmark("mmlu_pro", tmp_path)) == 1


def test_missing_copy_names_the_path_and_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        B.load_benchmark("math500", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "math500") in msg and "HuggingFaceH4/MATH-500" in msg and ".jsonl" in msg
    assert "Nothing is downloaded" in msg
    with pytest.raises(FileNotFoundError, match="benchmark_dir"):
        B.load_benchmark("aime24", None)


def test_bad_rows_and_names_are_clear_errors(tmp_path):
    (tmp_path / "hmmt25.jsonl").write_text(json.dumps({"problem": "1+1?"}) + "\n")
    with pytest.raises(B.BenchmarkFormatError, match=r"hmmt25.jsonl row 0: needs one of the fields \['answer'"):
        B.load_benchmark("hmmt25", tmp_path)
    with pytest.raises(ValueError, match="instruction checkers"):
        B.load_benchmark("ifbench", tmp_path)
    with pytest.raises(ValueError, match="accepted: aime24"):
        B.load_benchmark("aime26", tmp_path)
    with pytest.raises(ValueError, match="limit"):
        load("aime24", limit=0)
    assert [r["id"] for r in load("aime24", limit=2)] == ["aime24-60", "aime24-61"]


@pytest.mark.parametrize("name,n,max_len", [
    ("aime24", 16, 65536), ("aime25", 16, 65536), ("hmmt25", 16, 65536), ("amo_bench", 16, 65536),
    ("gpqa_diamond", 5, 32768), ("gpqa_d", 5, 32768), ("livecodebench_v6", 3, 65536), ("mmlu_pro", 3, 32768),
    ("hle", 1, 65536), ("math500", 1, 32768), ("ifbench", 1, 32768),
])
def test_protocol_is_read_from_the_paper_table(name, n, max_len):
    p = B.eval_protocol(name)
    assert (p.n_samples, p.max_response_len, p.temperature, p.top_p) == (n, max_len, 0.6, 0.95)
