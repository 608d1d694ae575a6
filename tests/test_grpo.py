"""GRPO: the loss against hand-computed values and its plain twin, micro-batching, kill and resume, and the
trainer's recipe. (The section's pool builder, experiment recipe and attack step: tests/test_rl_section.py.)"""

import math
import random

import pytest
import torch

from falcon_h1r.config import ModelConfig, RecipeError, load_preset
from falcon_h1r.grpo import (RLRecipe, build_batch, completion_from_text, fill_sampler_logprobs, grpo_update,
                             policy_loss, policy_loss_reference, train_grpo)
from falcon_h1r.rewards import RewardResult
from falcon_h1r.rollout_buffer import Group, group_advantages

pytestmark = pytest.mark.usefixtures("one_torch_thread")

L = math.log


EPS = dict(eps_low=0.2, eps_high=0.28, tis_cap=2.0)


def _hand_batch():
    # seq 1 (A = +1, correct, 2 tokens): ratio 1.5 (clipped high to 1.28), IS 3 -> capped 2;
    #                                     ratio 0.5 (A > 0: not clipped), IS 0.5
    # seq 2 (A = -1, wrong, 3 tokens):   ratio 0.5 (clipped low to 0.8), IS 1; ratio 1.5 (A < 0: not clipped),
    #                                     IS 1.5; ratio 1, IS 2.5 -> capped 2
    old = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    logp = torch.tensor([[L(1.5), L(0.5), 0.0], [L(0.5), L(1.5), 0.0]], requires_grad=True)
    sampler = torch.tensor([[-L(3.0), -L(0.5), 0.0], [0.0, -L(1.5), -L(2.5)]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -1.0])
    correct = torch.tensor([True, False])
    ce_logp = torch.tensor([[L(0.5), L(0.25), 0.0], [L(0.1), L(0.1), L(0.1)]], requires_grad=True)
    return logp, old, sampler, adv, mask, correct, ce_logp


def test_loss_matches_hand_computed_values():
    logp, old, sampler, adv, mask, correct, ce_logp = _hand_batch()
    loss, st = policy_loss(logp, old, sampler, adv, mask, correct=correct, ce_logp=ce_logp, ce_weight=0.5, **EPS)
    seq1 = (-1.28 * 2.0 + -0.5 * 0.5) / 2  # -1.405
    seq2 = (0.8 * 1.0 + 1.5 * 1.5 + 1.0 * 2.0) / 3  # 1.68333
    pg = (seq1 + seq2) / 2  # per-sequence token mean, then mean over sequences
    ce = (L(2.0) + L(4.0)) / 2  # only the correct sequence
    assert st["pg_loss"] == pytest.approx(pg, abs=1e-6)
    assert st["ce_loss"] == pytest.approx(ce, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(pg + 0.5 * ce, abs=1e-6)
    assert st["clip_high_frac"] == pytest.approx(1 / 5) and st["clip_low_frac"] == pytest.approx(1 / 5)
    assert st["clip_frac"] == pytest.approx(2 / 5)
    assert st["is_capped_frac"] == pytest.approx(2 / 5) and st["is_ratio_max"] == pytest.approx(3.0)
    loss.backward()
    g = logp.grad
    # clipped tokens carry no gradient; unclipped ones: -ratio * A * w / |o_i| / B
    assert g[0, 0] == 0 and g[1, 0] == 0 and g[0, 2] == 0
    assert float(g[0, 1]) == pytest.approx(-(0.5 * 1) * 0.5 / 2 / 2, abs=1e-6)
    assert float(g[1, 1]) == pytest.approx(-(1.5 * -1) * 1.5 / 3 / 2, abs=1e-6)
    assert float(g[1, 2]) == pytest.approx(-(1.0 * -1) * 2.0 / 3 / 2, abs=1e-6)
    # CE gradient only on the correct sequence: -1 / |o_1| / n_correct
    assert torch.allclose(ce_logp.grad, torch.tensor([[-0.25, -0.25, 0.0], [0.0, 0.0, 0.0]]))
    # sampler and trainer log-probs are both recorded
    assert st["trainer_logp_mean"] == pytest.approx(0.0) and st["sampler_logp_mean"] < 0


def test_no_ce_without_weight_and_no_kl_anywhere():
    logp, old, sampler, adv, mask, correct, ce_logp = _hand_batch()
    loss0, st0 = policy_loss(logp, old, sampler, adv, mask, correct=correct, ce_logp=ce_logp, ce_weight=0.0, **EPS)
    assert float(loss0.detach()) == pytest.approx(st0["pg_loss"])
    # beta = 0: no reference model exists, and a recipe asking for a KL term is refused
    with pytest.raises(RecipeError, match="kl_coef"):
        RLRecipe(kl_coef=0.04)
    # on policy, no mismatch: ratio 1 and TIS weight 1 -> the plain policy gradient -A
    z = torch.zeros(2, 3)
    loss1, st1 = policy_loss(z.clone().requires_grad_(), z, z, adv, mask, **EPS)
    assert float(loss1.detach()) == pytest.approx((-1 + 1) / 2) and st1["clip_frac"] == 0 and st1["tis_weight_mean"] == 1


def test_vectorized_loss_equals_plain_python_twin():
    rng = random.Random(0)
    B, T = 6, 7
    lens = [rng.randint(1, T) for _ in range(B)]
    rows = [[[rng.gauss(-1, 0.6) for _ in range(n)] for n in lens] for _ in range(4)]
    adv = [rng.gauss(0, 1) for _ in range(B)]
    correct = [rng.random() < 0.5 for _ in range(B)]
    correct[0] = True

    def pad(rs):
        return torch.tensor([r + [0.0] * (T - len(r)) for r in rs])

    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lens])
    loss, _ = policy_loss(pad(rows[0]), pad(rows[1]), pad(rows[2]), torch.tensor(adv), mask,
                          correct=torch.tensor(correct), ce_logp=pad(rows[3]), ce_weight=0.3, **EPS)
    ref = policy_loss_reference(rows[0], rows[1], rows[2], adv, correct=correct, ce_logp=rows[3], ce_weight=0.3, **EPS)
    assert float(loss) == pytest.approx(ref, abs=1e-5)


