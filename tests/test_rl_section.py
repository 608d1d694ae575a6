"""Notebook 03's section: the experiment recipe, the RL pool builder (curation's rules), held-out grading,
curricula that stop on a time budget and resume, the sandbox attacks through the code reward in a training step,
the strategy comparison's regimes and savings, and the report's statistics over bases."""

import math

import numpy as np
import pandas as pd
import pytest

from falcon_h1r.config import ModelConfig, RecipeError, load_preset
from falcon_h1r.grpo import RLRecipe
from falcon_h1r.sections import rl_report as R
from falcon_h1r.sections.rl import (PoolBuilder, RLExperimentRecipe, heldout_report, load_recipes, per_problem_rates,
                                    strategy_recipe)
from falcon_h1r.sections.rl_strategies import regime_pools, saving_estimate, strategy_estimates

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPE = RLRecipe(group_size=3, batch_prompts=2, gen_prompts_per_call=2, max_new_tokens=8, lr=1e-3, warmup_steps=2,
                  cache_size=4, cache_max_age=2, save_every=2, micro_batch_seqs=4, mini_batches=2)


@pytest.fixture(scope="module")
def setup():
    from falcon_h1r.models import build_model
    from falcon_h1r.sections.common import task_sets, tokenizer_corpus
    from falcon_h1r.tokenizer import train_tokenizer

    preset = load_preset("tiny", {"tasks.train_per_domain": 30, "tasks.test_per_domain": 6})
    sets = task_sets(preset)
    tok = train_tokenizer(tokenizer_corpus(sets, 0), 300)
    m = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    intermediate_size=64, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_state=8, mamba_chunk_size=8)
    model = build_model(m, tok.vocab_size, seed=1, pad_id=tok.pad_id, eos_id=tok.eos_id)
    return preset, sets, tok, model


def test_experiment_blocks_of_every_preset_parse_and_bad_values_are_named():
    for name in ("tiny", "small", "paper"):
        rl, exp = load_recipes(load_preset(name))
        assert isinstance(rl, RLRecipe) and "backfill" in exp.strategies_compared
        assert set(exp.curricula) == {"math_only", "code_only", "science_only", "math_then_code", "math_code_mixed"}
    small = load_preset("small")
    rl, exp = load_recipes(small)
    # the protocol at small: 3 bases (RL seed i from base i), >= 5 replay seeds, pieces of <= 10 minutes
    assert len(small.eval.base_seeds) >= 3 and exp.strategy_seeds >= 5 and exp.resumable and 0 < exp.budget_s <= 540
    # the measured batches line up: held-out rows and each domain's pass-rate rows are one engine batch
    assert 3 * exp.eval_problems_per_domain * exp.eval_samples == exp.measure_batch_rows
    assert exp.pool_per_domain * 8 % exp.measure_batch_rows == 0
    tiny = load_preset("tiny").section("rl_experiments", RLExperimentRecipe)
    assert (tiny.steps, tiny.eval_problems_per_domain, tiny.eval_samples, tiny.pool_per_domain) == (4, 20, 1, 12)
    with pytest.raises(RecipeError, match="curricula"):
        RLExperimentRecipe(curricula=["code_then_math"])
    with pytest.raises(RecipeError, match="rl_experiments.strategies_compared"):
        RLExperimentRecipe(strategies_compared=["oversample"])
    with pytest.raises(RecipeError, match="must include 'backfill'"):
        RLExperimentRecipe(strategies_compared=["reject", "duplicate"])
    with pytest.raises(RecipeError, match="rl_experiments.steps"):
        RLExperimentRecipe(steps=0)
    with pytest.raises(RecipeError, match="scarce_informative_frac"):
        RLExperimentRecipe(scarce_informative_frac=1.0)
    with pytest.raises(RecipeError, match="resumable"):
        RLExperimentRecipe(budget_s=60)
    # the experiment's knobs are no longer trainer knobs: the old place is named as unknown
    with pytest.raises(RecipeError, match="unknown key rl.curricula"):
        load_preset("tiny", {"rl.curricula": ["math_only"]}).section("rl", RLRecipe)
    assert strategy_recipe(RLRecipe(), "backfill_nocache").cache_size == 0
    assert strategy_recipe(RLRecipe(), "reject").strategy == "reject"


