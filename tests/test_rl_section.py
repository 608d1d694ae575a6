"""Notebook 03's section: the experiment recipe, the RL pool builder (curation's rules), held-out grading,
the sandbox attacks through the code reward in a training step, and the report's arithmetic."""

import math

import pandas as pd
import pytest

from falcon_h1r.config import ModelConfig, RecipeError, load_preset
from falcon_h1r.grpo import RLRecipe
from falcon_h1r.sections.rl import (PoolBuilder, RLExperimentRecipe, heldout_report, load_recipes, per_problem_rates,
                                    strategy_recipe)
from falcon_h1r.sections.paired import paired_difference as _paired_difference
from falcon_h1r.sections.rl_report import gen_call_saving, savings_summary, strategy_savings

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
        assert isinstance(rl, RLRecipe) and exp.strategy_steps <= exp.steps
        assert set(exp.curricula) == {"math_only", "code_only", "science_only", "math_then_code", "math_code_mixed"}
    tiny = load_preset("tiny").section("rl_experiments", RLExperimentRecipe)
    assert (tiny.steps, tiny.eval_problems_per_domain, tiny.eval_samples, tiny.pool_per_domain,
            tiny.strategy_steps) == (4, 20, 1, 12, 3)
    with pytest.raises(RecipeError, match="curricula"):
        RLExperimentRecipe(curricula=["code_then_math"])
    with pytest.raises(RecipeError, match="rl_experiments.strategies_compared"):
        RLExperimentRecipe(strategies_compared=["oversample"])
    with pytest.raises(RecipeError, match="rl_experiments.steps"):
        RLExperimentRecipe(steps=0)
    # the experiment's knobs are no longer trainer knobs: the old place is named as unknown
    with pytest.raises(RecipeError, match="unknown key rl.curricula"):
        load_preset("tiny", {"rl.curricula": ["math_only"]}).section("rl", RLRecipe)
    assert strategy_recipe(RLRecipe(), "backfill_nocache").cache_size == 0
    assert strategy_recipe(RLRecipe(), "reject").strategy == "reject"


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


def test_paired_difference_by_problem():
    after = {"a": 1.0, "b": 0.5, "c": 0.0, "z": 1.0}
    before = {"a": 0.0, "b": 0.5, "c": 0.5}
    mean, half, n = _paired_difference(after, before)  # "z" has no pair
    d = [1.0, 0.0, -0.5]
    m = sum(d) / 3
    assert n == 3 and mean == pytest.approx(m)
    assert half == pytest.approx(1.96 * math.sqrt(sum((x - m) ** 2 for x in d) / 2 / 3))
    assert _paired_difference(after, before, ["a", "b"])[:3] == pytest.approx((0.5, 1.96 * math.sqrt(0.5 / 2), 2))
    mean, half, n = _paired_difference(after, before, ["z"])
    assert n == 0 and math.isnan(mean) and math.isnan(half)


def test_generation_call_savings():
    rows = pd.DataFrame([{"strategy": "backfill", "gen_calls_per_filled_batch": 1.5},
                         {"strategy": "reject", "gen_calls_per_filled_batch": 2.0},
                         {"strategy": "backfill_nocache", "gen_calls_per_filled_batch": 3.0}])
    assert gen_call_saving(rows.to_dict("records")) == pytest.approx(0.25)
    saving = strategy_savings(rows)
    assert saving == pytest.approx({"reject": 0.25, "backfill_nocache": 0.5})
    assert savings_summary(saving) == pytest.approx({"backfill_gen_call_saving_vs_reject": 0.25,
                                                     "backfill_gen_call_saving_vs_nocache": 0.5})
    with pytest.raises(ValueError, match="duplicate"):
        gen_call_saving(rows.to_dict("records"), baseline="duplicate")