# ----------------------------------------------------------------------------- a tiny model and tokenizer
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


def _length_score(problems, texts):
    """Skill-free rewards with spread, so every group size yields informative groups."""
    return [RewardResult(float(len(t) % 3 == 0), len(t) % 3 == 0, True, "ok", "ok", p["domain"])
            for p, t in zip(problems, texts)]


RECIPE = RLRecipe(group_size=3, batch_prompts=2, gen_prompts_per_call=2, max_new_tokens=8, lr=1e-3, warmup_steps=2,
                  cache_size=4, cache_max_age=2, save_every=2, micro_batch_seqs=4, mini_batches=2)


def _strip_times(rows):
    return [{k: v for k, v in r.items() if k not in ("gen_s", "decode_s", "score_s", "train_s")} for r in rows]


def test_kill_and_resume_gives_the_same_final_metrics_and_weights(setup, tmp_path):
    import copy

    preset, sets, tok, base = setup
    gen = RECIPE.sampling(preset.generation)
    pool = sets["train"][:12]
    kw = dict(gen_cfg=gen, steps=5, seed=3, score_fn=_length_score, progress=False)
    m_full = copy.deepcopy(base)
    full = train_grpo(m_full, tok, pool, RECIPE, run_dir=tmp_path / "full", **kw)

    class Killed(Exception):
        pass

    def kill_at_3(step, row):
        if step == 3:  # after step 3's update, before its state is saved (saves happen at 2 and 4)
            raise Killed

    m_a = copy.deepcopy(base)
    with pytest.raises(Killed):
        train_grpo(m_a, tok, pool, RECIPE, run_dir=tmp_path / "killed", on_step_end=kill_at_3, **kw)
    m_b = copy.deepcopy(base)  # a fresh process: weights from the SFT base, everything else from state.pt
    resumed = train_grpo(m_b, tok, pool, RECIPE, run_dir=tmp_path / "killed", **kw)
    assert resumed.resumed_from == 2
    assert _strip_times(resumed.history) == _strip_times(full.history)
    assert resumed.sampler == full.sampler
    for a, b in zip(m_full.parameters(), m_b.parameters()):
        assert torch.equal(a, b)
    assert any(r["updated"] for r in full.history) and full.sampler["gen_calls"] >= 5


def test_a_deadline_stops_after_a_step_saves_and_the_rerun_ends_like_an_uninterrupted_run(setup, tmp_path):
    import copy

    preset, sets, tok, base = setup
    gen = RECIPE.sampling(preset.generation)
    pool = sets["train"][:12]
    kw = dict(gen_cfg=gen, steps=5, seed=3, score_fn=_length_score, progress=False)
    m_full = copy.deepcopy(base)
    full = train_grpo(m_full, tok, pool, RECIPE, run_dir=tmp_path / "full", **kw)
    assert full.complete and full.steps == 5
    # a deadline already past: the run stops after its first step (not on a save_every step) with its state saved
    piece = train_grpo(copy.deepcopy(base), tok, pool, RECIPE, run_dir=tmp_path / "piece", deadline=0.0, **kw)
    assert not piece.complete and piece.steps == 1 and len(piece.history) == 1
    m_b = copy.deepcopy(base)
    rest = train_grpo(m_b, tok, pool, RECIPE, run_dir=tmp_path / "piece", **kw)
    assert rest.complete and rest.resumed_from == 1
    assert _strip_times(rest.history) == _strip_times(full.history) and rest.sampler == full.sampler
    for a, b in zip(m_full.parameters(), m_b.parameters()):
        assert torch.equal(a, b)