def test_resumable_state_is_keyed_by_what_shapes_it():
    from dataclasses import replace

    from falcon_h1r.sections.rl import measure_dir, work_dir

    preset = load_preset("small")
    rl, exp = load_recipes(preset)
    seeds = list(preset.eval.base_seeds)
    longer, faster = replace(exp, steps=exp.steps + 2), replace(rl, lr=rl.lr * 2)
    # the runs' state changes with the steps or the trainer; what was measured of the bases does not
    assert work_dir(preset, rl, longer, seeds) != work_dir(preset, rl, exp, seeds) != work_dir(preset, faster, exp, seeds)
    assert measure_dir(preset, rl, longer, seeds) == measure_dir(preset, faster, exp, seeds) == measure_dir(preset, rl, exp, seeds)
    assert measure_dir(preset, rl, replace(exp, pool_per_domain=300), seeds) != measure_dir(preset, rl, exp, seeds)
    # the time budget and the thread count shape nothing
    assert work_dir(preset, rl, replace(exp, budget_s=60.0, cpu_threads=4), seeds) == work_dir(preset, rl, exp, seeds)
    assert work_dir(preset, rl, exp, seeds[:1]) != work_dir(preset, rl, exp, seeds)


def test_pool_builder_applies_curations_rules_and_falls_back_below_one_batch(setup):
    preset, sets, tok, model = setup
    preset = load_preset("tiny", {"tasks.train_per_domain": 30, "tasks.test_per_domain": 6,
                                  "generation.max_new_tokens": 6, "curation.pass_rate_k": 2,
                                  "curation.majority_drop_at_least": 2})
    rl = RLRecipe(batch_prompts=2)
    b = PoolBuilder(preset, sets, rl, RLExperimentRecipe(pool_per_domain=5), seed=0)
    kept, rep = b.measure(model, tok, "science", tag="random init")
    test_q = {p["question"] for p in sets["test"]}
    assert all(p["domain"] == "science" and p["question"] not in test_q for p in kept)
    assert rep["k"] == 2 and rep["rated"] <= 5 and sum(rep[f"hist_{i}"] for i in range(3)) == rep["rated"]
    decided = sum(v for k, v in rep.items() if k.startswith("decision_"))
    assert decided == rep["rated"]
    # a random model solves nothing: the rules drop the problems whose rollouts all ran out of tokens or
    # repeat one wrong answer, and when less than one batch is left the stage uses every rated candidate
    assert rep["decision_keep_partial"] == 0 and rep["decision_drop_all_correct"] == 0
    assert rep["kept"] < rl.batch_prompts or rep["kept"] == rep["used"]
    if rep["kept"] < rl.batch_prompts:
        assert rep["fallback_all_rated"] and rep["used"] == rep["rated"] == len(kept)
    # every rated candidate's correct count is kept (the strategy comparison replays them), and the share of the
    # used problems strictly inside (0, k) is counted from them
    assert len(rep["rates"]) == rep["rated"] and rep["used_ids"] == [p["id"] for p in kept]
    inside = sum(1 for p in kept if 0 < rep["rates"][p["id"]] < rep["k"])
    assert rep["inside_used"] == inside and rep["inside_fraction"] == pytest.approx(inside / len(kept))


