"""Data curation: each rule on constructed records, the rejects report, dedup, contamination, mixture,
weights, the RL pass-rate rules (every 0/8 branch) and the batched code grader against its plain twin; the
section's cached entry points (``falcon_h1r.sections.curation``)."""

import math
import random

import pytest

from falcon_h1r import curation as C
from falcon_h1r import verify
from falcon_h1r.config import RecipeError, load_preset
from falcon_h1r.curation import grading
from falcon_h1r.sections import curation as SC
from falcon_h1r.tasks import TeacherNoise, make_problem, teacher_trace


@pytest.fixture(scope="module")
def tok():
    from falcon_h1r.tokenizer import train_tokenizer

    corpus = [make_problem(d, lvl, random.Random(i))["question"] for i in range(60) for d in ("math", "code", "science")
              for lvl in (1, 3)]
    return train_tokenizer(corpus + ["The answer is \\boxed{7}.", "def solve(x):\n    return x\n"], 300)


def rec(domain="math", **kw):
    """A well-formed teacher record with a correct trace (fields overridable)."""
    base = {
        "math": {"answer": "7", "final": "The answer is \\boxed{7}."},
        "science": {"answer": "2.5", "tolerance": 0.01, "unit": "m/s", "final": "The answer is \\boxed{2.5} m/s."},
        "code": {"answer": "def solve(x):\n    return x + 1\n",
                 "tests": ["assert solve(1) == 2", "assert solve(5) == 6"], "language": "python", "final": "```python\ndef solve(x):\n    return x + 1\n```"},
    }[domain]
    r = {"id": f"{domain}-{kw.pop('i', 0)}", "domain": domain, "difficulty": 2, "question": f"A {domain} question?",
         "reasoning": "Step one. Step two.", **base}
    r.update(kw)
    return r


# ------------------------------------------------------------------------------------- bad input
def test_validate_record_names_each_kind_of_bad_input():
    assert C.validate_record(rec()) is None
    assert C.validate_record("not a dict")[0] == "malformed_type"
    r = rec()
    del r["answer"]
    assert C.validate_record(r) == ("malformed_missing_field", "missing answer")
    assert C.validate_record(rec(answer=17))[0] == "malformed_type"
    assert C.validate_record(rec(reasoning=None))[0] == "malformed_missing_field"
    assert C.validate_record({**rec(), "domain": "poetry"})[0] == "malformed_type"
    assert C.validate_record(rec(answer="\\frac{1}{"))[0] == "malformed_latex"
    assert C.validate_record(rec("code", tests=[]))[0] == "malformed_missing_field"
    assert C.validate_record(rec("science", tolerance="tight"))[0] == "malformed_type"
    # problems without traces (the RL pool) need only the problem fields
    p = rec()
    del p["reasoning"], p["final"]
    assert C.validate_record(p, needs_trace=False) is None


def test_latex_parses():
    assert C.latex_parses("\\frac{3}{4}") and C.latex_parses("-12") and C.latex_parses("2^{3}")
    assert not C.latex_parses("\\frac{3}{") and not C.latex_parses("x}") and not C.latex_parses("3\\")
    assert not C.latex_parses("  ")


# ------------------------------------------------------------------------------------- quality
@pytest.mark.parametrize("record, rule", [
    (rec(reasoning="  "), "empty_reasoning"),
    (rec(final=""), "empty_final"),
    (rec(final="The answer is 7."), "no_boxed"),
    (rec("science", final="About 2.5 m/s."), "no_boxed"),
    (rec(final="The answer is \\boxed{\\frac{1}{}"), "malformed_latex"),
    (rec("code", final="def solve(x): return x"), "no_code"),
    (rec("code", final="```javascript\nfunction solve(x) {\n  return x;\n}\n```"), "wrong_language"),
    (rec("code", final="```python\ndef solve(x)\n    return x\n```"), "syntax_error"),
])
def test_each_quality_rule(record, rule):
    assert C.quality_issue(record)[0] == rule


def test_clean_records_pass_quality():
    for d in ("math", "science", "code"):
        assert C.quality_issue(rec(d)) is None


