"""The §2 SFT ablations (section 02): the ``sft_ablations:`` block, the recipe grids and their shared reference arm,
the ablation teacher's error model and the pools (cache keys, rollout prefixes, the incorrect-trace exception), the
resumable work file and its worker shards, and the statistics of every axis (the summary keys the claims read)."""

import math
import random
import statistics
from dataclasses import replace

import numpy as np
import pytest

from falcon_h1r import claims
from falcon_h1r.config import RecipeError, load_preset
from falcon_h1r.curation import CurationRecipe, grade, trace_response
from falcon_h1r.sections import sft_ablation_data as D
from falcon_h1r.sections.sft_ablation_recipes import (GRIDS, PAPER_SFT_LR, SFTAblations, grid_runs, load_ablations,
                                                      load_grid, load_grids, reference_arm)
from falcon_h1r.sections.sft_ablations import append_row, load_rows
from falcon_h1r.sections.sft_findings import (ablation_summary, axis_estimates, curves, findings_table, rank_skew)
from falcon_h1r.stats import paired_difference
from falcon_h1r.tasks import generate_split


# ============================================================================== the block and the grids
def test_presets_parse_their_sft_ablations_block_and_bad_values_are_named():
    for name in ("tiny", "small", "paper"):
        load_ablations(load_preset(name))
    assert load_ablations(load_preset("paper")).grids == []
    bad = {"sft_ablations.grids": ["lr"], "sft_ablations.stepz": 3, "sft_ablations.teacher_slip_by_level": [0.1],
           "sft_ablations.hard_levels": [1], "sft_ablations.levels": [11], "sft_ablations.seeds": [0, 0],
           "sft_ablations.grid_seeds": {"lr": [0]}, "sft_ablations.eval_samples": 0}
    match = {"sft_ablations.grids": "grids are", "sft_ablations.stepz": "sft_ablations.stepz",
             "sft_ablations.teacher_slip_by_level": "10 rates", "sft_ablations.hard_levels": "overlap",
             "sft_ablations.levels": "levels from 1 to 10", "sft_ablations.seeds": "no repeats",
             "sft_ablations.grid_seeds": "not accepted", "sft_ablations.eval_samples": ">= 1"}
    for key, value in bad.items():
        with pytest.raises(RecipeError, match=match[key]):
            load_ablations(load_preset("tiny", {key: value}))


def test_every_grid_loads_and_grids_share_the_reference_arm():
    for preset in ("tiny", "small"):
        for rate in (PAPER_SFT_LR, 1.28e-4):
            grids = load_grids(load_preset(preset), rate)
            assert [g.name for g in grids] == list(GRIDS)
            ref = reference_arm(lr_paper=rate).key()
            assert {g.reference_key for g in grids if g.name != "learning_rate"} == {ref}
            shared = [g.name for g in grids if any(a.key() == ref for a in g.arms)]
            assert shared == ["learning_rate", "rollouts", "incorrect", "teachers", "weighting", "mixture"]
        assert [g.name for g in load_grids(load_preset(preset))] == ["learning_rate"]  # the rate is not known yet
    assert reference_arm().lr_paper == PAPER_SFT_LR
    assert [g.name for g in load_grids(load_preset("tiny", {"sft_ablations.reference_lr_paper": 2.56e-4}))] == \
        list(GRIDS)
    with pytest.raises(RecipeError, match="unknown SFT grid"):
        load_grid("lr")
    with pytest.raises(RecipeError, match="learning_rate grid"):
        load_ablations(load_preset("tiny", {"sft_ablations.grids": ["rollouts"]}))