def test_heldout_grading_agrees_with_the_reward_pools_verdicts(setup):
    """The held-out evaluation (the evaluation harness) and the RL reward grade a response alike."""
    from falcon_h1r.inference import generate
    from falcon_h1r.rewards import RewardPool

    preset, sets, tok, model = setup
    problems = [p for d in ("math", "code", "science") for p in sets["test"] if p["domain"] == d][::3]
    gen = RECIPE.sampling(preset.generation)
    rep = heldout_report(model, tok, problems, gen, RECIPE, n_samples=2, seed=5)
    assert rep.n_problems == len(problems) and rep.n_samples == 2
    comps = generate(model, tok, [tok.prompt(p["question"]) for p in problems for _ in range(2)], gen, seed=5,
                     progress=False)
    results = RewardPool(RECIPE.rewards).score([p for p in problems for _ in range(2)],
                                               ["<think>\n" + c.text for c in comps])
    by_reward = {p["id"]: sum(r.correct for r in results[2 * i:2 * i + 2]) / 2 for i, p in enumerate(problems)}
    assert per_problem_rates(rep) == by_reward
    graded = heldout_report(model, tok, problems, gen, RECIPE, n_samples=2, seed=5,
                            grader=RewardPool(RECIPE.rewards).score)  # the section's parallel grader: same verdicts
    assert per_problem_rates(graded) == by_reward


def test_attacks_through_the_code_reward_in_a_training_step(setup):
    import copy

    from falcon_h1r.sections.rl_attacks import attack_training_step

    _, _, tok, base = setup
    names = ["fork_bomb_os_fork", "read_env_secrets", "write_outside", "socket_loopback", "shell_os_system"]
    out = attack_training_step(copy.deepcopy(base), tok, RECIPE, names=names, grace_s=0.5)
    assert out["attacks_tried"] == len(names) and out["escapes"] == 0
    for row in out["rows"]:
        assert row["reward"] <= 0 and row["expected_reason"], row
    assert all(out["shared_checks"].values()), out["shared_checks"]


class _SpreadRewards:
    """Skill-free rewards with spread (a random model's groups would all be equal), as a reward pool."""

    def score(self, problems, texts):
        from falcon_h1r.rewards import RewardResult

        return [RewardResult(float(len(t) % 3 == 0), len(t) % 3 == 0, True, "ok", "ok", p["domain"])
                for p, t in zip(problems, texts)]


def _context(setup, root):
    import torch

    from falcon_h1r.rewards import RewardPool
    from falcon_h1r.sections.rl import FrozenCopy, Measurer, RunContext

    preset, sets, tok, model = setup
    preset = load_preset("tiny", {"tasks.train_per_domain": 30, "tasks.test_per_domain": 6,
                                  "generation.max_new_tokens": 6, "curation.pass_rate_k": 2,
                                  "curation.majority_drop_at_least": 2})
    exp = RLExperimentRecipe(steps=2, pool_per_domain=4, trajectory_eval_every=1, resumable=True)
    builder = PoolBuilder(preset, sets, RECIPE, exp, seed=0)
    heldout = [p for d in ("math", "code", "science") for p in sets["test"] if p["domain"] == d][::4]
    measurer = Measurer(FrozenCopy(model, torch.float32, "cpu"), tok, heldout, preset.generation, RECIPE, 1,
                        RewardPool(RECIPE.rewards).score)
    pools = {"math": [p for p in sets["train"] if p["domain"] == "math"][:6]}
    ctx = RunContext(0, model, tok, pools, builder, measurer, _SpreadRewards(), RECIPE.sampling(preset.generation),
                     "cpu", run_root=root, progress=False)
    return ctx, exp


def _strip(run):
    drop = ("gen_s", "decode_s", "score_s", "train_s", "wall_s")
    return {"history": [{k: v for k, v in r.items() if k not in drop} for r in run["history"]],
            "evals": run["evals"], "stages": [{k: v for k, v in s.items() if k not in drop} for s in run["stages"]]}