def test_teacher_noise_is_caught_by_the_matching_rule():
    p = make_problem("code", 1, random.Random(3))
    t = teacher_trace(p, "stepwise", random.Random(0), TeacherNoise(wrong_language=1.0))
    assert C.quality_issue({**p, "id": "c", **t})[0] == "wrong_language"
    t = teacher_trace(p, "stepwise", random.Random(0), TeacherNoise(bad_code=1.0))
    assert C.quality_issue({**p, "id": "c", **t})[0] == "syntax_error"
    m = make_problem("math", 2, random.Random(3))
    t = teacher_trace(m, "stepwise", random.Random(0), TeacherNoise(missing_box=1.0))
    assert C.quality_issue({**m, "id": "m", **t})[0] == "no_boxed"


# ------------------------------------------------------------------------------------- SFT pipeline
def _pool():
    pool = [
        rec(i=1), rec("science", i=2), rec("code", i=3),  # kept
        rec(i=4, answer="8"),  # incorrect (boxed 7, truth 8)
        rec("code", i=5, final="```python\ndef solve(x):\n    return x + 2\n```"),  # tests fail
        rec(i=6, reasoning=""),  # empty_reasoning
        rec(i=7, final="7"),  # no_boxed
        rec(i=8, reasoning="Wait, let me re-check. " * 400),  # too_long
        rec(i=9, answer=7),  # malformed_type
        {"id": "math-10", "domain": "math", "question": "q"},  # malformed_missing_field
        rec(i=11, question="Held-out test question?"),  # contaminated
        rec(i=12, answer="\\frac{1}{2}", final="So \\boxed{0.5}."),  # tier-1 rational match: kept
    ]
    return pool


def test_sft_pipeline_counts_every_removal_and_drops_nothing_silently(tok):
    recipe = C.CurationRecipe(max_trace_tokens=300)
    cur = C.curate_sft_records(_pool(), tok, recipe, eval_questions=["held-out  TEST question"])
    kept = {r["id"] for r in cur.records}
    assert kept == {"math-1", "science-2", "code-3", "math-12"}
    by_rule = cur.dropped_by_rule()
    assert by_rule["incorrect"] == 2 and by_rule["empty_reasoning"] == 1 and by_rule["no_boxed"] == 1
    assert by_rule["too_long"] == 1 and by_rule["malformed_type"] == 1 and by_rule["malformed_missing_field"] == 1
    assert by_rule["contaminated"] == 1
    assert set(by_rule) == set(C.SFT_RULES)
    # nothing silent: kept + removed == in, and each removed record is named with its reason
    assert len(cur.records) + len(cur.removals) == cur.n_in == len(_pool())
    rejects = {r["id"]: r for r in cur.rejects()}
    assert rejects["math-9"]["stage"] == "malformed" and "answer" in rejects["math-9"]["detail"]
    assert rejects["code-5"]["rule"] == "incorrect" and rejects["code-5"]["detail"].startswith("tests_failed")
    funnel = cur.funnel()
    assert [f["rule"] for f in funnel] == list(C.SFT_RULES) and funnel[-1]["remaining"] == len(cur.records)
    for r in cur.records:
        assert r["correct"] and r["weight"] > 0 and r["response_tokens"] > 0 and r["tier"] in ("hard", "medium", "easy")


def test_keep_incorrect_hard_is_a_flag_for_the_hardest_problems_only(tok):
    pool = [rec(i=1, answer="8", difficulty=3), rec(i=2, answer="8", difficulty=2)]
    off = C.curate_sft_records(pool, tok, C.CurationRecipe())
    assert not off.records and off.dropped_by_rule()["incorrect"] == 2
    on = C.curate_sft_records(pool, tok, C.CurationRecipe(keep_incorrect_hard=True))
    assert [(r["id"], r["correct"], r["tier"]) for r in on.records] == [("math-1", False, "hard")]
    # by pass rate instead of metadata: the problem with pass rate 0 is the hard one
    on = C.curate_sft_records(pool, tok, C.CurationRecipe(keep_incorrect_hard=True),
                              pass_rates={"math-1": 0.75, "math-2": 0.0})
    assert [r["id"] for r in on.records] == ["math-2"]


