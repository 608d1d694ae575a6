"""The keys behind the curation claims (papers/claims.yaml, section 01): the independent re-checks find every
kind of rule break and agree with the pipeline, the statistics never write NaN, the positive controls find
what is planted (and fail when the check they control is broken), nothing planted leaks, and the section
writes every key its claims read."""

import math
import random

import pandas as pd
import pytest

from falcon_h1r import claims, papers
from falcon_h1r import curation as C
from falcon_h1r.config import load_preset
from falcon_h1r.curation import audit, controls
from falcon_h1r.curation.pass_rates import PassRate
from falcon_h1r.sections import curation as SC
from falcon_h1r.tasks import TeacherNoise, make_problem, public, teacher_records


def rec(domain="math", **kw):
    base = {
        "math": {"answer": "7", "final": "So \\boxed{\\frac{\\sqrt{4}}{2}}."},
        "science": {"answer": "2.5", "final": "The answer is \\boxed{2.5} m/s."},
        "code": {"answer": "", "language": "python", "tests": ["assert solve(1) == 2"],
                 "final": "```python\ndef solve(x):\n    return x + 1\n```"},
    }[domain]
    return {"id": f"{domain}-{kw.pop('i', 0)}", "domain": domain, "question": "Q?", "reasoning": "Step.", **base,
            **kw}


def problems(domain, n, level=1, seed=0):
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        p = make_problem(domain, level, rng)
        if p["question"] not in seen:
            seen.add(p["question"])
            out.append({**p, "id": f"{domain}-{seed}-{len(out)}"})
    return out


# ------------------------------------------------------------------------------------- SFT re-check
@pytest.mark.parametrize("record, rule", [
    (rec(reasoning=" \n\t"), "empty_reasoning"),
    (rec(final="The answer is 7."), "no_boxed"),
    (rec(final="The answer is \\boxed{ }."), "no_boxed"),
    (rec(final="\\boxed{7"), "no_boxed"),
    (rec("science", final="About 2.5 m/s."), "no_boxed"),
    (rec("code", final="```javascript\nfunction solve(x) {\n  return x;\n}\n```"), "wrong_language"),
    (rec("code", final="```python\ndef solve(x)\n    return x\n```"), "syntax_error"),
    (rec("code", final="def solve(x): return x"), "no_code_block"),
])
def test_sft_recheck_finds_each_rule_break(record, rule):
    assert [v["rule"] for v in audit.sft_rule_violations([record])] == [rule]


def test_sft_recheck_passes_clean_records_and_reads_the_answer_after_think():
    clean = [rec(), rec("science"), rec("code"), rec(final="<think>\\boxed{1}</think> The answer is \\boxed{7}.")]
    assert audit.sft_rule_violations(clean) == []
    # a \boxed{} only inside the reasoning part is not a final \boxed{}
    assert audit.sft_rule_violations([rec(final="\\boxed{7}</think> The answer is 7.")])[0]["rule"] == "no_boxed"
    # untagged code counts as Python only when it compiles
    assert audit.sft_rule_violations([rec("code", final="```\ndef solve(x):\n    return x\n```")]) == []


def test_sft_recheck_agrees_with_the_pipeline_on_a_noisy_teacher():
    """Every trace the pipeline's quality filter rejects for one of the four rules, the re-check rejects too,
    and no trace the filter accepts is rejected (two implementations, one answer)."""
    probs = [p for d in ("math", "code", "science") for p in problems(d, 40, level=2, seed=3)]
    noise = TeacherNoise(missing_box=0.2, empty_reasoning=0.2, bad_code=0.25, wrong_language=0.2)
    recs = [public(r) for r in teacher_records(probs, "mixed", 0, noise=noise)]
    four = {"empty_reasoning", "no_boxed", "syntax_error", "wrong_language"}
    pipeline = {r["id"]: (C.quality_issue(r) or (None,))[0] for r in recs}
    recheck = {}
    for v in audit.sft_rule_violations(recs):
        recheck.setdefault(v["id"], set()).add(v["rule"])
    rejected = {i for i, rule in pipeline.items() if rule in four}
    assert len(rejected) > 20 and {pipeline[i] for i in rejected} == four
    assert rejected == set(recheck)
    assert all(pipeline[i] in recheck[i] for i in rejected)


# ------------------------------------------------------------------------------------- RL re-check
def _row(correct, freq=0, trunc=0, k=8, decision=None):
    return {"id": f"p{correct}-{freq}-{trunc}", "correct": correct, "k": k, "majority_freq": freq,
            "n_truncated": trunc, "decision": decision}