def test_a_curriculum_stopped_by_its_budget_resumes_to_the_same_run_and_reuses_math_only(setup, tmp_path):
    from falcon_h1r.sections.common import StageIncomplete
    from falcon_h1r.sections.rl import run_curriculum

    ctx, exp = _context(setup, tmp_path / "full")
    full_math = run_curriculum("math_only", ctx, RECIPE, exp)
    # held-out every step (the math-only trajectory), the last one marked final; the stage-1 prefix is kept
    assert [e["global_step"] for e in full_math["evals"]] == [1, 2] and full_math["evals"][-1]["final"]
    assert (tmp_path / "full" / "prefixes" / "math.pt").exists()
    full = run_curriculum("math_then_code", ctx, RECIPE, exp)
    assert full["stages"][0]["reused_from"] == "math_only" and full["stages"][1]["domains"] == "code"
    assert full["stages"][1]["remeasured"] == "code" and full["history"][-1]["global_step"] == 4
    assert _strip(full)["history"][:2] == _strip(full_math)["history"]

    ctx2, _ = _context(setup, tmp_path / "pieces")
    ctx2.deadline = 0.0  # already past: the first stage stops after one step, its state saved
    with pytest.raises(StageIncomplete, match="run again"):
        run_curriculum("math_only", ctx2, RECIPE, exp)
    ctx3, _ = _context(setup, tmp_path / "pieces")  # a fresh process: nothing in memory
    assert _strip(run_curriculum("math_only", ctx3, RECIPE, exp)) == _strip(full_math)
    assert _strip(run_curriculum("math_then_code", ctx3, RECIPE, exp)) == _strip(full)


def test_regime_pools_plentiful_is_the_rules_pool_and_scarce_is_mostly_solved_or_failed():
    from falcon_h1r.rollout_buffer import informative_probability

    rates = {"a": 0, "b": 8, "c": 0, "d": 8, "e": 8, "f": 0, "g": 4, "h": 2, "i": 6, "j": 1}
    report = {"k": 8, "rates": rates, "used_ids": ["g", "h", "i", "j", "c"]}
    reg = regime_pools(report, group_size=8, scarce_informative_frac=0.25, seed=0)
    assert reg["plentiful"]["ids"] == ["g", "h", "i", "j", "c"]
    assert reg["plentiful"]["expected_informative_frac"] == pytest.approx(
        sum(informative_probability(rates[i] / 8, 8) for i in "ghijc") / 5)
    scarce = reg["scarce"]
    assert set("abcdef") <= set(scarce["ids"])  # every k/k and 0/k candidate
    partial = [i for i in scarce["ids"] if 0 < rates[i] < 8]
    # 6 extremes at 0 and partial ones informative with p ~ 0.6-1: two partial problems give ~0.25
    assert len(partial) == 2 and scarce["expected_informative_frac"] == pytest.approx(0.25, abs=0.06)
    assert scarce["expected_informative_frac"] < reg["plentiful"]["expected_informative_frac"]
    assert "scarce" not in regime_pools({"k": 8, "rates": {"g": 4}, "used_ids": ["g"]}, group_size=8,
                                        scarce_informative_frac=0.25, seed=0)


def test_savings_are_paired_by_seed_with_a_bootstrap_and_an_arm_that_fills_no_batch_is_never_infinite():
    rows = []
    for s in range(8):
        rows += [{"regime": "plentiful", "seed": s, "strategy": "backfill", "gen_calls_per_filled_batch": 0.6 + 0.02 * s},
                 {"regime": "plentiful", "seed": s, "strategy": "backfill_nocache", "gen_calls_per_filled_batch": 1.0},
                 {"regime": "plentiful", "seed": s, "strategy": "reject", "gen_calls_per_filled_batch": None}]
    est = saving_estimate(rows, "plentiful", "backfill_nocache")
    hand = np.mean([1 - (0.6 + 0.02 * s) for s in range(8)])
    assert est.mean == pytest.approx(hand) and est.method == "bootstrap" and est.n_seeds == 8 and est.informative
    assert est.low < hand < est.high and est.low > 0.2
    rej = saving_estimate(rows, "plentiful", "reject")
    assert not rej.informative and "non-finite" in rej.reason
    keys = rej.summary("backfill_gen_call_saving_vs_reject")
    assert keys["backfill_gen_call_saving_vs_reject"] is None and keys["backfill_gen_call_saving_vs_reject_ci95"] is None
    assert set(strategy_estimates(rows)) == {"nocache_plentiful", "reject_plentiful"}
    assert saving_estimate(rows, "scarce", "reject") is None