def test_math_verify_timeout_is_a_reject_not_a_crash(tok, monkeypatch):
    monkeypatch.setattr(grading, "math_verify_strict", lambda pred, gold, t: "timeout")
    pool = [rec(i=1, answer="\\frac{1}{3}", final="\\boxed{\\sqrt{2}}"), rec(i=2)]
    cur = C.curate_sft_records(pool, tok, C.CurationRecipe())
    assert [r["id"] for r in cur.records] == ["math-2"]
    assert cur.rejects()[0]["rule"] == "verify_timeout" and cur.rejects()[0]["stage"] == "malformed"
    monkeypatch.setattr(grading, "math_verify_strict", lambda pred, gold, t: "error: ValueError: bad")
    assert C.curate_sft_records(pool, tok, C.CurationRecipe()).dropped_by_rule()["verify_error"] == 1


def test_math_verify_is_tier_two(tok):
    # 2^{3} vs 8: tier 1 says different, math-verify says equal -> kept
    cur = C.curate_sft_records([rec(i=1, answer="8", final="\\boxed{2^{3}}")], tok, C.CurationRecipe())
    assert len(cur.records) == 1
    cur = C.curate_sft_records([rec(i=1, answer="8", final="\\boxed{2^{3}}")], tok,
                               C.CurationRecipe(use_math_verify=False))
    assert cur.dropped_by_rule()["incorrect"] == 1


def test_skipping_math_verify_for_distinct_exact_rationals_changes_no_verdict():
    rng = random.Random(0)
    pairs = [("3", "4"), ("-2", "2"), ("\\frac{1}{3}", "\\frac{2}{5}"), ("7/8", "\\frac{8}{9}")]
    pairs += [(f"\\frac{{{rng.randint(-40, 40)}}}{{{rng.randint(1, 30)}}}", str(rng.randint(-9, 9))) for _ in range(12)]
    for pred, gold in pairs:
        if grading._distinct_exact_rationals(pred, gold):
            assert not verify.math_verify_equal(pred, gold), (pred, gold)
    assert not grading._distinct_exact_rationals("0.3333333", "\\frac{1}{3}")  # decimals still go to math-verify
    assert not grading._distinct_exact_rationals("2^{3}", "8") and not grading._distinct_exact_rationals("4", "4")


def test_corrupt_records_only_produces_rejects():
    from falcon_h1r.tasks import teacher_records
    from falcon_h1r.tasks import generate_split

    probs = generate_split(["math", "code", "science"], [1, 2, 3], 30, "train", 0)
    bad = C.corrupt_records(teacher_records(probs, "stepwise", 0), 1.0, 0)
    issues = [C.validate_record(r) or C.quality_issue(r) for r in bad]
    assert all(i is not None and i[0].startswith("malformed") for i in issues)


# ------------------------------------------------------------------------------------- weights
def test_difficulty_weights_follow_the_paper_ranges():
    r = C.CurationRecipe()
    assert C.difficulty_tier(r, pass_rate=0.0) == ("hard", 1.75)
    assert C.difficulty_tier(r, pass_rate=0.25) == ("hard", 1.25)
    tier, w = C.difficulty_tier(r, pass_rate=0.125)
    assert tier == "hard" and w == pytest.approx(1.5)
    assert C.difficulty_tier(r, pass_rate=0.5) == ("medium", 1.0)
    assert C.difficulty_tier(r, pass_rate=1.0) == ("easy", 0.5)
    assert C.difficulty_tier(C.CurationRecipe(drop_easy=True), pass_rate=1.0) == ("easy", 0.0)
    # metadata source, and long traces make a problem hard
    assert C.difficulty_tier(r, level=3) == ("hard", 1.5)
    assert C.difficulty_tier(r, level=3, long_trace=True) == ("hard", 1.75)
    assert C.difficulty_tier(r, level=1) == ("easy", 0.5)
    assert C.difficulty_tier(r, level=1, long_trace=True) == ("hard", 1.5)
    assert C.difficulty_tier(r, level=2) == ("medium", 1.0)
    for pr in [i / 8 for i in range(9)]:
        _, w = C.difficulty_tier(r, pass_rate=pr)
        assert w in (0.5, 1.0) or 1.25 <= w <= 1.75


def test_easy_removed_is_counted(tok):
    cur = C.curate_sft_records([rec(i=1, difficulty=1), rec(i=2, difficulty=2)], tok, C.CurationRecipe(drop_easy=True))
    assert [r["id"] for r in cur.records] == ["math-2"] and cur.dropped_by_rule()["easy_removed"] == 1