def test_reward_on_first_seen_prompts_is_logged_and_survives_a_resume(setup, tmp_path):
    import copy

    preset, sets, tok, base = setup
    gen = RECIPE.sampling(preset.generation)
    pool = sets["train"][:5]  # 2 prompts a call: the third call already repeats a prompt
    res = train_grpo(copy.deepcopy(base), tok, pool, RECIPE, gen_cfg=gen, steps=5, seed=3, score_fn=_length_score,
                     progress=False, run_dir=tmp_path / "run")
    h = res.history
    first = h[0]
    assert first["first_seen_prompts"] == first["prompts_generated"]  # every prompt of step 1 is new
    assert first["reward_first_seen"] == pytest.approx(first["reward_mean"])
    assert sum(r["first_seen_prompts"] for r in h) == len(pool)  # each pool problem counted once
    assert sum(r["prompts_generated"] for r in h) > len(pool)
    late = [r for r in h if r["prompts_generated"] and not r["first_seen_prompts"]]
    assert late and all(r["reward_first_seen"] is None for r in late)  # None, not NaN: rows stay comparable
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["counters"]["seen_ids"] == {p["id"] for p in pool}


def test_micro_batching_does_not_change_the_update(setup):
    import copy

    preset, sets, tok, base = setup
    rng = random.Random(0)
    groups = []
    for p in sets["train"][:3]:
        comps = [completion_from_text(tok, f"<think>\nstep {rng.randint(0, 99)}\n</think>\nanswer {k}") for k in range(3)]
        rewards = [1.0, 0.0, float(rng.random() < 0.5)]
        groups.append(Group(p, comps, rewards, [r > 0 for r in rewards], group_advantages(rewards, 1e-6), 0))
    fill_sampler_logprobs(base, tok, groups, RECIPE, "cpu")
    outs = []
    for micro in (1, 4, 9):
        m = copy.deepcopy(base)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        rec = RLRecipe(**{**RECIPE.__dict__, "micro_batch_seqs": micro, "mini_batches": 1, "grad_clip": 1e9})
        st = grpo_update(m, opt, groups, rec, lambda q: tok.encode(tok.prompt(q["question"])), tok.pad_id, "cpu")
        outs.append((st, [p.detach().clone() for p in m.parameters()]))
    for st, params in outs[1:]:
        assert st["pg_loss"] == pytest.approx(outs[0][0]["pg_loss"], abs=1e-6)
        assert st["ce_loss"] == pytest.approx(outs[0][0]["ce_loss"], abs=1e-5)
        for a, b in zip(params, outs[0][1]):
            assert torch.allclose(a, b, atol=1e-6)
    # the sampler's log-probs were the trainer's: the importance weights are exactly 1
    assert outs[0][0]["is_ratio_mean"] == pytest.approx(1.0, abs=1e-5)


def test_build_batch_aligns_completion_tokens(setup):
    _, sets, tok, _ = setup
    p = sets["train"][0]
    c = completion_from_text(tok, "<think>\nabc\n</think>\nx")
    c.logprobs[:] = -0.5
    g = Group(p, [c, c], [1.0, 0.0], [True, False], [0.7, -0.7], 0)
    b = build_batch([g], lambda q: tok.encode(tok.prompt(q["question"])), tok.pad_id)
    n_prompt = len(tok.encode(tok.prompt(p["question"])))
    row = b.mask[0].nonzero().flatten().tolist()
    assert row == list(range(n_prompt - 1, n_prompt - 1 + len(c.token_ids)))
    assert b.ids[0, 1:][b.mask[0].bool()].tolist() == c.token_ids  # targets are the completion tokens
    assert torch.all(b.sampler_logp[0][b.mask[0].bool()] == -0.5)
    assert b.advantages.tolist() == pytest.approx([0.7, -0.7]) and b.correct.tolist() == [True, False]


def test_recipe_blocks_of_every_preset_parse_and_bad_keys_are_named():
    for name in ("tiny", "small", "paper"):
        rec = load_preset(name).section("rl", RLRecipe)
        assert rec.kl_coef == 0.0 and rec.tis_cap == 2.0
    paper = load_preset("paper").section("rl", RLRecipe)
    assert (paper.group_size, paper.temperature, paper.clip_eps_low, paper.clip_eps_high, paper.lr,
            paper.warmup_steps, paper.entropy_coef) == (16, 0.85, 0.2, 0.28, 2e-6, 10, 0.0)
    with pytest.raises(RecipeError, match="unknown key rl.group_sise"):
        load_preset("tiny", {"rl.group_sise": 4}).section("rl", RLRecipe)
    with pytest.raises(RecipeError, match="rl.strategy"):
        RLRecipe(strategy="oversample")
    with pytest.raises(RecipeError, match="group_size"):
        RLRecipe(group_size=1)