def test_paper_rl_rule_each_branch_and_the_papers_threshold():
    assert audit.paper_rl_rule(papers.load("rl_filter_rules")) == (8, 4)
    assert audit.paper_rl_keeps(8, 8, 8, 0) is False
    assert all(audit.paper_rl_keeps(c, 8, 1, 0) for c in range(1, 8))
    assert audit.paper_rl_keeps(0, 8, 4, 0) is False and audit.paper_rl_keeps(0, 8, 3, 0) is True
    assert audit.paper_rl_keeps(0, 8, 0, 8) is None  # all truncated: the paper keeps a random subset
    assert audit.paper_rl_keeps(0, 4, 2, 0) is False and audit.paper_rl_keeps(0, 4, 1, 0) is True  # 4 of 8, scaled
    with pytest.raises(ValueError):
        audit.paper_rl_keeps(9, 8, 0, 0)


def test_rl_recheck_agrees_with_rl_decision_and_flags_a_drifted_recipe():
    recipe = C.CurationRecipe()
    rates = [PassRate(f"p{i}", "math", 1, 8, c, "1", f, t, 10.0) for i, (c, f, t) in
             enumerate([(8, 8, 0), (3, 2, 0), (0, 5, 0), (0, 4, 0), (0, 3, 0), (0, 0, 8), (0, 1, 2)])]
    rows = [{**r.__dict__, "decision": C.rl_decision(r, recipe)} for r in rates]
    assert audit.rl_rule_violations(rows) == []
    drifted = C.CurationRecipe(majority_drop_at_least=3)
    rows = [{**r.__dict__, "decision": C.rl_decision(r, drifted)} for r in rates]
    assert [v["id"] for v in audit.rl_rule_violations(rows)] == ["p4"]  # 0/8 with a wrong answer 3 times
    assert audit.rl_rule_violations([_row(8, decision="keep_partial"), _row(2, decision="mystery")]) != []


# ------------------------------------------------------------------------------------- statistics
def test_spearman_is_negative_for_a_mirrored_j_and_never_nan():
    rho, why = audit.kept_count_vs_pass_rate_spearman([300, 33, 13, 8, 6, 7, 1, 9])
    assert rho < -0.5 and why == ""
    assert audit.kept_count_vs_pass_rate_spearman([1, 2, 3, 4, 5, 6, 7, 8])[0] == pytest.approx(1.0)
    for counts in ([0] * 8, [5] * 8, [1, 2]):
        rho, why = audit.kept_count_vs_pass_rate_spearman(counts)
        assert rho is None and why


def test_kept_per_bin_counts_kept_problems_of_one_domain():
    rates = pd.DataFrame([{"domain": "math", "correct": 0, "decision": "keep_zero"},
                          {"domain": "math", "correct": 0, "decision": "drop_bad_label"},
                          {"domain": "math", "correct": 2, "decision": "keep_partial"},
                          {"domain": "code", "correct": 1, "decision": "keep_partial"}])
    assert SC.kept_per_bin(rates, 8, "math") == [1, 0, 1, 0, 0, 0, 0, 0, 0]
    assert SC.kept_per_bin(rates, 8) == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert SC.kept_per_bin(pd.DataFrame(), 8, "math") == [0] * 9


def test_overlap_uses_a_looser_key_than_the_dedup():
    ref = ["Solve 2x + 3 = 7.", "What is 12 * 7?"]
    assert audit.overlap_count(["solve 2x+3=7", "WHAT IS 12 *7 ?", "What is 12 * 8?"], ref) == 2
    assert audit.overlap_count(["Sol ve 2x + 3 = 7"], ref) == 1  # the dedup's normaliser would miss this one
    assert C.normalize_text("Sol ve 2x + 3 = 7") != C.normalize_text(ref[0])


def test_max_ks_distance_skips_domains_without_a_fit():
    ks, why = audit.max_ks_distance([{"domain": "math", "ks_stat": 0.05}, {"domain": "code", "ks_stat": 0.12},
                                     {"domain": "science", "ks_stat": math.nan}])
    assert ks == 0.12 and "science" in why
    assert audit.max_ks_distance([{"domain": "math", "ks_stat": math.nan}])[0] is None


def test_share_errors_renormalise_the_paper_without_other():
    paper = {"math": 55.9, "code": 27.0, "science": 10.0, "other": 7.1}
    exact = {d: 100 * v / 92.9 for d, v in paper.items() if d != "other"}
    assert max(abs(e) for e in audit.share_errors_pct(exact, paper).values()) < 1e-9
    err = audit.share_errors_pct({"math": 70.0, "code": 30.0}, paper)
    assert err["science"] == pytest.approx(-100 * 10 / 92.9) and err["math"] == pytest.approx(70 - 100 * 55.9 / 92.9)