# ------------------------------------------------------------------------------------- pass rates and RL rules
def rate(correct, k=8, truncated=0, freq=0, i="p"):
    return C.PassRate(i, "math", 2, k, correct, "5" if freq else None, freq, truncated, 10.0)


def test_rl_rule_each_branch():
    r = C.CurationRecipe()
    assert C.rl_decision(rate(8), r) == "drop_all_correct"
    assert C.rl_decision(rate(1), r) == C.rl_decision(rate(7), r) == "keep_partial"
    assert C.rl_decision(rate(0, truncated=8), C.CurationRecipe(truncated_keep_fraction=0.0)) == "drop_all_truncated"
    assert C.rl_decision(rate(0, truncated=8), C.CurationRecipe(truncated_keep_fraction=1.0)) == "keep_truncated_sample"
    assert C.rl_decision(rate(0, truncated=7, freq=1), r) == "keep_zero"  # not *all* truncated
    assert C.rl_decision(rate(0, freq=4), r) == "drop_bad_label"
    assert C.rl_decision(rate(0, freq=8), r) == "drop_bad_label"
    assert C.rl_decision(rate(0, freq=3), r) == "keep_zero"
    assert C.rl_decision(rate(0, freq=0), r) == "keep_zero"


def test_truncated_subset_is_small_random_and_seeded():
    r = C.CurationRecipe(truncated_keep_fraction=0.1)
    picks = [C.rl_decision(rate(0, truncated=8, i=f"p{i}"), r, seed=0) for i in range(2000)]
    frac = picks.count("keep_truncated_sample") / len(picks)
    assert 0.07 < frac < 0.13
    assert picks == [C.rl_decision(rate(0, truncated=8, i=f"p{i}"), r, seed=0) for i in range(2000)]


def test_pass_rates_majority_answer_and_truncation():
    probs = [{"id": "a", "domain": "math", "difficulty": 1, "answer": "1/2"},
             {"id": "b", "domain": "math", "difficulty": 3, "answer": "3"}]
    V = verify.Verdict
    verdicts = [V(True, "\\frac{1}{2}", "ok"), V(True, "0.5", "ok"), V(False, "2", "wrong"),
                V(False, None, "no_answer"),
                V(False, "4", "wrong"), V(False, "4", "wrong"), V(False, "4.0", "wrong"), V(False, "7", "wrong")]
    rates = C.pass_rates_from_verdicts(probs, verdicts, ["eos", "eos", "eos", "length"] + ["length"] * 4,
                                       [3, 4, 5, 8] + [8] * 4, k=4)
    a, b = rates
    assert (a.correct, a.pass_rate, a.majority_answer, a.majority_freq, a.n_truncated) == (2, 0.5, "1/2", 2, 1)
    assert (b.correct, b.majority_answer, b.majority_freq, b.n_truncated) == (0, "4", 3, 4)
    assert C.pass_rate_histogram(rates, 4) == [1, 0, 1, 0, 0]
    with pytest.raises(ValueError):
        C.pass_rates_from_verdicts(probs, verdicts[:-1], ["eos"] * 7, [1] * 7, k=4)