def test_the_learning_rate_grid_runs_first_and_its_best_arm_sets_the_reference_rate(tmp_path, monkeypatch):
    """Two workers (threads here) split the runs; the second phase starts only when every learning-rate run is
    in the work file, and every later arm trains at the best rate; no run is computed twice."""
    import threading
    from types import SimpleNamespace

    from falcon_h1r.sections import sft_ablations as A

    preset = load_preset("tiny")
    acc = {1.28e-4: 0.1, 1.024e-3: 0.3}
    calls = []

    def fake_run_arm(ctx, arm, seed):
        calls.append((arm.key(), seed))
        return {"arm": arm.name, "arm_key": arm.key(), "seed": seed, "run_key": "r", "lr_paper": arm.lr_paper,
                "acc": acc.get(arm.lr_paper, 0.2) + seed / 100}

    monkeypatch.setattr(A, "run_arm", fake_run_arm)
    ctx = SimpleNamespace(preset=preset, work_dir=tmp_path, run_key="r")
    out = {}
    workers = [threading.Thread(target=lambda i=i: out.__setitem__(i, A.run_all(ctx, progress=False, shard=(i, 2),
                                                                               poll_s=0.05))) for i in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    grids, rows = out[0]
    assert [g.name for g in grids] == list(GRIDS) and len(calls) == len(set(calls)) == len(grid_runs(grids))
    lr_keys = {a.key() for a in grids[0].arms}
    first_other = next(i for i, c in enumerate(calls) if c[0] not in lr_keys)
    assert all(c[0] in lr_keys for c in calls[:first_other]) and len(calls[:first_other]) == len(grid_runs(grids[:1]))
    assert {r["lr_paper"] for r in rows if r["grid"] != "learning_rate" and r["grid"] != "normalization"} == {1.024e-3}
    assert A.best_lr_paper(grids[0], {}) is None


def test_at_the_floor_the_reference_rate_is_the_lowest_loss_never_a_diverged_one():
    """Measured at small: every arm of the answers-only start scored 0.000-0.011, so accuracy picked the top rate by
    noise and later arms diverged there. Below the floor the learning_rate grid is read by its final training loss,
    and an arm with a non-finite loss is never taken; above it, by accuracy as before."""
    import math

    from falcon_h1r.sections.sft_ablation_recipes import FLOOR_ACC, best_lr_paper

    grid = load_grid("learning_rate", "tiny", load_ablations(load_preset("tiny")))
    rates = [a.lr_paper for a in grid.arms]

    def rows(acc, loss):
        return {(a.key(), s): {"acc": acc(a.lr_paper, s), "train_loss_final": loss(a.lr_paper, s)}
                for a in grid.arms for s in grid.seeds[a.name]}

    top, low = max(rates), min(rates)
    floor_acc = lambda lr, s: 0.011 if lr == top else 0.0  # noise at the floor favours the top rate
    loss = lambda lr, s: math.nan if lr == low and s == 0 else (0.8 if lr == top else 0.9)
    assert best_lr_paper(grid, rows(floor_acc, loss)) == top  # the top rate has the lowest finite loss
    loss2 = lambda lr, s: math.nan if lr == top and s == 0 else lr * 100  # lower rate, lower loss; top diverged once
    assert best_lr_paper(grid, rows(floor_acc, loss2)) == low
    assert best_lr_paper(grid, rows(lambda lr, s: FLOOR_ACC + lr, loss2)) == top  # informative: by accuracy


def test_the_traces_start_reads_both_teachers_worked_solutions_and_has_its_own_key():
    preset = load_preset("small")
    block = load_ablations(preset)
    problems = generate_split(["math", "code"], [1, 2, 3], 20, "train", 0)
    answers = D.start_corpus(problems, "stepwise", 0, "answers")
    traces = D.start_corpus(problems, "stepwise", 0, "traces")
    from falcon_h1r.tasks import teacher_records

    mixed = teacher_records(problems, "mixed", 0)
    assert traces == [f"{r['question']}\n{r['reasoning']}\n{r['final']}" for r in mixed]  # a worked solution each
    assert answers == [f"{r['question']}\n{r['final']}" for r in teacher_records(problems, "stepwise", 0)]
    assert all(len(t) > len(a) for t, a in zip(traces, answers))
    styles = {r["style"] for r in teacher_records(problems, "mixed", 0)}
    assert styles == {"stepwise", "terse"}  # both teachers' methods, neither favoured
    from falcon_h1r.sections.sft_ablations import load_trainer

    trainer = load_trainer(preset)
    as_traces = replace(block, start_corpus="traces")
    as_answers = replace(block, start_corpus="answers")
    assert D.start_key(preset, as_traces, trainer) != D.start_key(preset, as_answers, trainer)
    assert block.start_corpus == "chat" and load_ablations(load_preset("tiny")).start_corpus == "answers"
    as_chat = replace(block, start_corpus="chat")
    assert len({D.start_key(preset, b, trainer) for b in (as_traces, as_answers, as_chat)}) == 3
    info = {"kind": D.START_KINDS["traces"], "steps": 400, "batch_size": 64, "tokens": 11_000_000}
    assert D.describe_start(info).startswith("trace_pretrain: 400 steps x 64 question+worked-solution")
    chat = {"kind": D.START_KINDS["chat"], "steps": 800, "batch_size": 64, "tokens": 20_000_000}
    assert D.describe_start(chat).startswith("trace_sft: 800 steps x 64 chat-format SFT")
    with pytest.raises(RecipeError, match="start_corpus.*answers, traces, chat"):
        load_ablations(load_preset("tiny", {"sft_ablations.start_corpus": "books"}))


def test_the_chat_start_trains_on_the_response_of_chat_format_worked_solutions(monkeypatch):
    """The chat start is an SFT stage: its examples are the chat turn of clean mixed-teacher traces (loss on the
    response only), not plain documents."""
    from falcon_h1r.sections.common import get_tokenizer
    from falcon_h1r.sections.sft_ablations import load_trainer

    preset = load_preset("tiny", {"sft_ablations.start_corpus": "chat", "sft_ablations.start_steps": 2,
                                  "sft_ablations.start_batch_size": 4})
    block, tok = load_ablations(preset), get_tokenizer(preset)
    problems = generate_split(["math"], [1, 2], 6, "train", 0)
    seen, real_train = {}, D.train_sft

    def fake_train(model, examples, cfg, **kw):
        seen.update(examples=examples, steps=cfg.steps, desc=kw["desc"])
        return real_train(model, examples[:4], cfg, **{**kw, "progress": False})

    monkeypatch.setattr(D, "train_sft", fake_train)
    _, info = D.train_start(preset, block, load_trainer(preset), tok, problems, progress=False)
    assert info["kind"] == "trace_sft" and seen["steps"] == 2 and "trace_sft" in seen["desc"]
    ex = seen["examples"][0]
    assert 0 < sum(ex.loss_mask) < len(ex.loss_mask)  # the prompt is not trained on
    assert "<think>" in tok.decode(ex.input_ids)


def test_the_probe_verdict_names_the_floor_and_the_ceiling():
    from falcon_h1r.sections.sft_ablations import probe_verdict

    assert probe_verdict(0.011).startswith("floor") and probe_verdict(0.99).startswith("ceiling")
    assert probe_verdict(0.3) == "ok"


def test_small_runs_five_seeds_on_the_lr_and_normalization_ends_and_three_elsewhere():
    grids = {g.name: g for g in load_grids(load_preset("small"), PAPER_SFT_LR)}
    lr = grids["learning_rate"]
    assert [a.lr_paper for a in lr.arms] == [1.28e-4, 2.56e-4, 5.12e-4, 1.024e-3]  # 128e-6 ... the paper's 1024e-6
    assert lr.seeds["lr 128e-6"] == lr.seeds["lr 1024e-6"] == [0, 1, 2, 3, 4] and lr.seeds["lr 512e-6"] == [0, 1, 2]
    assert all(len(s) == 5 for s in grids["normalization"].seeds.values())
    assert all(len(s) == 3 for g in ("rollouts", "teachers", "mixture") for s in grids[g].seeds.values())
    assert {a.rollouts for a in grids["rollouts"].arms} == {4, 8, 12}
    assert {a.ranks for a in grids["normalization"].arms} == {4}


def test_mup_carries_the_papers_rate_to_our_width():
    block = SFTAblations()
    assert block.lr_for(1.024e-3, 256) == pytest.approx(1.024e-3 * 12)  # Falcon-H1-7B width 3072 / 256
    assert block.lr_for(1.28e-4, 64) == pytest.approx(1.28e-4 * 48)


def test_grid_runs_are_distinct_and_shards_partition_them(tmp_path):
    """--workers: the shared reference arm is one run, and the i/n shards cover every run exactly once."""
    grids = load_grids(load_preset("small"), PAPER_SFT_LR)
    runs = grid_runs(grids)
    assert len(runs) == len(set(runs)) < sum(len(g.runs()) for g in grids)  # the reference arm recurs
    shards = [set(runs[i::3]) for i in range(3)]
    assert set().union(*shards) == set(runs) and sum(map(len, shards)) == len(runs)
    work = tmp_path / "rows.jsonl"
    for k, (key, seed) in enumerate(runs[:3]):
        append_row(work, {"arm_key": key, "seed": seed, "run_key": "r", "acc": k / 10})
    assert set(load_rows(work, "r")) == set(runs[:3]) and load_rows(work, "other") == {}


# ============================================================================== the teacher and the pools
def _problems(levels=(1, 6), n=24):
    return generate_split(["math", "code", "science"], list(levels), n, "sft_ablation", 0)


def test_the_ablation_teacher_slips_more_on_harder_levels_and_its_slips_are_wrong():
    block = SFTAblations(teacher_slip_by_level=[0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.7, 0.75, 0.8, 0.85])
    probs = _problems()
    pool = D.teacher_pool(probs, "stepwise", 8, block, seed=0)
    clean = {(r["id"], r["reasoning"]) for r in D.teacher_pool(probs, "stepwise", 1, SFTAblations(
        teacher_slip_by_level=[0.0] * 10), seed=0)}
    slipped = [r for r in pool if (r["id"], r["reasoning"]) not in clean]
    verdicts = grade(slipped, [trace_response(r) for r in slipped], code_workers=2)
    assert slipped and not any(v.correct for v in verdicts)  # every slip ends in a wrong answer
    rate = {lv: statistics.fmean((r["id"], r["reasoning"]) not in clean for r in pool if r["difficulty"] == lv)
            for lv in (1, 6)}
    assert rate[1] < 0.15 < 0.4 < rate[6]


def test_a_problems_first_n_rollouts_do_not_depend_on_how_many_are_drawn():
    block, probs = SFTAblations(), _problems(n=6)
    twelve = D.teacher_pool(probs, "mixed", 12, block, seed=0)
    four = D.teacher_pool(probs, "mixed", 4, block, seed=0)
    assert [(r["id"], r["final"], r["style"]) for r in twelve if r["rollout"] < 4] == \
        [(r["id"], r["final"], r["style"]) for r in four]
    assert {r["style"] for r in twelve} == {"stepwise", "terse"}


def test_the_pool_key_holds_every_field_that_shapes_the_pool():
    preset, block, crec = load_preset("tiny"), SFTAblations(), CurationRecipe()
    kw = dict(teacher="stepwise", incorrect=False, rollouts=12, held_out=["q"])
    base = D.pool_key(preset, block, crec, **kw)
    changed = [D.pool_key(preset, replace(block, problems_per_domain=7), crec, **kw),
               D.pool_key(preset, replace(block, teacher_slip_by_level=[0.5] * 10), crec, **kw),
               D.pool_key(preset, replace(block, levels=[1]), crec, **kw),
               D.pool_key(preset, block, replace(crec, hard_pass_rate_max=0.1), **kw),
               D.pool_key(load_preset("tiny", {"seed": 3}), block, crec, **kw),
               D.pool_key(preset, block, crec, **{**kw, "incorrect": True}),
               D.pool_key(preset, block, crec, **{**kw, "held_out": ["other"]})]
    assert base not in changed and len(set(changed)) == len(changed)
    assert D.pool_key(preset, replace(block, steps=1, seeds=[5]), crec, **kw) == base  # training sizes do not


def test_incorrect_traces_are_kept_only_for_hard_problems_and_expand_to_their_rollouts():
    from falcon_h1r.tokenizer import train_tokenizer

    block = SFTAblations(teacher_slip_by_level=[0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.7, 0.75, 0.8, 0.85])
    probs = [p for p in _problems(n=12) if p["domain"] != "code"]  # no sandbox needed
    pool = D.teacher_pool(probs, "stepwise", 12, block, seed=0)
    tok = train_tokenizer([r["question"] + r["reasoning"] + r["final"] for r in pool[:200]], 300)
    crec = CurationRecipe(max_trace_tokens=4096)
    rates = D.problem_pass_rates(pool, crec)
    assert statistics.fmean(v for p, v in rates.items() if p in {q["id"] for q in probs if q["difficulty"] == 6}) < \
        statistics.fmean(v for p, v in rates.items() if p in {q["id"] for q in probs if q["difficulty"] == 1})
    kept = D.curate_pool(pool, tok, crec, incorrect=True, pass_rates=rates, eval_questions=[], levels=[1, 6])
    correct = D.curate_pool(pool, tok, crec, incorrect=False, pass_rates=rates, eval_questions=[], levels=[1, 6])
    wrong = [r for r in D.pool_records(kept, 12) if not r["correct"]]
    assert wrong and all(rates[r["id"]] <= crec.hard_pass_rate_max for r in wrong)
    assert all(r["correct"] for r in D.pool_records(correct, 12))
    four = D.pool_records(correct, 4)
    assert {r["rollout"] for r in four} <= {0, 1, 2, 3} and len(four) == sum(
        1 for _, r, i in correct["rollouts"] if i >= 0 and r < 4)
    # each rollout of a problem is one record, identical correct rollouts included
    assert len(D.pool_records(correct, 12)) == sum(round(rates[p["id"]] * 12) for p in probs)


# ============================================================================== statistics of every axis
def _row(grid, arm, seed, outcomes, levels, domains, **extra):
    return {"grid": grid, "arm": arm, "arm_key": extra.pop("arm_key", f"{grid}/{arm}"), "seed": seed,
            "outcomes": list(outcomes), "outcome_ids": [f"p{i}" for i in range(len(outcomes))],
            "outcome_levels": list(levels), "outcome_domains": list(domains), "entropy": extra.pop("entropy", 0.5),
            "lr": 0.01, "data_kept": 100, "data_epochs": 1.0, "train_tokens": 1000, "data_kept_incorrect": 0,
            "data_distinct_correct_traces": 50, **extra,
            **{f"acc_{d}": float(np.mean([o for o, dd in zip(outcomes, domains) if dd == d])) for d in set(domains)}}


def _fake_rows(seeds=(0, 1, 2, 3, 4), n=60, seed=0):
    """Rows for every arm of the tiny grids with known effects: arm accuracies set per grid below."""
    rng = random.Random(seed)
    levels = [1 + (i % 2) for i in range(n)]
    domains = [("math", "code", "science")[i % 3] for i in range(n)]
    p = {"lr 128e-6": 0.2, "lr 1024e-6": 0.5, "n=4": 0.5, "n=12": 0.6, "correct only": 0.5,
         "with incorrect (hard)": 0.5, "single (stepwise)": 0.5, "single (terse)": 0.4, "mixed": 0.3,
         "weighting on": 0.5, "weighting off": 0.45, "math-heavy": 0.5, "balanced": 0.4, "code-heavy": 0.3,
         "math only": 0.3, "code only": 0.3, "balanced-norm": 0.6, "per-rank": 0.4}
    rows, ref, shared = [], reference_arm().key(), {}
    for g in load_grids(load_preset("tiny"), PAPER_SFT_LR):
        for a in g.arms:
            for s in seeds:
                prob = p["balanced-norm" if (g.name, a.name) == ("normalization", "balanced") else a.name]
                outs = [int(rng.random() < prob) for _ in range(n)]
                if a.key() == ref:  # one run, whichever grids show it
                    outs = shared.setdefault(s, outs)
                curve = [{"step": st, "acc": prob, "outcomes": [int(rng.random() < (prob if st else 0.0))
                                                                 for _ in range(n)]} for st in (0, 6, 12)]
                rows.append(_row(g.name, a.name, s, outs, levels, domains, arm_key=a.key() if a.key() == ref else
                                 f"{g.name}/{a.name}", lr_paper=a.lr_paper, entropy=1.0 if a.name == "mixed" else 0.6,
                                 curve=curve if a.curve else [],
                                 rank_tokens_max_over_min=[4.0, 5.0] if g.name == "normalization" else [],
                                 data_kept_incorrect=30 if a.incorrect else 0))
    return rows


def test_every_axis_estimate_is_the_protocols_paired_difference_and_names_its_claim_key():
    rows = _fake_rows()
    grids = load_grids(load_preset("tiny", {"sft_ablations.grid_seeds": {g: [0, 1, 2, 3, 4] for g in GRIDS}}),
                       PAPER_SFT_LR)
    block = SFTAblations(hard_levels=[2], easy_levels=[1])
    start = {"acc": 0.0, "acc_code": 0.1, "acc_math": 0.0, "outcomes": [0] * 60,
             "outcome_ids": rows[0]["outcome_ids"]}
    est = axis_estimates(rows, grids, block, start)

    def mat(grid, arm, keep=None):
        rs = sorted((r for r in rows if r["grid"] == grid and r["arm"] == arm), key=lambda r: r["seed"])
        return np.array([[o for o, lv in zip(r["outcomes"], r["outcome_levels"]) if keep is None or keep(lv)]
                         for r in rs], dtype=float)

    assert est["larger_minus_smaller_lr_acc"].mean == pytest.approx(
        paired_difference(mat("learning_rate", "lr 1024e-6"), mat("learning_rate", "lr 128e-6")).mean)
    assert est["larger_minus_smaller_lr_acc"].mean > 0.15 and est["larger_minus_smaller_lr_acc"].excludes_zero()
    hard = est["with_minus_without_incorrect_acc_hard"]
    assert hard.n_problems == 30 and hard.mean == pytest.approx(
        (mat("incorrect", "with incorrect (hard)", lambda lv: lv == 2)
         - mat("incorrect", "correct only", lambda lv: lv == 2)).mean())
    singles = (mat("teachers", "single (stepwise)") + mat("teachers", "single (terse)")) / 2
    assert est["single_minus_multi_teacher_acc"].mean == pytest.approx((singles - mat("teachers", "mixed")).mean())
    assert est["multi_minus_single_teacher_entropy"].mean == pytest.approx(0.4)
    assert est["multi_minus_single_teacher_entropy"].n_problems is None  # one entropy per seed
    to_code = [r["acc_code"] - 0.1 for r in rows if r["arm"] == "math only"]
    to_math = [r["acc_math"] - 0.0 for r in rows if r["arm"] == "code only"]
    assert est["math_to_code_minus_code_to_math_transfer"].mean == pytest.approx(np.mean(to_code) - np.mean(to_math))
    gain = est["n12_minus_n4_gain_hard_minus_easy"]
    d = mat("rollouts", "n=12") - mat("rollouts", "n=4")
    lv = np.array(rows[0]["outcome_levels"])
    assert gain.mean == pytest.approx((d[:, lv == 2].mean(1) - d[:, lv == 1].mean(1)).mean())
    curve = est["balanced_minus_per_rank_curve_acc"]
    assert curve.n_problems == 120 and curve.mean > 0.1  # two steps after the start x 60 problems
    assert est["ablation_reference_acc"].mean == pytest.approx(mat("rollouts", "n=4").mean())
    # the start answered nothing here: the reference arm minus the start is the arm's accuracy, paired by problem
    assert est["ablation_reference_minus_start_acc"].mean == pytest.approx(mat("rollouts", "n=4").mean())
    assert est["ablation_reference_minus_start_acc"].n_problems == 60


def test_the_summary_holds_every_key_the_02_claims_read_and_the_protocols_companions():
    rows = _fake_rows(seeds=(0, 1, 2))
    preset = load_preset("tiny", {"sft_ablations.seeds": [0, 1, 2]})
    grids, block = load_grids(preset, PAPER_SFT_LR), load_ablations(preset)
    start = {"acc": 0.0, "acc_code": 0.2, "acc_math": 0.2, "outcomes": [0] * 60, "outcome_ids": rows[0]["outcome_ids"]}
    summary, est = ablation_summary(rows, grids, block, start, "qa_pretrain: test")
    needed = set()
    for c in claims.load_claims():
        if c.section == "02_sft" and c.topic == "sft" and "liger" not in c.id:
            for keys in c.needed_keys().values():
                needed |= keys
    assert needed - set(summary) == set()
    for k in est:
        assert {f"{k}_ci95", f"{k}_informative", f"{k}_n_seeds"} <= set(summary)
    assert summary["ablation_seeds"] == 3 and summary["ablation_start"] == "qa_pretrain: test"
    assert summary["ablation_reference_lr_paper"] == PAPER_SFT_LR
    assert summary["dp_tokens_per_rank_max_over_min"] == pytest.approx(4.5)  # the median step of [4, 5, 4, 5, ...]
    assert summary["rollouts_distinct_correct_traces_n12_over_n4"] == pytest.approx(1.0)
    assert summary["ablation_incorrect_traces_kept"] == 30
    # the scoreboard reads them: the mechanism precondition fails (no new traces), the rest has a status
    rows_ = claims.evaluate(claims.load_claims(), {"02_sft": summary})
    by = {r["id"]: r for r in rows_}
    assert by["sft_more_rollouts_better"]["status"] == "not_testable"
    assert by["sft_larger_lr_better"]["status"] in ("reproduced", "partly")
    beside = findings_table(__import__("pandas").DataFrame(rows_), grids)
    assert set(beside["axis"]) == set(GRIDS) and beside["status"].notna().all()
    # a reference arm far below its start (the arms undo it): the same claims are not testable
    undone, _ = ablation_summary(rows, grids, block, {**start, "acc": 1.0, "outcomes": [1] * 60}, "chat: test")
    assert undone["ablation_reference_minus_start_acc"] < -0.05
    by = {r["id"]: r for r in claims.evaluate(claims.load_claims(), {"02_sft": undone})}
    assert by["sft_larger_lr_better"]["status"] == "not_testable"
    # single-domain arms that keep a small share of the start's other-domain accuracy measure forgetting: the
    # transfer claim is not testable, the other mixture claims keep their status
    off = np.mean([r["acc_code"] for r in rows if r["grid"] == "mixture" and r["arm"] == "math only"])
    assert summary["single_domain_offtarget_retention_min"] == pytest.approx(
        min(off, np.mean([r["acc_math"] for r in rows if r["grid"] == "mixture" and r["arm"] == "code only"])) / 0.2)
    by = {r["id"]: r for r in claims.evaluate(claims.load_claims(), {"02_sft": summary})}
    assert by["sft_math_transfers_outward"]["status"] != "not_testable"
    erased, _ = ablation_summary(rows, grids, block, {**start, "acc_code": 1.0, "acc_math": 1.0}, "chat: test")
    assert erased["single_domain_offtarget_retention_min"] < 0.5
    by = {r["id"]: r for r in claims.evaluate(claims.load_claims(), {"02_sft": erased})}
    assert by["sft_math_transfers_outward"]["status"] == "not_testable"
    assert "forgetting" in by["sft_math_transfers_outward"]["reason"]
    assert by["sft_math_led_mix_beats_balanced"]["status"] != "not_testable"


def test_every_axis_figure_draws_and_the_start_is_drawn_per_group_of_problems():
    """Each grid's figure renders with intervals; in the grouped panels the common start is the start's own
    accuracy on that group of problems (e.g. its easy-level accuracy over the easy bars), not its overall one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from falcon_h1r.sections.sft_figures import axis_figure, start_by_group
    from falcon_h1r.sections.sft_findings import arm_table, level_groups

    rows = _fake_rows(seeds=(0, 1, 2))
    preset = load_preset("tiny", {"sft_ablations.seeds": [0, 1, 2]})
    grids, block = load_grids(preset, PAPER_SFT_LR), load_ablations(preset)
    levels, domains = rows[0]["outcome_levels"], rows[0]["outcome_domains"]
    outcomes = [1 if lv == 1 else 0 for lv in levels]  # the start solves every level-1 problem, no level-2 one
    start = {"acc": 0.5, "outcomes": outcomes, "outcome_levels": levels, "outcome_domains": domains,
             "outcome_ids": rows[0]["outcome_ids"]}
    by_level = start_by_group(start, level_groups(block))
    assert by_level and all(v in (0.0, 1.0) for v in by_level.values()) and len(set(by_level.values())) == 2
    assert start_by_group(start, {"math": lambda lv, d: d == "math"}) == {
        "math": float(np.mean([o for o, d in zip(outcomes, domains) if d == "math"]))}
    arms = arm_table(rows, grids)
    for g in grids:
        fig = axis_figure(g, arms, rows, block, start, f"test {g.name}")
        if g.name in ("rollouts", "incorrect", "weighting", "learning_rate"):
            (segs,) = [c for c in fig.axes[1].collections if c.get_label() == "common start"]
            assert sorted(float(seg[0][1]) for seg in segs.get_segments()) == sorted(by_level.values())
        plt.close(fig)


def test_curves_and_rank_skew():
    rows = _fake_rows(seeds=(0, 1, 2))
    c = curves(rows)
    assert list(c[c.arm == "balanced"]["step"]) == [0, 6, 12]
    diff = c[c.arm == "balanced minus per-rank"]
    assert list(diff["step"]) == [6, 12] and (diff["acc_low"] <= diff["acc"]).all()
    assert rank_skew(rows) == {"mean": 4.5, "p10": 4.0, "median": 4.5, "steps": 12}
    assert rank_skew([r for r in rows if r["grid"] != "normalization"]) is None


def test_the_cli_names_bad_input_and_exits_2(capsys):
    from falcon_h1r.sections.sft_ablations import main

    assert main(["--preset", "tiny", "--override", "sft_ablations.steps=0"]) == 2
    assert "sft_ablations.steps: must be >= 1" in capsys.readouterr().err
    for argv in (["--shard", "3/2"], ["--workers", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["--preset", "tiny", *argv])
        assert e.value.code == 2
    assert main(["--preset", "tiny", "--override", "steps"]) == 2  # the shared parser's one line (config.parse_overrides)
    assert "--override 'steps': expected KEY=VALUE" in capsys.readouterr().err


def test_computing_with_committed_bases_copies_their_records_and_names_a_missing_one(tmp_path, monkeypatch):
    """sft_ablations.bases: committed: a computing run of notebook 02 takes the bases' records from the committed
    results (the grid never uses the bases), writes them into its own folder unchanged, and trains nothing; a
    missing record is one clear error naming the file and the other choice."""
    import json

    from falcon_h1r.results import SectionWriter
    from falcon_h1r.sections import sft as S

    cfg = load_preset("tiny", {"sft_ablations.bases": "committed"})
    committed = tmp_path / "committed" / "tiny" / S.SECTION
    committed.mkdir(parents=True)
    monkeypatch.setattr(S, "RESULTS_ROOT", tmp_path / "committed")
    monkeypatch.setattr(S, "get_base_models", lambda *a, **k: pytest.fail("a base was trained"))
    writer = SectionWriter("tiny", S.SECTION, params={}, seed=0, root=tmp_path / "out", mode="computed")
    sec = S.Section(cfg, S.load_recipe(cfg), S.load_ablations(cfg), "compute", writer)
    with pytest.raises(FileNotFoundError, match="base_training.json.*sft_ablations.bases: train"):
        S.base_training(sec)
    record = {"bases": [{"seed": 0, "greedy_acc_after": 0.25}, {"seed": 1, "greedy_acc_after": 0.5}]}
    checks = {"packing": {"max_abs_diff_packed_vs_alone": 0.0}}
    (committed / "base_training.json").write_text(json.dumps(record))
    (committed / "trainer_checks.json").write_text(json.dumps(checks))
    bases, infos = S.base_training(sec)
    assert bases == [] and infos == record["bases"]
    assert S.trainer_checks(sec, None) == checks
    assert json.loads((writer.dir / "base_training.json").read_text()) == record
    assert json.loads((writer.dir / "trainer_checks.json").read_text()) == checks
    with pytest.raises(RecipeError, match="sft_ablations.bases: 'cached' not accepted"):
        load_preset("tiny", {"sft_ablations.bases": "cached"}).section("sft_ablations", SFTAblations)


def test_sweep_report_reads_a_partial_work_folder_and_the_floor_record_becomes_the_notebooks_note(tmp_path):
    """--report on a work folder (no model, no GPU): per arm pass@1, final loss, diverged runs and the loss shock of
    the first steps, the evaluation of the start the rows came from (not an earlier start's), and the verdict; the
    committed small records are that output, and notebook 02's note is generated from their numbers."""
    import json
    import math
    from pathlib import Path

    from falcon_h1r.sections.sft import TESTBED_RECORDS, floor_probe_note
    from falcon_h1r.sections.sft_ablations import main, sweep_report

    for seed, (acc, loss) in enumerate([(0.0, 0.8), (0.02, math.nan), (0.3, 0.5)]):
        append_row(tmp_path / "ablation_rows.jsonl", {"arm_key": "k1" if seed < 2 else "k2", "seed": seed,
                                                      "run_key": "r", "name": "a" if seed < 2 else "b",
                                                      "lr_paper": 1e-4, "lr": 1e-3, "acc": acc,
                                                      "train_loss_final": loss, "entropy": 1.0,
                                                      "loss_curve": {"step": list(range(10)),
                                                                     "loss": [1.0, 1.5, 3.0] + [0.9] * 7},
                                                      "mean_response_tokens": 100, "start_key": "s"})
    (tmp_path / "start_eval-r.json").write_text(json.dumps({"acc": 0.0, "mean_response_tokens": 9}))
    (tmp_path / "start_eval-zzz-an-earlier-start.json").write_text(json.dumps({"acc": 0.9}))
    rep = sweep_report(tmp_path)
    a = next(t for t in rep["arms"] if t["arm"] == "a")
    assert rep["runs"] == 3 and rep["diverged_runs"] == 1 and a["diverged_runs"] == 1
    assert a["acc_mean"] == 0.01 and a["train_loss_final_mean"] == 0.8 and rep["acc_mean_max_arm"] == "b"
    assert a["loss_shock_mean"] == 1.5  # max of the first 20 % of steps (1.0, 1.5) over the first loss
    assert rep["verdict"] == "ok" and rep["start_acc"] == 0.0
    (tmp_path / "start_eval-r.json").write_text(json.dumps({"acc": 0.5}))
    assert sweep_report(tmp_path)["verdict"].startswith("regress: the best arm (b) scores 0.300, below the start's 0.500")
    assert main(["--report", str(tmp_path / "nothing")]) == 2
    folder = Path(__file__).resolve().parent.parent / "results" / "small" / "02_sft"
    rec = json.loads((folder / "ablation_floor_probe.json").read_text())
    assert rec["verdict"].startswith("floor") and rec["acc_mean_max"] < 0.05 and rec["runs"] == 48
    note = floor_probe_note(rec)
    assert f"{rec['acc_mean_max']:.3f}" in note and "4a5156b" in note and f"{rec['diverged_runs']} runs diverged" in note
    probe = json.loads((folder / "ablation_traces_probe.json").read_text())
    assert probe["verdict"].startswith("floor") and f"{probe['reference_arm_acc']:.3f}" in floor_probe_note(probe)
    chat = json.loads((folder / "ablation_chat_annealed_probe.json").read_text())
    assert chat["verdict"].startswith("regress") and chat["acc_mean_max"] < chat["start_acc"]
    assert "rate annealed to 0" in floor_probe_note(chat) and "loss_shock_mean" in floor_probe_note(chat)
    assert all((folder / n).exists() for n in TESTBED_RECORDS)


def test_the_loss_shock_and_the_probe_verdicts():
    from falcon_h1r.sections.sft_ablations import loss_shock, probe_verdict

    assert loss_shock([0.1] * 10) == 1.0
    assert loss_shock([0.1, 0.3, 0.2] + [0.05] * 7) == 3.0
    assert loss_shock([]) is None and loss_shock([math.nan] * 4) is None
    assert probe_verdict(0.2, start_acc=0.22) == "ok" and probe_verdict(0.2, start_acc=0.3).startswith("regress")
    assert probe_verdict(0.01, start_acc=0.3).startswith("floor")


def test_the_gpu_grid_script_names_bad_usage_and_exits_2(tmp_path):
    """scripts/gpu_sft_grid.sh (the grid in device-call pieces): a missing or unknown preset, an argument that is
    not KEY=VALUE and an override the preset refuses each stop it with one line and exit 2, before any work."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(root), "OUT": str(tmp_path / "out")}
    cases = {(): "usage", ("huge",): "tiny, small or paper", ("tiny", "steps"): "is not KEY=VALUE",
             ("tiny", "sft_ablations.start_corpus=books"): "not valid"}
    for args, message in cases.items():
        proc = subprocess.run(["bash", str(root / "scripts" / "gpu_sft_grid.sh"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-500:])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_writes_the_notebooks_records_from_a_finished_work_folder_and_nothing_before(tmp_path):
    """sft_ablation_export: the GPU piece's work folder and start become notebook 02's two records on a
    CPU, as the notebook's compute path writes them; an absent start, an absent start evaluation or a missing run
    each stop it with a message and nothing written (the start is never retrained)."""
    import json

    from falcon_h1r.sections.common import get_tokenizer, task_sets
    from falcon_h1r.sections.sft_ablation_export import GridIncomplete, export_grid, main
    from falcon_h1r.sections.sft_ablations import (ablation_setup, load_trainer, resolve_grids)

    over = {"sft_ablations.start_steps": 2, "sft_ablations.start_batch_size": 4}
    preset = load_preset("tiny", over)
    out = tmp_path / "tiny" / "02_sft"
    with pytest.raises(RecipeError, match="common start sft-start-.* is not in"):
        export_grid("tiny", over, root=tmp_path)
    assert not (out / "ablation_rows.jsonl").exists()
    sets = task_sets(preset)
    D.get_start(preset, load_ablations(preset), load_trainer(preset), get_tokenizer(preset, sets, root=tmp_path),
                sets["train"], root=tmp_path, progress=False)
    ctx = ablation_setup(preset, out / "_work", root=tmp_path, progress=False)
    with pytest.raises(RecipeError, match="no start_eval-"):
        export_grid("tiny", over, root=tmp_path)
    (out / "_work").mkdir(parents=True, exist_ok=True)
    (out / "_work" / f"start_eval-{ctx.run_key}.json").write_text(json.dumps({"acc": 0.1, "curve": {"step": 0}}))

    def add_rows(grids):
        for g in grids:
            for a, s in g.runs():
                append_row(out / "_work" / "ablation_rows.jsonl",
                           {"arm_key": a.key(), "seed": s, "run_key": ctx.run_key, "acc": 0.1 + a.lr_paper,
                            "train_loss_final": 0.5, "arm": a.name, "computed_on": {"commit": "abc1234ef",
                                                                                   "device": "NVIDIA H200"}})

    lr_grids, _ = resolve_grids(preset, {})
    add_rows(lr_grids)
    with pytest.raises(GridIncomplete, match="run the grid again"):
        export_grid("tiny", over, root=tmp_path)
    assert main(["--preset", "tiny", "--override", "sft_ablations.start_corpus=books"]) == 2
    import falcon_h1r.sections.sft_ablation_export as E

    real, E.export_grid = E.export_grid, lambda *a, **k: (_ for _ in ()).throw(GridIncomplete("3 of 36 runs"))
    try:
        assert main(["--preset", "tiny"]) == 3
    finally:
        E.export_grid = real
    assert not (out / "ablation_rows.jsonl").exists()
    from falcon_h1r.sections.sft_ablations import load_rows

    grids, ref = resolve_grids(preset, load_rows(out / "_work" / "ablation_rows.jsonl", ctx.run_key))
    # an unfinished grid (the device time ran out): --partial writes what finished and names what did not
    add_rows([g for g in grids if g.name not in ("learning_rate", "normalization")])
    with pytest.raises(GridIncomplete):
        export_grid("tiny", over, root=tmp_path)
    assert export_grid("tiny", over, root=tmp_path, partial=True)["missing_runs"] > 0
    seen = {}
    real, E.export_grid = E.export_grid, lambda *a, **k: seen.update(k) or {}
    try:
        assert main(["--preset", "tiny", "--partial"]) == 0 and seen == {"partial": True}
    finally:
        E.export_grid = real
    start = json.loads((out / "ablation_start.json").read_text())
    norm = next(g for g in grids if g.name == "normalization")
    shared = {(a.key(), s) for g in grids if g.name != "normalization" for a, s in g.runs()}
    only_norm = [(a, s) for a, s in norm.runs() if (a.key(), s) not in shared]
    assert start["grid_runs"]["missing"] == [{"grids": ["normalization"], "arm": a.name, "seed": s}
                                             for a, s in only_norm]
    assert start["grid_runs"]["done"] + len(only_norm) == start["grid_runs"]["needed"]
    from falcon_h1r.sections.sft import unfinished_grid_note

    note = unfinished_grid_note(start, "tiny")
    assert f"{start['grid_runs']['done']} of its {start['grid_runs']['needed']} runs" in note
    assert "normalization: per-rank" in note and "gpu_sft_grid.sh tiny" in note
    add_rows([norm])
    rec = export_grid("tiny", over, root=tmp_path)
    rows = [json.loads(x) for x in (out / "ablation_rows.jsonl").read_text().splitlines()]
    assert rec["rows"] == len(rows) == sum(len(list(g.runs())) for g in grids) and rec["reference_lr_paper"] == ref
    assert {r["grid"] for r in rows} == {g.name for g in grids} and rec["computed_on"] == ["abc1234 on NVIDIA H200"]
    start = json.loads((out / "ablation_start.json").read_text())
    assert start["eval"]["acc"] == 0.1 and start["steps"] == 2 and "recipe" not in start
    assert "grid_runs" not in start and unfinished_grid_note(start, "tiny") is None and rec["missing_runs"] == 0
    # the probe that gated the grid travels with the start, and the notebook says its verdict from its numbers
    from falcon_h1r.sections.sft import probe_note

    assert "probe" not in start and probe_note(start) is None
    key = json.loads((out / "ablation_start.json").read_text())["key"]
    (out / "_work" / f"probe-{key}.json").write_text(json.dumps(
        {"lr": 0.0015, "lr_paper": 128e-6, "start_acc": 0.2333, "acc": 0.2481, "loss_shock": 1.494, "verdict": "ok"}))
    export_grid("tiny", over, root=tmp_path)
    start = json.loads((out / "ablation_start.json").read_text())
    assert start["probe"]["verdict"] == "ok"
    assert probe_note(start) == ("Before the grid, the probe trained the reference arm at the gentlest rate (ours "
                                 "0.0015, 128e-6 in the paper's convention) from this start: pass@1 0.233 -> 0.248, "
                                 "its training loss x1.5 in its first steps (`loss_shock`); verdict: ok.")