# ------------------------------------------------------------------------------------- positive controls
def test_plant_makes_distinct_exact_and_normalized_copies_without_touching_the_inputs():
    src = problems("math", 6) + problems("code", 6)
    before = [dict(p) for p in src]
    planted = controls.plant(src, 2, seed=0, tag="t")
    assert src == before and len(planted) == 8
    assert all(p["id"].startswith(controls.PLANTED_PREFIX) for p in planted)
    assert len({p["planted_from"] for p in planted}) == 8  # a different problem for every copy
    orig = {p["id"]: p["question"] for p in src}
    for p in planted:
        if p["planted_kind"] == "exact":
            assert p["question"] == orig[p["planted_from"]]
        else:
            assert p["question"] != orig[p["planted_from"]]
            assert C.normalize_text(p["question"]) == C.normalize_text(orig[p["planted_from"]])


def test_dedup_control_finds_every_planted_copy_and_fails_when_the_dedup_is_broken(monkeypatch):
    recipe = C.CurationRecipe()
    sft = problems("math", 10, seed=1) + problems("code", 10, seed=1)
    cands = problems("math", 5, seed=2) + problems("code", 5, seed=2)
    rows = controls.dedup_control(cands, sft, recipe, per_domain=2, seed=0)
    assert len(rows) == 8 and controls.found_fraction(rows) == 1.0 and not any(r["reached_pool"] for r in rows)
    assert {r["removed_by"] for r in rows} == {"rl_duplicate_exact", "rl_duplicate_normalized"}

    from falcon_h1r.curation import rl_pool

    monkeypatch.setattr(rl_pool, "dedup_against", lambda cands, ref: (list(cands), []))
    broken = controls.dedup_control(cands, sft, recipe, per_domain=2, seed=0)
    assert controls.found_fraction(broken) == 0.0 and all(r["reached_pool"] for r in broken)


@pytest.fixture(scope="module")
def tok():
    from falcon_h1r.tokenizer import train_tokenizer

    corpus = [p["question"] for d in ("math", "code", "science") for p in problems(d, 30, seed=9)]
    return train_tokenizer(corpus + ["The answer is \\boxed{7}.", "def solve(x):\n    return x\n"], 300)


def _contamination_rows(tok, recipe):
    heldout = [p for d in ("math", "code", "science") for p in problems(d, 6, seed=5)]
    sft = [p for d in ("math", "code") for p in problems(d, 6, seed=6)]
    train_texts = [p["question"] for p in sft]

    def traces(ps):
        return [public(r) for r in teacher_records(ps, "mixed", 0)]

    return controls.contamination_control(heldout, train_texts, sft, recipe, tok, make_traces=traces,
                                          levels=(1, 2), per_domain=2, seed=0)


def test_contamination_control_is_caught_three_ways(tok):
    rows = _contamination_rows(tok, C.CurationRecipe(max_trace_tokens=4096))
    assert len(rows) == 12 and controls.found_fraction(rows) == 1.0
    assert all(r["flagged_by_check"] and r["sft_removed_by"] == "contaminated"
               and r["rl_removed_by"] == "rl_contaminated" and not r["reached_pool"] for r in rows)


def test_contamination_control_fails_when_the_curation_keeps_contaminated_data(tok):
    rows = _contamination_rows(tok, C.CurationRecipe(max_trace_tokens=4096, drop_contaminated=False))
    assert controls.found_fraction(rows) == 0.0
    assert all(r["flagged_by_check"] for r in rows)  # the check still sees them; the curation does not act


def test_nothing_planted_may_reach_curated_data():
    controls.assert_nothing_planted([{"id": "math-train-000001"}], [])
    with pytest.raises(RuntimeError, match="planted-dup-exact-x"):
        controls.assert_nothing_planted([{"id": "a"}], [{"id": "planted-dup-exact-x"}])