def test_select_rl_pool_dedups_decontaminates_and_applies_rules():
    def prob(i, q, answer="3", **kw):
        return {"id": f"rl-{i}", "domain": "math", "difficulty": 2, "question": q, "answer": answer, **kw}

    cands = [prob(0, "Compute 1 + 2."), prob(1, "compute 1+2"), prob(2, "Compute 5 - 3."), prob(3, "In the SFT set."),
             prob(4, "in the sft set"), prob(5, "Eval question."), prob(6, "Bad answer.", answer="\\frac{"),
             prob(7, "Unverifiable.", answer="x"), prob(8, "Easy."), prob(9, "Hard, bad label."),
             prob(10, "Hard, runaway."), prob(11, "Hard, scattered.")]
    cands[7]["answer"] = "\\text{see proof}"
    table = {"rl-0": rate(3, i="rl-0"), "rl-2": rate(5, i="rl-2"), "rl-8": rate(8, i="rl-8"),
             "rl-9": rate(0, freq=5, i="rl-9"), "rl-10": rate(0, truncated=8, i="rl-10"),
             "rl-11": rate(0, freq=2, i="rl-11")}
    seen = []

    def rates_fn(problems):
        seen.extend(p["id"] for p in problems)
        return [table[p["id"]] for p in problems]

    recipe = C.CurationRecipe(truncated_keep_fraction=0.0)
    cur = C.select_rl_pool(cands, rates_fn, recipe, sft_questions=["In the SFT set."], eval_questions=["EVAL question"])
    assert seen == ["rl-0", "rl-2", "rl-8", "rl-9", "rl-10", "rl-11"]  # only clean problems are rolled out
    d = cur.dropped_by_rule()
    assert d["rl_duplicate_exact"] == 1 and d["rl_duplicate_normalized"] == 2  # rl-1 duplicates rl-0 (inside the pool)
    assert d["rl_contaminated"] == 1 and d["rl_malformed"] == 1 and d["rl_unverifiable"] == 1
    assert d["rl_all_correct"] == 1 and d["rl_bad_label"] == 1 and d["rl_all_truncated"] == 1
    assert [p["id"] for p in cur.problems] == ["rl-0", "rl-2", "rl-11"]
    assert cur.decisions["rl-11"] == "keep_zero" and cur.problems[0]["pass_rate"] == 3 / 8
    assert len(cur.problems) + len(cur.removals) == cur.n_in == len(cands)
    assert cur.histogram() == [3, 0, 0, 1, 0, 1, 0, 0, 1]
    assert cur.histogram(kept_only=True) == [1, 0, 0, 1, 0, 1, 0, 0, 0]
    back = C.RLCuration.from_json(cur.to_json())
    assert back.histogram() == cur.histogram() and back.dropped_by_rule() == d
    with pytest.raises(ValueError, match="rates_fn"):
        C.select_rl_pool(cands[:1], lambda ps: [rate(3, i="other")], recipe, sft_questions=[])


# ------------------------------------------------------------------------------------- dedup, contamination
def test_dedup_exact_normalized_and_internal():
    cands = [{"question": q} for q in ["Compute 2 + 2.", "compute 2+2", "Compute 2 + -2.", "New one", "New   one"]]
    kept, removed = C.dedup_against(cands, ["Compute 2 + 2."])
    assert [c["question"] for c in kept] == ["Compute 2 + -2.", "New one"]
    assert [how for _, how in removed] == ["exact", "normalized", "normalized"]
    assert C.normalize_text("Solve: x + -3 = 5.") != C.normalize_text("Solve: x + 3 = 5.")


def test_contamination_percent():
    rows = C.contamination(["q1", "q2", "Q3 ", "x"],
                           {"bench_a": ["q1", "q2", "q3", "q4"], "bench_b": ["z"], "empty": []})
    a, b, e = rows
    assert (a["overlap_exact"], a["overlap_pct"], a["overlap_normalized_pct"]) == (2, 50.0, 75.0)
    assert b["overlap_pct"] == 0.0 and e["overlap_pct"] == 0.0


# ------------------------------------------------------------------------------------- mixture
def test_mixture_probabilities_and_stream():
    rng = random.Random(0)
    records = [{**rec(d, i=i), "id": f"{d}-{i}", "weight": rng.choice([0.5, 1.0, 1.5]), "prompt_tokens": 10,
                "response_tokens": {"math": 40, "code": 80, "science": 20}[d]}
               for d in ("math", "code", "science") for i in range(600)]
    records[0]["weight"] = 0.0  # a removed-easy record never reaches the stream
    ds, probs = C.build_mixture(records, C.PAPER_MIXTURE_PCT, seed=1)
    assert probs == pytest.approx({"math": 55.9 / 92.9, "code": 27.0 / 92.9, "science": 10.0 / 92.9})
    from datasets import IterableDataset

    assert isinstance(ds, IterableDataset)
    rows = list(ds)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) and "math-0" not in ids  # no repeats, weight-0 filtered
    table = {t["domain"]: t for t in C.mixture_table(rows)}
    for d, p in probs.items():
        assert table[d]["pct_samples"] == pytest.approx(100 * p, abs=4.0)
    assert sum(t["pct_samples"] for t in table.values()) == pytest.approx(100)
    assert table["code"]["avg_tokens_per_sample"] == 90
    assert sum(t["pct_tokens"] for t in table.values()) == pytest.approx(100)
    assert {r["weight"] for r in rows} <= {0.5, 1.0, 1.5}
    with pytest.raises(ValueError, match="no domain"):
        C.mixture_probabilities({"math": 1.0}, ["code"])