def _synthetic_records(n_bases=3, n_per_domain=30, steps=20):
    """Records as compute_records writes them, with known numbers: 3 bases, SFT and math-only evaluations,
    a math-only history, pools and replayed strategy runs."""
    from falcon_h1r.sections.rl_strategies import compare_strategies

    rng = np.random.default_rng(0)
    ids = {d: [f"{d}-{i}" for i in range(n_per_domain)] for d in ("math", "code", "science")}
    all_ids = [i for d in ids.values() for i in d]
    per_base, evals, history, pools = {}, [], [], []
    for b in range(n_bases):
        sft = {i: float(rng.integers(0, 5)) / 4 for i in all_ids}
        rl = {i: min(1.0, v + (0.25 if i.startswith("math") and rng.random() < 0.4 + 0.1 * b else 0.0))
              for i, v in sft.items()}
        per_base[str(b)] = {"per_problem": sft, "pre_sft_greedy": {"math": 0.01 * b}}
        evals.append({"curriculum": "math_only", "base": b, "global_step": steps, "per_problem": rl})
        for c in ("code_only", "science_only", "math_then_code", "math_code_mixed"):
            evals.append({"curriculum": c, "base": b, "global_step": steps,
                          "per_problem": {i: float(rng.integers(0, 5)) / 4 for i in all_ids}})
        for s in range(1, steps + 1):
            history.append({"curriculum": "math_only", "base": b, "stage": 1, "step": s, "global_step": s,
                            "gen_calls": 1, "reward_mean": 0.2 + 0.01 * s + 0.01 * b, "entropy": 1.0 - 0.005 * s,
                            "response_len_mean": 100.0 + s, "clip_frac": 0.001 * s, "truncated_frac": 0.1 if s == 1 else 0.0,
                            "rollouts_generated": 64, "is_ratio_max": 1.5})
        rates = {f"m{i}": i % 9 for i in range(90)}
        for d in ("math", "code", "science"):
            pools.append({"base": b, "domain": d, "measured_on": "SFT base", "k": 8, "used": 40, "inside_used": 30,
                          "fallback_all_rated": False, "rates": rates,
                          "used_ids": [k for k, c in rates.items() if 0 < c < 8]})
    exp = RLExperimentRecipe(strategy_seeds=6, strategy_steps=10)
    rl = RLRecipe(group_size=4, batch_prompts=4, gen_prompts_per_call=8, cache_size=8)
    runs, regimes = compare_strategies(pools, rl, exp)
    rec = R.RLRecords(sft_eval={"bases": list(range(n_bases)), "heldout_ids": ids, "per_base": per_base,
                                "n_problems": 3 * n_per_domain, "n_samples": 4},
                      history=pd.DataFrame(history), evals=pd.DataFrame(evals), stages=pd.DataFrame(),
                      pools=pd.DataFrame(pools), strategy_runs=pd.DataFrame(runs), strategy_regimes=regimes,
                      attacks=pd.DataFrame(), attacks_summary={}, timings={"total_s": 1.0})
    return rec, rl


def test_report_statistics_are_over_bases_paired_by_problem():
    rec, rl = _synthetic_records()
    est = R.heldout_estimates(rec)
    sft = np.array([[rec.sft_eval["per_base"][str(b)]["per_problem"][f"math-{i}"] for i in range(30)] for b in range(3)])
    ev = rec.evals[rec.evals["curriculum"] == "math_only"]
    mo = np.array([[ev[ev["base"] == b].iloc[0]["per_problem"][f"math-{i}"] for i in range(30)] for b in range(3)])
    d = est["math_only_minus_sft_math"]
    assert d.mean == pytest.approx((mo - sft).mean()) and d.unit == "bases" and d.n_seeds == 3 and d.n_problems == 30
    assert d.method == "t" and d.excludes_zero() and d.informative
    assert est["math_only_minus_sft_code"].mean == pytest.approx(0.0)
    assert est["curriculum_math_only_mean3"].n_problems == 90
    pre = np.array([[0.0], [0.01], [0.02]])
    assert est["sft_gain_minus_rl_gain_math"].mean == pytest.approx((2 * sft - pre - mo).mean())
    dyn, plain = R.dynamics_estimates(rec)
    # 20 steps: the first and last tenth are 2 steps each; reward +0.01 a step -> +0.18 on every base
    assert dyn["math_only_reward_last_minus_first"].mean == pytest.approx(0.18)
    assert dyn["math_only_entropy_last_over_first"].mean == pytest.approx((1 - 0.005 * 19.5) / (1 - 0.005 * 1.5))
    assert dyn["math_only_response_tokens_last"].mean == pytest.approx(119.5)
    assert plain["math_only_clip_fraction_max"] == pytest.approx(0.02)
    assert plain["rl_response_cap_hit_fraction"] == pytest.approx(0.1 / 20)