# ------------------------------------------------------------------------------------- the section's keys
def test_section_writes_every_key_its_claims_read(tmp_path):
    """claim_checks on a shrunk tiny preset (pass rates from a stand-in, no model): every key and precondition
    key of the 01 claims is present and finite or an explicit null, and every 01 claim gets a computed status."""
    from falcon_h1r.curation.mixture import mixture_table
    from falcon_h1r.sections.common import task_sets

    cfg = load_preset("tiny", {"tasks.train_per_domain": 30, "tasks.test_per_domain": 8, "tokenizer.vocab_size": 300,
                               "curation.rl_pool_per_domain": 24, "curation.max_trace_tokens": 4096,
                               "curation.teacher_noise": {"missing_box": 0.1, "empty_reasoning": 0.1,
                                                          "bad_code": 0.2, "wrong_language": 0.2}})
    recipe, sets = SC.load_recipe(cfg), task_sets(cfg)
    sft = SC.curate_sft(cfg, root=tmp_path, progress=False)
    cands = SC.rl_candidates(cfg, recipe, sets)

    def rates_fn(ps):  # a stand-in for the model: correct counts spread over 0..8, some repeated wrong answers
        return [PassRate(p["id"], p["domain"], 1, 8, i % 9, "3", 5 * (i % 2), 0, 10.0) for i, p in enumerate(ps)]

    rl = C.select_rl_pool(cands, rates_fn, recipe, sft_questions=[p["question"] for p in sets["train"]],
                          eval_questions=[p["question"] for p in sets["test"]], seed=cfg.seed)
    final_train = [r["question"] for r in sft.records] + [p["question"] for p in rl.problems]
    mixture = pd.DataFrame(mixture_table(sft.mixture))
    keys, control_rows, violations = SC.claim_checks(cfg, recipe, sets, sft, rl, SC.rates_frame(rl),
                                                     SC.lengths_frame(sft), mixture, final_train, cands)
    assert keys["sft_filter_rule_violations"] == 0 and keys["rl_filter_rule_violations"] == 0 and violations == []
    assert keys["rl_sft_overlap_after_dedup"] == 0
    assert keys["dedup_planted_found_fraction"] == 1.0 and keys["dedup_planted_count"] == 12
    assert keys["contamination_planted_found_fraction"] == 1.0 and keys["contamination_planted_count"] == 18
    assert keys["rl_kept_count_vs_pass_rate_spearman_computable"] == 1
    assert 0 <= keys["mixture_max_abs_share_error_pct"] < 100 and 0 < keys["sft_length_lognormal_ks_max"] < 1
    assert not any(r["reached_pool"] for r in control_rows)
    assert set(SC.control_summary(control_rows)["found_fraction"]) == {1.0}

    summary = {**keys, "contamination_pct": 0.0, "kept_rl": len(rl.problems),
               **{f"dropped_by_rule_{k}": v for k, v in {**sft.dropped_by_rule(), **rl.dropped_by_rule()}.items()}}
    ours = [c for c in claims.load_claims() if c.section == SC.SECTION]
    needed = claims.required_keys(ours)[SC.SECTION]
    assert needed <= set(summary), sorted(needed - set(summary))
    for k in needed:
        v = summary[k]
        assert v is None or (isinstance(v, (int, float)) and math.isfinite(v)), k
    rows = claims.evaluate(ours, {SC.SECTION: summary})
    assert len(rows) == 7 and not any(r["status"] == "not_run" for r in rows)


def test_open_section_checks_parameters_and_the_whole_preset():
    from falcon_h1r.config import RecipeError

    with pytest.raises(RecipeError, match="preset"):
        SC.open_section("huge")
    with pytest.raises(RecipeError, match="overrides"):
        SC.open_section("tiny", ["train.steps"])
    with pytest.raises(RecipeError, match="deepconf"):  # another section's block is checked too
        SC.open_section("tiny", {"deepconf.no_such_knob": 1})


def test_section_rows_read_the_staged_summary_while_reproduce_runs_the_section(tmp_path, monkeypatch):
    """Notebook 01 ends with scoreboard.section_rows; under `falcon-h1r reproduce` its summary is in a staging
    copy until the notebook succeeds, and the rows must come from that copy, not the folder it replaces."""
    import json

    from falcon_h1r.results import STAGE_ENV
    from falcon_h1r.sections import scoreboard

    final = tmp_path / "tiny" / SC.SECTION
    staging = tmp_path / "tiny" / f".{SC.SECTION}.staging-run-1"
    final.mkdir(parents=True)
    staging.mkdir(parents=True)
    (final / "summary.json").write_text(json.dumps({"contamination_pct": 0.0}))
    (staging / "summary.json").write_text(json.dumps({"mixture_max_abs_share_error_pct": 0.4}))
    monkeypatch.setenv(STAGE_ENV, f"tiny/{SC.SECTION}={staging}")
    rows = scoreboard.section_rows("tiny", SC.SECTION, root=tmp_path).set_index("id")
    assert rows.loc["curation_mixture_shares", "status"] == "reproduced"
    assert rows.loc["curation_contamination_zero", "status"] == "not_run"