def test_mixture_sample_has_the_proportions_and_size():
    recs = [{"domain": d, "id": f"{d}{i}"} for d in ("math", "code", "science") for i in range(5)]
    out = C.mixture_sample(recs, {"math": 55.9, "code": 27.0, "science": 10.0}, 93, seed=0)
    assert len(out) == 93
    counts = {d: sum(r["domain"] == d for r in out) for d in ("math", "code", "science")}
    assert counts == {"math": 56, "code": 27, "science": 10}


def test_lognormal_fit_recovers_parameters():
    import numpy as np

    x = np.random.default_rng(0).lognormal(mean=5.0, sigma=0.6, size=4000)
    fit = C.fit_lognormal(x)
    assert fit["mu"] == pytest.approx(5.0, abs=0.05) and fit["sigma"] == pytest.approx(0.6, abs=0.05)
    assert fit["ks_pvalue"] > 0.01
    assert math.isnan(C.fit_lognormal([3])["mu"])


# ------------------------------------------------------------------------------------- fast grader vs plain twin
CODE_CASES = [
    "```python\ndef solve(x):\n    return x + 1\n```",  # pass
    "```python\ndef solve(x):\n    return x - 1\n```",  # wrong
    "```python\ndef solve(x):\n    raise ValueError('no')\n```",  # raises
    "```python\nimport sys\ndef solve(x):\n    sys.exit(0)\n```",  # exits inside a test
    "```python\nx = 1 / 0\ndef solve(x):\n    return x + 1\n```",  # fails at definition time
    "```python\ndef solve(x):\n    return solve(x)\n```",  # recursion error
    "```python\ndef solve(x)\n    return x\n```",  # syntax error
    "```javascript\nfunction solve(x) { return x + 1; }\n```",  # wrong language
    "no code at all",
    "```python\nimport os\ndef solve(x):\n    os.system('true')\n    return x + 1\n```",  # forbidden: sinks its batch
]


def test_batched_grading_equals_verify_check():
    problem = {"domain": "code", "tests": ["assert solve(1) == 2", "assert solve(5) == 6"], "language": "python"}
    math_p, sci_p = {"domain": "math", "answer": "8"}, {"domain": "science", "answer": "2.5", "tolerance": 0.01}
    problems = [problem] * len(CODE_CASES) + [math_p] * 4 + [sci_p] * 2
    responses = ["<think>\nr\n</think>\n" + c for c in CODE_CASES] + \
        ["</think>\\boxed{8}", "</think>\\boxed{2^{3}}", "</think>\\boxed{9}", "</think>none", "</think>\\boxed{2.51}",
         "</think>\\boxed{3}"]
    fast = C.grade(problems, responses, code_workers=2)
    plain = [verify.check(p, r) for p, r in zip(problems, responses)]
    assert [v.correct for v in fast] == [v.correct for v in plain]
    assert [v.correct for v in fast][:2] == [True, False]
    one = C.grade(problems, responses, code_workers=1)
    assert [v.correct for v in one] == [v.correct for v in plain]


@pytest.mark.slow
def test_batched_grading_survives_a_hanging_candidate():
    items = [("def solve(x):\n    return x + 1\n", ["assert solve(1) == 2"]),
             ("def solve(x):\n    while True:\n        pass\n", ["assert solve(1) == 2"]),
             ("def solve(x):\n    return x\n", ["assert solve(1) == 2"])]
    out = C.run_code_batch(items, timeout_s=1.0, workers=1)
    assert [ok for ok, _ in out] == [True, False, False]
    assert "timeout" in out[1][1]