def test_the_summary_holds_every_key_the_sections_claims_read_and_its_headlines_are_finite():
    from falcon_h1r import claims

    rec, rl = _synthetic_records()
    summary, _ = R.summary_figures(rec, rl)
    needed = claims.required_keys(claims.load_claims())["03_rl"]
    assert not needed - set(summary), sorted(needed - set(summary))
    for k in ("rl_seeds", "math_only_minus_sft_math", "math_only_minus_sft_math_ci95",
              "rl_pool_pass_rate_inside_fraction_code", "backfill_gen_call_saving_vs_nocache",
              "backfill_gen_call_saving_vs_nocache_ci95", "backfill_gen_call_saving_vs_reject",
              "backfill_gen_call_saving_vs_reject_ci95"):
        assert isinstance(summary[k], (int, float)) and math.isfinite(summary[k]), (k, summary[k])
    assert summary["rl_seeds"] == 3 and summary["backfill_gen_call_saving_vs_nocache_unit"] == "seeds"
    assert summary["math_only_minus_sft_math_unit"] == "bases"
    rows = R.claim_rows("tiny", "03_rl", summary)
    assert len(rows) and set(rows["status"]) <= {"reproduced", "partly", "not_reproduced", "not_testable"}


RESUME_SCRIPT = r'''
import json, sys
from pathlib import Path
from falcon_h1r.config import load_preset
from falcon_h1r.results import SectionWriter
from falcon_h1r.sections import common, rl as RL
from falcon_h1r.sections.common import StageIncomplete

over = json.loads(sys.argv[1])
cfg = load_preset("tiny", over)
rl, exp = RL.load_recipes(cfg)
loads = []
real = common.get_base_model
def counted(*a, **k):
    loads.append(k.get("seed"))
    return real(*a, **k)
common.get_base_model = counted
w = SectionWriter("tiny", RL.SECTION, params=cfg.to_dict(), seed=0, root=Path(sys.argv[2]), mode="computed")
only = int(sys.argv[3]) if len(sys.argv) > 3 else None  # a --parallel child: its base's units, no writer
try:
    RL.compute_records(cfg, rl, exp, None if only is not None else w, progress=False, only_base=only)
    print(json.dumps({"complete": True, "loads": loads}))
except StageIncomplete as exc:
    print(json.dumps({"complete": False, "loads": loads, "why": str(exc)}))
'''