# ------------------------------------------------------------------------------------- model, recipe, cache
def test_estimate_pass_rates_with_a_random_model(tok):
    from falcon_h1r.config import GenerationConfig, ModelConfig
    from falcon_h1r.models import build_model

    m = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    intermediate_size=64, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_state=8, mamba_chunk_size=8)
    model = build_model(m, tok.vocab_size, seed=0, pad_id=tok.pad_id, eos_id=tok.eos_id).eval()
    probs = [{**make_problem(d, 1, random.Random(i)), "id": f"{d}{i}"}
             for i, d in enumerate(["math", "code", "science"])]
    gen = GenerationConfig(temperature=0.6, top_p=0.95, max_new_tokens=4, batch_size=8)
    rates = C.estimate_pass_rates(model, tok, probs, gen, k=3, seed=0, progress=False)
    assert [r.id for r in rates] == ["math0", "code1", "science2"]
    for r in rates:
        assert r.k == 3 and 0 <= r.correct <= 3 and 0 <= r.n_truncated <= 3 and 0 < r.mean_tokens <= 4
        assert sum(r.reasons.values()) == 3


def test_recipe_rejects_bad_values_and_presets_parse():
    with pytest.raises(RecipeError, match="teacher_noise.typo"):
        C.CurationRecipe(teacher_noise={"typo": 0.1})
    with pytest.raises(RecipeError, match="majority_drop_at_least"):
        C.CurationRecipe(majority_drop_at_least=9)
    with pytest.raises(RecipeError, match="hard_pass_rate_max"):
        C.CurationRecipe(hard_pass_rate_max=0.9, easy_pass_rate_min=0.5)
    with pytest.raises(RecipeError, match="unknown key curation.bogus"):
        SC.load_recipe(load_preset("tiny", {"curation.bogus": 1}))
    for name in ("tiny", "small", "paper"):
        r = SC.load_recipe(load_preset(name))
        assert r.pass_rate_k == 8 and r.pass_rate_temperature == 0.6 and r.pass_rate_top_p == 0.95
        assert r.majority_drop_at_least == 4 and r.rl_domains == ["math", "code"]
        assert r.mixture == C.PAPER_MIXTURE_PCT


def test_curate_sft_is_cached(tiny_preset, tmp_path):
    from falcon_h1r.config import load_preset

    cfg = load_preset("tiny", {"tasks.train_per_domain": 12, "tasks.test_per_domain": 4, "tokenizer.vocab_size": 300,
                               "curation.teacher_noise": {"wrong_answer": 0.3, "runaway": 0.2},
                               "curation.max_trace_tokens": 200})
    a = SC.curate_sft(cfg, root=tmp_path, progress=False)
    assert a.n_in == 36 and a.dropped_by_rule()["incorrect"] > 0 and a.dropped_by_rule()["too_long"] > 0
    assert a.mixture and {r["domain"] for r in a.mixture} <= {"math", "code", "science"}
    cached = list((tmp_path / "tiny" / "_cache").glob("curation-sft-*.json"))
    assert len(cached) == 1
    b = SC.curate_sft(cfg, root=tmp_path, progress=False)
    assert b.records == a.records and b.dropped_by_rule() == a.dropped_by_rule() and b.mixture == a.mixture


def test_curate_sft_with_pass_rate_difficulty_uses_the_model(tmp_path):
    from falcon_h1r.config import ModelConfig
    from falcon_h1r.models import build_model
    from falcon_h1r.sections.common import get_tokenizer, task_sets

    cfg = load_preset("tiny", {"tasks.train_per_domain": 4, "tasks.test_per_domain": 2, "tokenizer.vocab_size": 300,
                               "curation.sft_difficulty": "pass_rate", "curation.sft_pass_rate_k": 2,
                               "curation.pass_rate_max_new_tokens": 3})
    tok = get_tokenizer(cfg, task_sets(cfg), tmp_path)
    m = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    intermediate_size=64, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_state=8, mamba_chunk_size=8)
    model = build_model(m, tok.vocab_size, seed=0, pad_id=tok.pad_id, eos_id=tok.eos_id).eval()
    cur = SC.curate_sft(cfg, model=model, tokenizer=tok, root=tmp_path, progress=False)
    assert cur.stats["difficulty_source"] == "pass_rate" and cur.records
    # a random model solves nothing in 3 tokens: every problem has pass rate 0, so every trace is hard x1.75
    assert {(r["pass_rate"], r["tier"], r["weight"]) for r in cur.records} == {(0.0, "hard", 1.75)}