@pytest.mark.slow
def test_compute_records_in_pieces_loads_only_the_bases_it_still_needs(tmp_path):
    """A resumable run stopped by its budget continues on the next call; once every unit of every base is kept,
    no base model is loaded at all (a GPU piece on another machine needs only the bases it still works on)."""
    import json
    import os
    import subprocess
    import sys

    over = {"tasks.train_per_domain": 60, "tasks.test_per_domain": 10, "train.steps": 4, "train.cpu_ranks": 1, "train.batch_size": 8,
            "eval.problems_per_domain": 3, "generation.max_new_tokens": 8, "tokenizer.vocab_size": 300,
            "rl_experiments.steps": 2, "rl_experiments.strategy_steps": 2, "rl_experiments.strategy_seeds": 2,
            "rl.group_size": 2, "rl.batch_prompts": 2, "rl.gen_prompts_per_call": 2, "rl.max_gen_calls_per_step": 2,
            "rl.max_new_tokens": 8, "rl_experiments.eval_problems_per_domain": 3, "rl_experiments.eval_samples": 1,
            "rl_experiments.pool_per_domain": 4, "rl_experiments.attack_suite": False, "curation.pass_rate_k": 2,
            "curation.majority_drop_at_least": 2, "rl_experiments.resumable": True, "rl_experiments.budget_s": 1e-3,
            # two curricula (the second continues the first's run) and two strategies: every kind of unit, few pieces
            "rl_experiments.curricula": ["math_only", "math_then_code"],
            "rl_experiments.strategies_compared": ["backfill", "reject"]}
    env = {**os.environ, "FALCON_H1R_RESULTS": str(tmp_path / "results")}

    def run(o):
        out = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, json.dumps(o), str(tmp_path / "out")], env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run(over)  # a budget this small stops after the first unit
    assert not first["complete"] and "run again" in first["why"]
    rest = run({**over, "rl_experiments.budget_s": 0})  # the budget is not part of the run: it continues
    assert rest["complete"]
    assert run(over) == {"complete": True, "loads": []}  # every unit kept: no base is loaded at all
    assert (tmp_path / "out" / "tiny" / "03_rl" / "curricula_evals.jsonl").exists()


@pytest.mark.slow
def test_parallel_children_hand_their_units_to_the_pass_that_writes_the_records(tmp_path):
    """What ``--records --parallel`` does, one step at a time: each child computes only its own base's units
    (loading only that base) and writes no records; the last pass then finds every unit kept, loads no base and
    writes the records of both bases."""
    import json
    import os
    import subprocess
    import sys

    over = {"tasks.train_per_domain": 60, "tasks.test_per_domain": 10, "train.steps": 4, "train.cpu_ranks": 1,
            "train.batch_size": 8, "eval.problems_per_domain": 3, "eval.base_seeds": [0, 1],
            "generation.max_new_tokens": 8, "tokenizer.vocab_size": 300, "rl_experiments.steps": 1,
            "rl_experiments.strategy_steps": 2, "rl_experiments.strategy_seeds": 2, "rl.group_size": 2,
            "rl.batch_prompts": 2, "rl.gen_prompts_per_call": 2, "rl.max_gen_calls_per_step": 2, "rl.max_new_tokens": 8,
            "rl_experiments.eval_problems_per_domain": 3, "rl_experiments.eval_samples": 1,
            "rl_experiments.pool_per_domain": 4, "rl_experiments.attack_suite": False, "curation.pass_rate_k": 2,
            "curation.majority_drop_at_least": 2, "rl_experiments.resumable": True,
            "rl_experiments.curricula": ["math_only"], "rl_experiments.strategies_compared": ["backfill"]}
    env = {**os.environ, "FALCON_H1R_RESULTS": str(tmp_path / "results")}
    out_dir = tmp_path / "out"

    def run(*extra):
        out = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, json.dumps(over), str(out_dir), *extra], env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert run("0") == {"complete": True, "loads": [0]}
    assert run("1") == {"complete": True, "loads": [1]}
    assert not list(out_dir.glob("tiny/03_rl/*.json*"))  # the children wrote no records
    assert run() == {"complete": True, "loads": []}
    evals = [json.loads(line) for line in (out_dir / "tiny" / "03_rl" / "curricula_evals.jsonl").read_text().splitlines()]
    assert {e["base"] for e in evals} == {0, 1}
    # the record's timings count the children's units, not only the last pass (which computed none of them)
    timings = json.loads((out_dir / "tiny" / "03_rl" / "timings.json").read_text())
    assert {"base 0's pools", "base 1's pools", "base 0's math_only run", "base 1's math_only run"} <= set(
        timings["unit_wall_s"])
    assert timings["units_wall_s_sum"] == pytest.approx(sum(timings["unit_wall_s"].values()))
    assert timings["units_wall_s_sum"] > timings["base0_math_only_s"] + timings["base1_math_only_s"]


@pytest.mark.parametrize("argv, message", [
    (["--preset", "tiny", "--records", "--override", "rl_experiments.steps=-3"], "rl_experiments.steps"),
    (["--preset", "tiny", "--records", "--override", "steps"], "expected KEY=VALUE"),
    (["--preset", "nope", "--records"], "nope"),
    (["--preset", "tiny"], "--records"),
    (["--preset", "tiny", "--records", "--base-seed", "5"], "--base-seed 5"),
    (["--preset", "tiny", "--records", "--parallel", "--override", "rl_experiments.resumable=false"], "resumable"),
])
def test_records_cli_rejects_bad_input_with_exit_2_before_any_work(argv, message, capsys, monkeypatch):
    from falcon_h1r.sections import rl_records

    monkeypatch.setattr(rl_records, "compute_records", lambda *a, **k: pytest.fail("records were computed"))
    monkeypatch.setattr(rl_records, "run_per_seed", lambda *a, **k: pytest.fail("processes were started"))
    try:
        code = rl_records.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err


def test_records_cli_computes_through_the_sections_writer_and_says_when_the_budget_stopped_it(monkeypatch, tmp_path):
    """--records writes with the section's writer under the results root; a budget stop exits 3 (run again)."""
    from falcon_h1r import results
    from falcon_h1r.sections import common, rl_records
    from falcon_h1r.sections import rl as RL
    from falcon_h1r.sections.common import StageIncomplete

    monkeypatch.setattr(results, "RESULTS_ROOT", tmp_path)
    seen = []
    monkeypatch.setattr(rl_records, "open_section", lambda p, s, o, **k: common.SectionRun(
        load_preset(p, o), "compute", results.SectionWriter(p, s, root=tmp_path)))

    def fake(cfg, rl, exp, writer, **k):
        seen.append((cfg.name, exp.steps, writer.dir if writer else None, k.get("only_base")))
        return {"total_s": 1.0}

    monkeypatch.setattr(rl_records, "compute_records", fake)
    assert rl_records.main(["--preset", "tiny", "--records", "--override", "rl_experiments.steps=2"]) == 0
    assert seen == [("tiny", 2, tmp_path / "tiny" / RL.SECTION, None)]
    monkeypatch.setattr(rl_records, "compute_records", lambda *a, **k: (_ for _ in ()).throw(StageIncomplete("budget")))
    assert rl_records.main(["--preset", "tiny", "--records"]) == 3


def test_records_cli_parallel_starts_one_child_per_base_and_writes_the_records_only_when_all_finished(monkeypatch,
                                                                                                     tmp_path):
    from falcon_h1r import results
    from falcon_h1r.sections import common, rl_records

    monkeypatch.setattr(rl_records, "open_section", lambda p, s, o, **k: common.SectionRun(
        load_preset(p, o), "compute", results.SectionWriter(p, s, root=tmp_path)))
    launched, passes = [], []
    codes = {0: 0, 1: 3}
    monkeypatch.setattr(rl_records, "run_per_seed", lambda module, preset, seeds, **k: launched.append(
        (module, preset, list(seeds), k["seed_flag"], k["args"])) or {s: (codes[s], "") for s in seeds})
    monkeypatch.setattr(rl_records, "compute_records", lambda cfg, rl, exp, writer, **k: passes.append(k) or
                        {"total_s": 1.0})
    over = ["--override", "eval.base_seeds=[0, 1]", "--override", "rl_experiments.resumable=true"]
    assert rl_records.main(["--preset", "tiny", "--records", "--parallel", *over]) == 3  # base 1 stopped on its budget
    assert launched == [("falcon_h1r.sections.rl_records", "tiny", [0, 1], "--base-seed", ["--records", *over])]
    assert passes == []  # no records while a child is unfinished
    codes[1] = 0
    assert rl_records.main(["--preset", "tiny", "--records", "--parallel", *over]) == 0
    assert passes == [{}]  # then the one pass that writes them
    # a child: its base only, no writer
    assert rl_records.main(["--preset", "tiny", "--records", "--base-seed", "1", *over]) == 0
    assert passes[-1] == {"only_base": 1}
