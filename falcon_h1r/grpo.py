"""GRPO with the paper's modifications (paper §3, Table 2; ``papers/table2_rl_hparams.yaml``).

The objective, per token t of rollout i in a group of G rollouts of one prompt::

    A_i     = (R_i - mean(R)) / (std(R) + eps)                     group-normalized advantage
    r_it    = pi_theta(o_it) / pi_old(o_it)                        trainer ratio
    w_it    = min(pi_old(o_it) / pi_sampler(o_it), tis_cap)        truncated importance sampling (detached)
    l_it    = -w_it * min(r_it * A_i, clip(r_it, 1 - eps_low, 1 + eps_high) * A_i)
    L_pg    = mean_i [ (1/|o_i|) sum_t l_it ]                      per-sequence token mean, then mean over sequences
    L_ce    = mean_{i correct} [ (1/|o_i|) sum_t -log pi_theta(o_it) ]   extra CE on correct samples
    L       = L_pg + ce_weight * L_ce - entropy_coef * H          (KL coefficient 0: no reference model)

``pi_sampler`` is what the rollout engine reported while sampling (``Completion.logprobs``), ``pi_old``
is the trainer's own recomputation before the update; the two differ in precision or engine, and for
rollouts taken from the generation cache also in policy version. Both are recorded every step.

Why the loss is written here rather than taken from TRL: TRL is not part of the kept stack (not
installed), and its ``GRPOTrainer`` owns generation (transformers ``generate`` or vLLM) so it cannot take
the sampler log-probs of our engine, has no positive-sample CE term, and its zero-advantage handling
(an experimental replay buffer) is not the paper's backfill with a bounded cache. The loss follows TRL's
``loss_type="grpo"`` formula (coef_1 / coef_2 = clamped ratio, ``-min``, truncated IS weight multiplied
in, per-sequence mean then batch mean); :func:`policy_loss_reference` is its plain-Python twin and the
tests hold one against the other and against hand-computed values.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch

from falcon_h1r.config import GenerationConfig, Preset, RecipeError
# the rollout engine: the static-cache CUDA-graph engine on GPU, transformers' loop on CPU (generation.engine)
from falcon_h1r.inference import Completion, generate
from falcon_h1r.packed_mamba import enable_packed_mamba
from falcon_h1r.rewards import RewardPool, RewardRecipe, RewardResult
from falcon_h1r.rollout_buffer import (STRATEGIES, BatchFiller, Group, PromptStream, group_advantages, summarize,
                                      totals_from_rows)

CURRICULA: dict[str, list[tuple[str, ...]]] = {
    # name -> stages, each stage the domains of its prompt pool (paper Table 3 rows)
    "math_only": [("math",)],
    "code_only": [("code",)],
    "science_only": [("science",)],
    "math_then_code": [("math",), ("code",)],
    "math_code_mixed": [("math", "code")],
}
PAPER_TABLE3_ROW = {"math_only": "Math only", "code_only": "Code only", "science_only": "Science only",
                    "math_then_code": "Math -> Code", "math_code_mixed": "Math + Code mixed"}


# ============================================================================== recipe
@dataclass
class RLRecipe:
    """The ``rl`` block of a preset. Defaults are the paper's values (Table 2) where it gives them;
    every other value says that the paper does not give it. Nothing is left to a library default."""

    # ---- GRPO objective (paper Table 2)
    group_size: int = 16  # Table 2: G = 16 rollouts per prompt
    temperature: float = 0.85  # Table 2: rollout temperature
    top_p: float = 1.0  # not stated; 1.0 keeps the sampler's distribution equal to the trainer's
    max_new_tokens: int = 49152  # Table 2: 48K max response length (K read as 1024)
    batch_prompts: int = 128  # Table 2: train batch 128 (the unit is not stated; read as prompts)
    mini_batches: int = 1  # Table 2: PPO mini-batch 128 = train batch -> one update per batch
    micro_batch_seqs: int = 16  # sequences per forward/backward (gradient accumulation; same maths)
    lr: float = 2e-6  # Table 2
    warmup_steps: int = 10  # Table 2: linear warm-up over 10 steps
    lr_after_warmup: Literal["constant"] = "constant"  # not stated; constant after warm-up
    weight_decay: float = 0.01  # not stated for RL; the SFT value (Table 1)
    adam_beta1: float = 0.9  # not stated
    adam_beta2: float = 0.999  # not stated
    adam_eps: float = 1e-8  # not stated
    grad_clip: float = 1.0  # not stated for RL; the SFT value (Table 1)
    clip_eps_low: float = 0.2  # Table 2: clip ratio low
    clip_eps_high: float = 0.28  # Table 2: clip-higher (DAPO)
    kl_coef: float = 0.0  # Table 2: KL term removed (no reference model is loaded)
    entropy_coef: float = 0.0  # Table 2
    tis_cap: float = 2.0  # Table 2: truncated importance sampling cap
    ce_weight: float = 0.1  # Table 2: CE loss on correct samples; its weight is NOT given (our value)
    advantage_eps: float = 1e-6  # floor in (R - mean) / (std + eps); not stated
    advantage_std: Literal["unbiased", "population"] = "unbiased"  # torch.std as in verl's GRPO estimator
    loss_aggregation: Literal["seq_mean_group_mean"] = "seq_mean_group_mean"  # Table 2: 1/|o_i|, then 1/G
    # ---- online sampling (papers/rl_sampling_strategies.yaml)
    strategy: str = "backfill"  # §3: backfill chosen (reject, duplicate compared)
    gen_prompts_per_call: int = 128  # prompts per generation call (= train batch; not stated)
    cache_size: int = 128  # §3: bounded generation cache; size not given (groups)
    cache_max_age: int = 2  # §3: optional periodic refresh; period not given (steps, 0 = never)
    max_gen_calls_per_step: int = 8  # guard against a pool of all-solved prompts; not in the paper
    rewards: RewardRecipe = field(default_factory=RewardRecipe)
    # ---- runs (the paper trains each curriculum until it plateaus; its step counts are not given)
    steps: int = 100  # steps per curriculum stage
    curricula: list[str] = field(default_factory=lambda: list(CURRICULA))
    eval_every: int = 25  # held-out evaluation every n steps (and at the end); 0 = end only
    eval_problems_per_domain: int = 100
    eval_samples: int = 4  # pass@1 averaged over n samples (paper §4.1 protocol)
    pool_per_domain: int = 0  # RL prompts per domain: curation candidates re-measured, and kept ones used (0 = all)
    strategies_compared: list[str] = field(default_factory=lambda: ["backfill", "backfill_nocache", "reject",
                                                                    "duplicate"])
    strategy_steps: int = 20  # steps of each strategy's math run in the comparison
    save_every: int = 10  # checkpoint every n steps (kill and resume)
    trainer_dtype: Literal["float32", "bfloat16"] = "float32"  # not stated; fp32 master weights (verl's FSDP default)
    sampler_dtype: Literal["float32", "bfloat16"] = "float32"  # not stated; "bfloat16" samples from a bf16 copy (vLLM-like)
    attack_suite: bool = True  # run the sandbox attack suite through the code reward in one training step
    resumable: bool = False  # keep run state under results/<preset>/03_rl/_work/<recipe hash>: a rerun resumes

    def __post_init__(self) -> None:
        ints = ("group_size", "max_new_tokens", "batch_prompts", "mini_batches", "micro_batch_seqs",
                "gen_prompts_per_call", "max_gen_calls_per_step", "steps", "eval_problems_per_domain",
                "eval_samples", "strategy_steps", "save_every")
        for name in ints:
            if getattr(self, name) < 1:
                raise RecipeError(f"rl.{name}: must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise RecipeError(f"rl.group_size: GRPO needs at least 2 rollouts per prompt, got {self.group_size}")
        for name in ("warmup_steps", "cache_size", "cache_max_age", "eval_every", "pool_per_domain"):
            if getattr(self, name) < 0:
                raise RecipeError(f"rl.{name}: must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise RecipeError(f"rl.temperature: rollouts are sampled, so it must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise RecipeError(f"rl.top_p: must be in (0, 1], got {self.top_p}")
        if self.lr <= 0:
            raise RecipeError(f"rl.lr: must be > 0, got {self.lr}")
        if not (0 <= self.clip_eps_low < 1 and self.clip_eps_high >= 0):
            raise RecipeError(f"rl.clip_eps_low/high: need 0 <= low < 1 and high >= 0, got {self.clip_eps_low}, "
                              f"{self.clip_eps_high}")
        if self.kl_coef != 0.0:
            raise RecipeError(f"rl.kl_coef: only 0 is accepted (paper Table 2 removes the KL term, so no reference "
                              f"model is loaded), got {self.kl_coef}")
        if self.tis_cap < 1:
            raise RecipeError(f"rl.tis_cap: must be >= 1 (paper: 2), got {self.tis_cap}")
        if self.ce_weight < 0 or self.entropy_coef < 0:
            raise RecipeError(f"rl.ce_weight / rl.entropy_coef: must be >= 0, got {self.ce_weight}, {self.entropy_coef}")
        if self.strategy not in STRATEGIES:
            raise RecipeError(f"rl.strategy: {self.strategy!r} not accepted; use one of {list(STRATEGIES)}")
        bad = [c for c in self.curricula if c not in CURRICULA]
        if bad:
            raise RecipeError(f"rl.curricula: {bad} not accepted; use some of {list(CURRICULA)}")
        bad = [s for s in self.strategies_compared if s not in (*STRATEGIES, "backfill_nocache")]
        if bad:
            raise RecipeError(f"rl.strategies_compared: {bad} not accepted; use some of "
                              f"{[*STRATEGIES, 'backfill_nocache']}")

    def for_strategy(self, name: str) -> "RLRecipe":
        """This recipe with one of the compared strategies (``backfill_nocache`` = backfill, cache 0)."""
        if name == "backfill_nocache":
            return replace(self, strategy="backfill", cache_size=0)
        return replace(self, strategy=name)

    def sampling(self, base: GenerationConfig) -> GenerationConfig:
        """The rollout sampler's settings: the preset's engine and batch size, the RL temperature/length."""
        return replace(base, temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)


# ============================================================================== the loss
def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, sampler_logp: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, *, eps_low: float, eps_high: float, tis_cap: float,
                correct: torch.Tensor | None = None, ce_logp: torch.Tensor | None = None, ce_weight: float = 0.0,
                entropy: torch.Tensor | None = None, entropy_coef: float = 0.0,
                n_seqs: int | None = None, n_correct: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of the module docstring on ``[B, T]`` per-token tensors.

    ``logp`` carries the gradient (trainer, temperature-scaled, current parameters); ``old_logp`` is the
    trainer's log-prob before the update and ``sampler_logp`` the rollout engine's (both detached);
    ``advantages`` is ``[B]``; ``ce_logp`` the log-prob at temperature 1 for the CE term. ``n_seqs`` and
    ``n_correct`` are the normalizers of the whole mini-batch when this call sees one micro-batch of it
    (defaults: this call's counts), so summing micro-batch losses gives the mini-batch loss exactly.
    """
    mask = mask.to(logp.dtype)
    lengths = mask.sum(-1).clamp(min=1.0)
    adv = advantages.to(logp.dtype)[:, None]
    ratio = torch.exp(logp - old_logp.detach())
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    tis = torch.exp(old_logp.detach() - sampler_logp.detach()).clamp(max=tis_cap)
    per_token = -torch.min(ratio * adv, clipped * adv) * tis
    n_seqs = logp.shape[0] if n_seqs is None else n_seqs
    pg = ((per_token * mask).sum(-1) / lengths).sum() / max(1, n_seqs)
    loss = pg
    ce = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if ce_weight and correct is not None and ce_logp is not None:
        c = correct.to(logp.dtype)
        n_correct = int(c.sum().item()) if n_correct is None else n_correct
        if n_correct:
            ce = ((-(ce_logp * mask).sum(-1) / lengths) * c).sum() / n_correct
            loss = loss + ce_weight * ce
    ent = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if entropy is not None:
        ent = ((entropy * mask).sum(-1) / lengths).sum() / max(1, n_seqs)
        if entropy_coef:
            loss = loss - entropy_coef * ent
    with torch.no_grad():
        tok = mask.sum().clamp(min=1.0)
        low = ((ratio < 1.0 - eps_low) & (adv < 0)).to(logp.dtype) * mask
        high = ((ratio > 1.0 + eps_high) & (adv > 0)).to(logp.dtype) * mask
        valid = mask.bool()
        tis_v, raw = tis[valid], torch.exp(old_logp - sampler_logp)[valid]
        stats = {
            "pg_loss": float(pg), "ce_loss": float(ce), "entropy": float(ent),
            "clip_frac": float((low + high).sum() / tok), "clip_low_frac": float(low.sum() / tok),
            "clip_high_frac": float(high.sum() / tok),
            "ratio_mean": float((ratio * mask).sum() / tok),
            "is_ratio_mean": float(raw.mean()) if raw.numel() else 1.0,
            "is_ratio_min": float(raw.min()) if raw.numel() else 1.0,
            "is_ratio_max": float(raw.max()) if raw.numel() else 1.0,
            "is_capped_frac": float((raw > tis_cap).float().mean()) if raw.numel() else 0.0,
            "tis_weight_mean": float(tis_v.mean()) if tis_v.numel() else 1.0,
            "sampler_logp_mean": float(sampler_logp[valid].mean()) if raw.numel() else 0.0,
            "trainer_logp_mean": float(old_logp[valid].mean()) if raw.numel() else 0.0,
            "logp_abs_diff_mean": float((old_logp - sampler_logp)[valid].abs().mean()) if raw.numel() else 0.0,
            "n_tokens": float(mask.sum()),
        }
    return loss, stats


def policy_loss_reference(logp: list[list[float]], old_logp: list[list[float]], sampler_logp: list[list[float]],
                          advantages: list[float], *, eps_low: float, eps_high: float, tis_cap: float,
                          correct: list[bool] | None = None, ce_logp: list[list[float]] | None = None,
                          ce_weight: float = 0.0) -> float:
    """Plain-Python twin of :func:`policy_loss` (ragged lists, one list per sequence; loss value only)."""
    seq_losses = []
    for lp, olp, slp, a in zip(logp, old_logp, sampler_logp, advantages):
        terms = []
        for x, o, s in zip(lp, olp, slp):
            r = math.exp(x - o)
            rc = min(max(r, 1.0 - eps_low), 1.0 + eps_high)
            w = min(math.exp(o - s), tis_cap)
            terms.append(-min(r * a, rc * a) * w)
        seq_losses.append(sum(terms) / max(1, len(terms)))
    loss = sum(seq_losses) / max(1, len(seq_losses))
    if ce_weight and correct is not None and ce_logp is not None:
        ces = [-sum(c) / max(1, len(c)) for c, ok in zip(ce_logp, correct) if ok]
        if ces:
            loss += ce_weight * sum(ces) / len(ces)
    return loss


# ============================================================================== batches and log-probs
@dataclass
class SeqBatch:
    """Right-padded prompt+completion sequences with every per-token tensor aligned to ``ids[:, 1:]``."""

    ids: torch.Tensor  # [B, L]
    attn: torch.Tensor  # [B, L]
    mask: torch.Tensor  # [B, L-1] 1 where the target token is a completion token
    sampler_logp: torch.Tensor  # [B, L-1]
    advantages: torch.Tensor  # [B]
    correct: torch.Tensor  # [B] bool

    def slice(self, idx: slice) -> "SeqBatch":
        return SeqBatch(self.ids[idx], self.attn[idx], self.mask[idx], self.sampler_logp[idx],
                        self.advantages[idx], self.correct[idx])

    def to(self, device: Any) -> "SeqBatch":
        return SeqBatch(*(t.to(device) for t in (self.ids, self.attn, self.mask, self.sampler_logp,
                                                  self.advantages, self.correct)))


def build_batch(groups: Sequence[Group], prompt_ids: Callable[[dict[str, Any]], list[int]], pad_id: int) -> SeqBatch:
    """One row per rollout of every group: prompt ids, then the sampled completion ids."""
    rows = []
    for g in groups:
        p = prompt_ids(g.problem)
        for c, a, ok in zip(g.rollouts, g.advantages, g.correct):
            rows.append((p, list(c.token_ids), [float(x) for x in c.logprobs], a, ok))
    width = max(len(p) + len(t) for p, t, *_ in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width - 1))
    slp = torch.zeros((n, width - 1))
    for i, (p, t, lp, _, _) in enumerate(rows):
        ids[i, :len(p) + len(t)] = torch.tensor(p + t, dtype=torch.long)
        attn[i, :len(p) + len(t)] = 1
        mask[i, len(p) - 1:len(p) - 1 + len(t)] = 1.0
        slp[i, len(p) - 1:len(p) - 1 + len(t)] = torch.tensor(lp[:len(t)])
    adv = torch.tensor([r[3] for r in rows], dtype=torch.float32)
    correct = torch.tensor([bool(r[4]) for r in rows])
    return SeqBatch(ids, attn, mask, slp, adv, correct)


def token_logprobs(model: torch.nn.Module, batch: SeqBatch, temperature: float, *, with_ce: bool,
                   with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-token log-prob of the target at ``temperature`` (the sampled distribution), optionally the
    log-prob at temperature 1 (CE term) and the entropy of the sampled distribution (logged)."""
    if getattr(getattr(model, "config", None), "model_type", "") == "falcon_h1":
        enable_packed_mamba()  # keeps training on transformers' split Mamba-2 path (see packed_mamba)
    out = model(input_ids=batch.ids, attention_mask=batch.attn, use_cache=False)
    logits = out.logits[:, :-1].float()
    target = batch.ids[:, 1:]
    lsm = torch.log_softmax(logits / temperature, dim=-1)
    logp = lsm.gather(-1, target[..., None])[..., 0]
    ce_logp = None
    if with_ce:
        ce_logp = torch.log_softmax(logits, dim=-1).gather(-1, target[..., None])[..., 0]
    ent = None
    if with_entropy:
        with torch.no_grad():
            ent = -(lsm.exp() * lsm).sum(-1)
    return logp, ce_logp, ent


# ============================================================================== one update
def grpo_update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, groups: Sequence[Group],
                recipe: RLRecipe, prompt_ids: Callable[[dict[str, Any]], list[int]], pad_id: int,
                device: Any) -> dict[str, float]:
    """One trainer step on a filled batch: pi_old recomputed, then ``mini_batches`` optimizer updates.

    With one mini-batch (the paper's setting) pi_old equals the parameters of the single update, so the
    forward that computes the gradient also gives pi_old (``old = logp.detach()``): same value, one
    forward fewer.
    """
    if not groups:
        return {"updated": 0.0}
    # eval mode on purpose: Falcon-H1 has no dropout, so the maths is the same, and in train mode transformers
    # takes mamba-ssm's fused conv+scan path, which needs the causal-conv1d CUDA extension (absent on the GPU
    # image); the unfused path (torch conv + Triton chunked scan) has autograd too.
    model.eval()
    full = build_batch(groups, prompt_ids, pad_id)
    n = full.ids.shape[0]
    G = len(groups[0].rollouts)
    # mini-batches split on group boundaries (a group's rollouts stay together)
    per_mb = max(1, math.ceil(len(groups) / recipe.mini_batches)) * G
    old_full = None
    if recipe.mini_batches > 1:
        old_full = torch.zeros_like(full.sampler_logp)
        with torch.no_grad():
            for s in range(0, n, recipe.micro_batch_seqs):
                mb = full.slice(slice(s, s + recipe.micro_batch_seqs)).to(device)
                lp, _, _ = token_logprobs(model, mb, recipe.temperature, with_ce=False, with_entropy=False)
                old_full[s:s + recipe.micro_batch_seqs] = lp.cpu()
    totals: dict[str, float] = {}
    tok_total = 0.0
    grad_norms = []
    for m0 in range(0, n, per_mb):
        mini = full.slice(slice(m0, m0 + per_mb))
        n_mini = mini.ids.shape[0]
        n_correct = int(mini.correct.sum())
        optimizer.zero_grad(set_to_none=True)
        for s in range(0, n_mini, recipe.micro_batch_seqs):
            sl = slice(s, s + recipe.micro_batch_seqs)
            mb = mini.slice(sl).to(device)
            with_ce = bool(recipe.ce_weight) and bool(mb.correct.any())
            logp, ce_logp, ent = token_logprobs(model, mb, recipe.temperature, with_ce=with_ce, with_entropy=True)
            old = logp.detach() if old_full is None else old_full[m0 + s:m0 + s + mb.ids.shape[0]].to(device)
            loss, st = policy_loss(logp, old, mb.sampler_logp, mb.advantages, mb.mask,
                                   eps_low=recipe.clip_eps_low, eps_high=recipe.clip_eps_high, tis_cap=recipe.tis_cap,
                                   correct=mb.correct, ce_logp=ce_logp, ce_weight=recipe.ce_weight, entropy=ent,
                                   entropy_coef=recipe.entropy_coef, n_seqs=n_mini, n_correct=n_correct)
            loss.backward()
            w = st["n_tokens"]
            tok_total += w
            for k, v in st.items():
                if k == "n_tokens":
                    continue
                if k in ("pg_loss", "ce_loss", "entropy"):  # already normalized to the mini-batch: sum
                    totals[k] = totals.get(k, 0.0) + v
                elif k == "is_ratio_min":
                    totals[k] = min(totals.get(k, v), v)
                elif k == "is_ratio_max":
                    totals[k] = max(totals.get(k, v), v)
                else:  # token-weighted means
                    totals[k] = totals.get(k, 0.0) + v * w
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)))
        optimizer.step()
    n_mb = max(1, math.ceil(n / per_mb))
    out = {}
    for k, v in totals.items():
        if k in ("pg_loss", "ce_loss", "entropy"):
            out[k] = v / n_mb
        elif k in ("is_ratio_min", "is_ratio_max"):
            out[k] = v
        else:
            out[k] = v / max(1.0, tok_total)
    out.update(grad_norm=sum(grad_norms) / len(grad_norms), updated=1.0, train_seqs=float(n))
    return out


# ============================================================================== sampling groups
def make_sample_fn(model: torch.nn.Module, tok: Any, recipe: RLRecipe, gen_cfg: GenerationConfig,
                   score: Callable[[list[dict[str, Any]], list[str]], list[RewardResult]], *,
                   seed: int, state: dict[str, Any], log: dict[str, list]) -> Callable[[list[dict]], list[Group]]:
    """``sample_fn(problems)``: one generation call of G rollouts per problem, graded, as Groups.

    ``state["gen_calls"]`` numbers the calls (it seeds each call, so a resumed run samples the same
    rollouts); ``state["step"]`` is the current policy version. Every rollout's reward, length and
    correctness goes to ``log`` (the step's training-dynamics record); the rewards of rollouts whose
    prompt this run generates for the first time also go to ``log["reward_first_seen"]`` (ids in
    ``state["seen_ids"]``): on a pool seen more than once, the reward on never-seen prompts separates a
    policy that improves on new problems from one that improves on the problems it has trained on.
    """
    G = recipe.group_size
    seen: set[str] = state.setdefault("seen_ids", set())

    def sample_fn(problems: list[dict[str, Any]]) -> list[Group]:
        prompts = [tok.prompt(p["question"]) for p in problems for _ in range(G)]
        call = state["gen_calls"]
        state["gen_calls"] = call + 1
        comps = generate(model, tok, prompts, gen_cfg, seed=seed * 1_000_003 + call, progress=False)
        flat = [p for p in problems for _ in range(G)]
        results = score(flat, ["<think>\n" + c.text for c in comps])
        groups = []
        for i, p in enumerate(problems):
            rs = results[i * G:(i + 1) * G]
            cs = comps[i * G:(i + 1) * G]
            rewards = [r.reward for r in rs]
            groups.append(Group(problem=p, rollouts=cs, rewards=rewards, correct=[r.correct for r in rs],
                                advantages=group_advantages(rewards, recipe.advantage_eps, recipe.advantage_std),
                                born_step=state["step"]))
        log["reward"] += [r.reward for r in results]
        for i, p in enumerate(problems):
            key = str(p.get("id", p["question"]))
            if key not in seen:
                seen.add(key)
                log.setdefault("reward_first_seen", []).extend(r.reward for r in results[i * G:(i + 1) * G])
                log["first_seen_prompts"] = log.get("first_seen_prompts", 0) + 1
        log["correct"] += [float(r.correct) for r in results]
        log["format_ok"] += [float(r.format_ok) for r in results]
        log["length"] += [c.num_tokens for c in comps]
        log["truncated"] += [float(c.finish_reason == "length") for c in comps]
        log["engine"] = [comps[0].meta.get("engine", "hf")] if comps else log.get("engine", [])
        return groups

    return sample_fn


# ============================================================================== evaluation
def heldout_eval(model: torch.nn.Module, tok: Any, problems: Sequence[dict[str, Any]], gen_cfg: GenerationConfig, *,
                 n_samples: int, pool: RewardPool, seed: int = 0, progress: bool = False) -> Any:
    """pass@1 over ``n_samples`` sampled answers per held-out problem (paper §4.1 protocol), graded with
    the reward pool (parallel, memoized sandbox) instead of one sandbox run after another."""
    from collections import Counter

    from falcon_h1r.evaluation import _aggregate

    prompts = [tok.prompt(p["question"]) for p in problems for _ in range(n_samples)]
    comps = generate(model, tok, prompts, gen_cfg, seed=seed, progress=progress, desc="held-out eval")
    flat = [p for p in problems for _ in range(n_samples)]
    results = pool.score(flat, ["<think>\n" + c.text for c in comps])
    per_problem = []
    for i, p in enumerate(problems):
        rs = results[i * n_samples:(i + 1) * n_samples]
        cs = comps[i * n_samples:(i + 1) * n_samples]
        per_problem.append({"id": p["id"], "domain": p["domain"], "difficulty": p["difficulty"],
                            "correct": sum(r.correct for r in rs), "n": n_samples,
                            "tokens": [c.num_tokens for c in cs], "answers": [r.extracted for r in rs],
                            "reasons": Counter(r.reason.split(":")[0] for r in rs)})
    return _aggregate(per_problem, n_samples)


# ============================================================================== a run
@dataclass
class RunResult:
    history: list[dict[str, Any]]  # one row per step: sampling bookkeeping, rewards, loss statistics
    evals: list[dict[str, Any]]  # {"step", "pass1", "pass1_<domain>", "pass1_ci95", ...}
    sampler: dict[str, float]  # BatchFiller.summary()
    wall_s: float
    steps: int
    resumed_from: int = 0


def _optimizer(model: torch.nn.Module, recipe: RLRecipe) -> tuple[torch.optim.Optimizer, Any]:
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(recipe.adam_beta1, recipe.adam_beta2),
                            eps=recipe.adam_eps, weight_decay=recipe.weight_decay)
    warm = recipe.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _sampler_model(model: torch.nn.Module, recipe: RLRecipe) -> torch.nn.Module:
    """The rollout engine's copy of the policy: the model itself, or a copy in ``sampler_dtype``."""
    want = DTYPES[recipe.sampler_dtype]
    if next(model.parameters()).dtype == want:
        return model
    return copy.deepcopy(model).to(want).eval()


@torch.no_grad()
def _sync_sampler(sampler: torch.nn.Module, model: torch.nn.Module) -> None:
    """Load the trainer's current weights into the sampler copy (a weight sync, as trainer -> vLLM)."""
    if sampler is model:
        return
    for dst, src in zip(sampler.parameters(), model.parameters()):
        dst.copy_(src)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def train_grpo(model: torch.nn.Module, tok: Any, pool: Sequence[dict[str, Any]], recipe: RLRecipe, *,
               gen_cfg: GenerationConfig, steps: int, seed: int = 0, device: Any = "cpu",
               reward_pool: RewardPool | None = None,
               score_fn: Callable[[list[dict[str, Any]], list[str]], list[RewardResult]] | None = None,
               eval_fn: Callable[[torch.nn.Module, int], dict[str, float]] | None = None,
               run_dir: str | Path | None = None, resume: bool = True,
               on_step_end: Callable[[int, dict[str, Any]], None] | None = None,
               progress: bool = True, desc: str = "grpo") -> RunResult:
    """GRPO on ``pool`` for ``steps`` steps with the recipe's online-sampling strategy.

    ``run_dir`` holds ``state.pt`` (model, optimizer, scheduler, sampler cache, prompt stream, history,
    counters), written atomically every ``recipe.save_every`` steps and at the end; with ``resume`` a
    run picks up from it and ends with the same metrics and weights as an uninterrupted run.
    ``eval_fn(model, step)`` runs every ``recipe.eval_every`` steps and after the last one.
    ``score_fn`` replaces the reward pool (tests use it to make rewards independent of skill).
    """
    from tqdm.auto import tqdm

    if score_fn is None:
        reward_pool = reward_pool or RewardPool(recipe.rewards)
        score_fn = reward_pool.score
    prompt_cache: dict[str, list[int]] = {}

    def prompt_ids(problem: dict[str, Any]) -> list[int]:
        q = problem["question"]
        if q not in prompt_cache:
            prompt_cache[q] = tok.encode(tok.prompt(q))
        return prompt_cache[q]

    opt, sched = _optimizer(model, recipe)
    sampler = _sampler_model(model, recipe)
    stream = PromptStream(pool, seed=seed)
    filler = BatchFiller(recipe.strategy, recipe.batch_prompts, recipe.gen_prompts_per_call, recipe.cache_size,
                         recipe.cache_max_age, recipe.max_gen_calls_per_step)
    state: dict[str, Any] = {"gen_calls": 0, "step": 0}
    history: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    start = 0
    wall_before = 0.0
    ckpt = Path(run_dir) / "state.pt" if run_dir is not None else None
    if ckpt is not None and resume and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        filler.load_state_dict(saved["sampler"])
        stream.load_state_dict(saved["stream"])
        state.update(saved["counters"])
        history, evals, start, wall_before = saved["history"], saved["evals"], saved["step"], saved["wall_s"]
        torch.set_rng_state(saved["torch_rng"])

    def save(step_done: int, wall: float) -> None:
        if ckpt is None:
            return
        _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      "sampler": filler.state_dict(), "stream": stream.state_dict(), "counters": dict(state),
                      "history": history, "evals": evals, "step": step_done, "wall_s": wall,
                      "torch_rng": torch.get_rng_state()}, ckpt)

    t0 = time.time()
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, leave=False, initial=start, total=steps)
    for step in bar:
        state["step"] = step
        log: dict[str, list] = {"reward": [], "correct": [], "format_ok": [], "length": [], "truncated": []}
        _sync_sampler(sampler, model)
        sample_fn = make_sample_fn(sampler, tok, recipe, gen_cfg, score_fn, seed=seed, state=state, log=log)
        t_gen = time.time()
        groups, st = filler.fill(stream, sample_fn, step)
        t_train = time.time()
        upd = grpo_update(model, opt, groups, recipe, prompt_ids, tok.pad_id, device)
        sched.step()
        row = {"step": step + 1, **st.as_dict(), **upd, "lr": sched.get_last_lr()[0],
               "reward_mean": _mean(log["reward"]), "accuracy": _mean(log["correct"]),
               # None (not NaN) when every prompt of the step had been generated before: rows stay comparable
               "reward_first_seen": _mean(log["reward_first_seen"]) if log.get("reward_first_seen") else None,
               "first_seen_prompts": log.get("first_seen_prompts", 0),
               "batch_reward_mean": _mean([r for g in groups for r in g.rewards]),
               "format_ok_frac": _mean(log["format_ok"]), "response_len_mean": _mean(log["length"]),
               "truncated_frac": _mean(log["truncated"]), "batch_groups": len(groups),
               "sampler_engine": (log.get("engine") or ["none"])[0], "sampler_dtype": recipe.sampler_dtype,
               "trainer_dtype": recipe.trainer_dtype,
               "gen_s": t_train - t_gen, "train_s": time.time() - t_train}
        if eval_fn is not None and ((recipe.eval_every and (step + 1) % recipe.eval_every == 0) or step + 1 == steps):
            evals.append({"step": step + 1, **eval_fn(model, step + 1)})
        history.append(row)
        bar.set_postfix(reward=f"{row['reward_mean']:.2f}", groups=len(groups))
        if (step + 1) % recipe.save_every == 0 or step + 1 == steps:
            save(step + 1, wall_before + time.time() - t0)
        if on_step_end is not None:
            on_step_end(step + 1, row)
    bar.close()
    model.eval()
    return RunResult(history, evals, filler.summary(), wall_before + time.time() - t0, steps, resumed_from=start)


# ============================================================================== security: attacks in a training step
def attack_training_step(model: torch.nn.Module, tok: Any, recipe: RLRecipe, *, device: Any = "cpu",
                         names: Sequence[str] | None = None, grace_s: float = 1.0) -> dict[str, Any]:
    """Run the sandbox's adversarial suite THROUGH the code reward inside one GRPO training step.

    Each attack (``falcon_h1r.sandbox.ATTACKS``) becomes the code answer of one rollout of a group whose
    other rollouts are a benign correct answer and a benign wrong one, so the group is informative and the
    step really updates the model on the attack rollouts. Afterwards every attack must have reward 0 with a
    reason of its expected class, and the host must be unaffected: canary files intact, nothing written
    outside, the loopback listener never contacted, the secret never echoed, no new process of the
    sandbox user left, the parent's open files unchanged, and the training step finite.
    Returns ``{"rows": [...], "attacks_tried", "escapes", "unexpected_reasons", "step": {...}}``.
    """
    import secrets
    import shutil
    import socket
    import tempfile

    from falcon_h1r import sandbox

    chosen = list(sandbox.ATTACKS) if names is None else list(names)
    unknown = [n for n in chosen if n not in sandbox.ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; accepted: {sorted(sandbox.ATTACKS)}")
    scratch = tempfile.mkdtemp(prefix="falcon_h1r_rl_attacks_")
    secret_name = "FALCON_H1R_RL_SECRET"
    os.environ[secret_name] = "s3cr3t-" + secrets.token_hex(8)
    secret = os.environ[secret_name]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    nobody_before = _uid_processes(sandbox.NOBODY_UID)
    fds_before = len(os.listdir("/proc/self/fd"))
    params_before = [p.detach().clone() for p in model.parameters()]
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        canaries, outsides, problems, texts = {}, {}, [], []
        for name in chosen:
            canary = os.path.join(scratch, f"canary_{name}.txt")
            canaries[name] = (canary, f"canary {secrets.token_hex(8)}\n")
            Path(canary).write_text(canaries[name][1])
            outsides[name] = os.path.join(tempfile.gettempdir(), f"falcon_h1r_rl_escape_{secrets.token_hex(8)}")
            code = (sandbox.ATTACKS[name].replace("__CANARY__", canary).replace("__OUTSIDE__", outsides[name])
                    .replace("__PORT__", str(port)).replace("__SECRET_NAME__", secret_name))
            prob = {"id": f"attack-{name}", "domain": "code", "difficulty": 0, "language": "python",
                    "question": "Write a Python function solve(x) that returns x.", "answer": "",
                    "tests": ["assert ESCAPED"]}
            problems.append(prob)
            texts.append(f"<think>\nI will write the function.\n</think>\n```python\n{code}```")
        benign_ok = "<think>\nSet the flag.\n</think>\n```python\nESCAPED = True\n```"
        benign_bad = "<think>\nLeave it unset.\n</think>\n```python\nESCAPED = False\n```"
        pool = RewardPool(recipe.rewards)
        t0 = time.time()
        attack_results = pool.score(problems, texts, memo=False)
        benign = pool.score([problems[0], problems[0]], [benign_ok, benign_bad], memo=False)
        grade_s = time.time() - t0
        # one training step on groups [attack, benign correct, benign wrong]
        groups = []
        for prob, text, res in zip(problems, texts, attack_results):
            members = [(text, res), (benign_ok, benign[0]), (benign_bad, benign[1])]
            comps = [_completion_from_text(tok, t) for t, _ in members]
            rewards = [r.reward for _, r in members]
            groups.append(Group(problem=prob, rollouts=comps, rewards=rewards, correct=[r.correct for _, r in members],
                                advantages=group_advantages(rewards, recipe.advantage_eps, recipe.advantage_std),
                                born_step=0))
        _fill_sampler_logprobs(model, tok, groups, recipe, device)
        opt, _ = _optimizer(model, replace(recipe, warmup_steps=0))
        step_stats = grpo_update(model, opt, groups, replace(recipe, mini_batches=1), lambda p: tok.encode(tok.prompt(p["question"])),
                                 tok.pad_id, device)
        time.sleep(grace_s)
        listener_ok = not sandbox.listener_was_contacted(listener)
        left = sorted(set(_uid_processes(sandbox.NOBODY_UID)) - set(nobody_before))
        params_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
        changed = any(not torch.equal(a, b.detach()) for a, b in zip(params_before, model.parameters()))
        rows = []
        for name, res in zip(chosen, attack_results):
            reason = res.reason[len("tests_failed: "):] if res.reason.startswith("tests_failed: ") else res.reason
            expected = sandbox.ATTACK_EXPECTED[name]
            canary, text = canaries[name]
            canary_ok = Path(canary).exists() and Path(canary).read_text() == text
            outside_ok = not os.path.lexists(outsides[name])
            if not outside_ok:
                os.remove(outsides[name])
            host = {"reward_zero": res.reward <= 0 and not res.correct, "canary_intact": canary_ok,
                    "no_file_outside": outside_ok, "secret_not_echoed": secret not in res.reason}
            rows.append({"name": name, "reward": res.reward, "reason": reason, "expected": list(expected),
                         "expected_reason": any(r.startswith(e) for e in expected for r in (reason, res.reason)), **host,
                         "escaped": not all(host.values())})
        shared = {"loopback_untouched": listener_ok, "no_leftover_processes": not left,
                  "parent_fds_stable": len(os.listdir("/proc/self/fd")) == fds_before,
                  "training_step_finite": params_finite and math.isfinite(step_stats.get("pg_loss", 0.0)),
                  "model_updated": changed, "benign_correct_rewarded": benign[0].correct and not benign[1].correct}
        escapes = sum(r["escaped"] for r in rows) + sum(not v for k, v in shared.items()
                                                        if k in ("loopback_untouched", "no_leftover_processes"))
        return {"rows": rows, "attacks_tried": len(rows), "escapes": escapes,
                "unexpected_reasons": sum(not r["expected_reason"] for r in rows), "shared_checks": shared,
                "leftover_pids": left, "grade_wall_s": grade_s, "step": step_stats}
    finally:
        listener.close()
        os.environ.pop(secret_name, None)
        shutil.rmtree(scratch, ignore_errors=True)


def _uid_processes(uid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    with open(f"/proc/{name}/stat", "rb") as f:
                        if f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X"):
                            out.append(int(name))
            except (OSError, IndexError):
                continue
    return out


def _completion_from_text(tok: Any, text: str) -> Completion:
    """A Completion for a given full assistant turn (used for injected rollouts; log-probs filled later)."""
    import numpy as np

    body = text[len("<think>\n"):] if text.startswith("<think>\n") else text
    ids = tok.encode(body) + [tok.eos_id]
    return Completion(prompt_index=0, text=body, token_ids=ids, logprobs=np.zeros(len(ids), dtype=np.float32),
                      top_logprobs=np.zeros((len(ids), 1), dtype=np.float32), top_ids=np.zeros((len(ids), 1), dtype=np.int32),
                      finish_reason="eos")


@torch.no_grad()
def _fill_sampler_logprobs(model: torch.nn.Module, tok: Any, groups: Sequence[Group], recipe: RLRecipe, device: Any) -> None:
    """Injected rollouts were not sampled: use the trainer's own log-probs as the sampler's (TIS weight 1)."""
    batch = build_batch(groups, lambda p: tok.encode(tok.prompt(p["question"])), tok.pad_id)
    i = 0
    for g in groups:
        for c in g.rollouts:
            row = batch.slice(slice(i, i + 1)).to(device)
            lp, _, _ = token_logprobs(model, row, recipe.temperature, with_ce=False, with_entropy=False)
            vals = lp[0][row.mask[0].bool()].float().cpu().numpy()
            c.logprobs[:] = vals[:len(c.logprobs)]
            i += 1


# ============================================================================== curricula and the section's experiment
def heldout_problems(sets: dict[str, list[dict[str, Any]]], recipe: RLRecipe) -> list[dict[str, Any]]:
    """The first ``rl.eval_problems_per_domain`` test problems of each domain (never an RL or SFT problem)."""
    per, seen, out = recipe.eval_problems_per_domain, {}, []
    for p in sets["test"]:
        if seen.get(p["domain"], 0) < per:
            out.append(p)
            seen[p["domain"]] = seen.get(p["domain"], 0) + 1
    return out


def fresh_copy(model: torch.nn.Module, dtype: str | None = None) -> torch.nn.Module:
    """A trainable copy of the base model (every curriculum starts from the same SFT checkpoint), in the
    trainer's dtype (fp32 master weights: a 1e-6 update vanishes in bf16 weights)."""
    m = copy.deepcopy(model)
    return m.to(DTYPES[dtype]) if dtype else m


class PoolBuilder:
    """RL prompt pools from the curation stage (``falcon_h1r.curation``, paper §3.1), per domain.

    Candidates are the first ``rl.pool_per_domain`` problems of curation's held-out "rl" split (never a
    test question; SFT duplicates and unverifiable problems removed by ``curation.select_rl_pool``).
    Pass rates come from ``curation.estimate_pass_rates`` (the curation recipe's k rollouts, paper: 8
    at T 0.6 / top-p 0.95) of the checkpoint that starts a stage, and curation's rules decide (k/k
    dropped, partly solved kept, 0/k by truncation and majority answer). The same candidates are
    re-measured before a later stage (math -> code: code against the math checkpoint).
    """

    def __init__(self, preset: Preset, sets: dict[str, list[dict[str, Any]]], recipe: RLRecipe, *, seed: int,
                 progress: bool = False):
        from falcon_h1r import curation

        self.curation = curation
        self.preset, self.sets, self.recipe, self.seed, self.progress = preset, sets, recipe, seed, progress
        self.cr = curation.load_recipe(preset)
        if recipe.pool_per_domain:
            self.cr = replace(self.cr, rl_pool_per_domain=recipe.pool_per_domain)
        self.gen = replace(preset.generation, temperature=self.cr.pass_rate_temperature, top_p=self.cr.pass_rate_top_p,
                           max_new_tokens=self.cr.pass_rate_max_new_tokens or preset.generation.max_new_tokens)
        self.grade_kw = {"use_math_verify": self.cr.use_math_verify, "code_timeout_s": self.cr.code_timeout_s,
                         "math_verify_timeout_s": self.cr.math_verify_timeout_s,
                         "code_batch_size": self.cr.code_batch_size, "code_workers": self.cr.code_workers}
        self._candidates: dict[str, list[dict[str, Any]]] = {}

    def candidates(self, domain: str) -> list[dict[str, Any]]:
        if domain not in self._candidates:
            self._candidates[domain] = self.curation.rl_candidates(self.preset, replace(self.cr, rl_domains=[domain]),
                                                                   self.sets)
        return self._candidates[domain]

    def measure(self, model: torch.nn.Module, tok: Any, domain: str, *, tag: str) -> tuple[list[dict[str, Any]], dict]:
        """Curation's selection of ``domain`` candidates against ``model``: (kept problems, report row)."""
        c = self.curation

        def rates_fn(problems):
            return c.estimate_pass_rates(model, tok, problems, self.gen, k=self.cr.pass_rate_k, seed=self.seed,
                                         progress=self.progress, **self.grade_kw)

        cur = c.select_rl_pool(self.candidates(domain), rates_fn, self.cr,
                               sft_questions=[p["question"] for p in self.sets["train"]],
                               eval_questions=[p["question"] for p in self.sets["test"]], seed=self.seed)
        kept = cur.problems[:self.recipe.pool_per_domain] if self.recipe.pool_per_domain else cur.problems
        report = self._report(cur, domain, tag)
        if len(kept) < self.recipe.batch_prompts:
            # The rules left less than one batch (at small scale the "every rollout truncated" rule can
            # empty a domain): train on every rated candidate instead, and say so in the report.
            rated = {r.id for r in cur.rates}
            kept = [p for p in self.candidates(domain) if p["id"] in rated]
            report["fallback_all_rated"] = True
        report["used"] = len(kept)
        return kept, report

    def from_base(self, model: torch.nn.Module, tok: Any, domains: Sequence[str], *,
                  cache: str | Path | None = None) -> tuple[dict[str, list], list[dict]]:
        """Every domain's pool measured against the SFT base (read from / written to ``cache`` if given)."""
        saved = _read_cache(cache)
        if saved is not None and set(domains) <= set(saved["pools"]):
            return {d: saved["pools"][d] for d in domains}, [r for r in saved["reports"] if r["domain"] in domains]
        pools, reports = {}, []
        for d in domains:
            pools[d], rep = self.measure(model, tok, d, tag="SFT base")
            reports.append(rep)
        _write_cache(cache, {"pools": pools, "reports": reports})
        return pools, reports

    @staticmethod
    def _report(cur: Any, domain: str, tag: str) -> dict[str, Any]:
        from collections import Counter

        from falcon_h1r.curation import RL_DECISIONS

        ids = {r.id for r in cur.rates if r.domain == domain}
        decisions = Counter(v for k, v in cur.decisions.items() if k in ids)
        hist = Counter(r.correct for r in cur.rates if r.domain == domain)
        kept = sum(1 for p in cur.problems if p["domain"] == domain)
        return {"domain": domain, "measured_on": tag, "rated": len(ids), "kept": kept, "fallback_all_rated": False,
                "k": cur.k,
                "pass_rate_mean": _mean([r.pass_rate for r in cur.rates if r.domain == domain]),
                **{f"decision_{d}": decisions.get(d, 0) for d in RL_DECISIONS},
                **{f"hist_{i}": hist.get(i, 0) for i in range(cur.k + 1)}}


def run_curriculum(name: str, base: torch.nn.Module, tok: Any, pools: dict[str, list[dict[str, Any]]],
                   recipe: RLRecipe, *, builder: PoolBuilder, gen_cfg: GenerationConfig,
                   eval_gen_cfg: GenerationConfig, heldout: Sequence[dict[str, Any]], reward_pool: RewardPool,
                   seed: int, device: Any, run_root: str | Path | None = None, progress: bool = True,
                   stage_cache: dict[tuple, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train one Table 3 curriculum from the SFT base; evaluate on the held-out set after each stage
    (and every ``eval_every`` steps).

    ``pools`` are the domains' pools measured against the SFT base (:meth:`PoolBuilder.from_base`); a
    later stage re-measures its domains against the checkpoint that starts it (for math -> code, the
    re-measurement of code difficulty after math) with ``builder``. ``stage_cache`` (shared between
    calls) lets a curriculum whose first stages equal another's reuse them: math -> code starts from
    the math-only run (same start, pool, seed and steps: the same computation, done once).
    """
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r}; accepted: {list(CURRICULA)}")
    plan = CURRICULA[name]
    model = fresh_copy(base, recipe.trainer_dtype).to(device)
    stages, history, evals, runs, offset, start = [], [], [], [], 0, 0
    if stage_cache is not None:
        for n in range(len(plan), 0, -1):
            hit = stage_cache.get(tuple(plan[:n]))
            if hit is not None:
                model.load_state_dict(hit["state"])
                stages = [{**st, "reused_from": hit["name"]} for st in hit["stages"]]
                history, evals, runs = list(hit["history"]), list(hit["evals"]), list(hit["runs"])
                start, offset = n, n * recipe.steps
                break
    for s_i in range(start, len(plan)):
        domains = plan[s_i]
        reports = []
        run_dir = Path(run_root) / name / f"stage{s_i + 1}" if run_root is not None else None
        saved = _read_cache(run_dir / "pool.json" if run_dir else None)
        if s_i == 0:
            problems = [p for d in domains for p in pools[d]]
        elif saved is not None:  # a resumed stage trains on the pool it was measured with
            problems, reports = saved["problems"], saved["reports"]
        else:
            problems = []
            for d in domains:
                kept, rep = builder.measure(model, tok, d, tag=f"{name} after stage {s_i}")
                problems += kept
                reports.append({**rep, "curriculum": name})
            _write_cache(run_dir / "pool.json" if run_dir else None, {"problems": problems, "reports": reports})
        if not problems:
            raise ValueError(f"curriculum {name} stage {s_i + 1}: no {'+'.join(domains)} candidates survived "
                             "validation and deduplication; raise rl.pool_per_domain")

        def eval_fn(m: torch.nn.Module, step: int, _off=offset, _s=s_i) -> dict[str, Any]:
            rep = heldout_eval(m, tok, heldout, eval_gen_cfg, n_samples=recipe.eval_samples, pool=reward_pool,
                               seed=seed + 7)
            return {"stage": _s + 1, "global_step": _off + step, **rep.flat(),
                    "mean_response_tokens": rep.mean_response_tokens, "per_problem": per_problem_rates(rep)}

        res = train_grpo(model, tok, problems, recipe, gen_cfg=gen_cfg, steps=recipe.steps, seed=seed + 1000 * s_i,
                         device=device, reward_pool=reward_pool, eval_fn=eval_fn, run_dir=run_dir,
                         progress=progress, desc=f"{name} stage {s_i + 1}")
        history += [{**r, "stage": s_i + 1, "global_step": offset + r["step"]} for r in res.history]
        evals += res.evals
        runs.append(res)
        stages.append({"stage": s_i + 1, "domains": "+".join(domains), "pool": len(problems),
                       "remeasured": "+".join(r["domain"] for r in reports), "pool_reports": reports,
                       **{f"sampler_{k}": v for k, v in res.sampler.items()}, "wall_s": res.wall_s})
        offset += recipe.steps
        if stage_cache is not None:
            stage_cache[tuple(plan[:s_i + 1])] = {
                "name": name, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "history": list(history), "evals": list(evals), "stages": list(stages), "runs": list(runs)}
    domains_all = sorted({p["domain"] for p in heldout})
    best = {d: max((e.get(f"pass1_{d}", float("nan")) for e in evals), default=float("nan")) for d in domains_all}
    final = {d: evals[-1].get(f"pass1_{d}", float("nan")) for d in domains_all} if evals else {}
    del model
    return {"name": name, "history": history, "evals": evals, "stages": stages, "best": best, "final": final,
            "runs": runs}


def _read_cache(path: str | Path | None) -> Any:
    import json

    if path is None or not Path(path).exists():
        return None
    return json.loads(Path(path).read_text())


def _write_cache(path: str | Path | None, obj: Any) -> None:
    from falcon_h1r.results import write_json

    if path is not None:
        write_json(Path(path), obj)


def cached(path: str | Path | None, compute: Callable[[], Any]) -> Any:
    """``compute()``, or its JSON result saved at ``path`` by an earlier (interrupted) run of the same recipe."""
    hit = _read_cache(path)
    if hit is not None:
        return hit
    value = compute()
    _write_cache(path, value)
    return value


def per_problem_rates(report: Any) -> dict[str, float]:
    """``{problem id: correct / n}`` of an EvalReport (the unit of the paired interval below)."""
    return {r["id"]: r["correct"] / r["n"] for r in report.per_problem}


def paired_difference(after: dict[str, float], before: dict[str, float],
                      ids: Sequence[str] | None = None) -> tuple[float, float, int]:
    """Mean per-problem pass-rate change and its 95 % half-width (normal approximation, paired by problem)."""
    keys = [k for k in (ids if ids is not None else after) if k in after and k in before]
    d = [after[k] - before[k] for k in keys]
    n = len(d)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(1, n - 1)
    return mean, 1.96 * math.sqrt(var / n), n


def compare_strategies(base: torch.nn.Module, tok: Any, pool: Sequence[dict[str, Any]], recipe: RLRecipe, *,
                       gen_cfg: GenerationConfig, reward_pool: RewardPool, seed: int, device: Any,
                       reuse: dict[str, RunResult] | None = None, run_root: str | Path | None = None,
                       progress: bool = True) -> list[dict[str, Any]]:
    """Each of ``recipe.strategies_compared`` trains ``strategy_steps`` steps on ``pool`` from the same SFT
    base with the same seed; one row per strategy with its sampling bookkeeping (see rollout_buffer).

    ``reuse`` maps a strategy to a run already made with these settings for at least ``strategy_steps``
    steps (the math-only curriculum is the backfill run): a run's first n steps do not depend on what
    follows, so its first ``strategy_steps`` records are that strategy's measurement.
    """
    rows = []
    for name in recipe.strategies_compared:
        res = (reuse or {}).get(name)
        reused = res is not None and len(res.history) >= recipe.strategy_steps
        if reused:
            h = res.history[:recipe.strategy_steps]
            sampler, wall = summarize(totals_from_rows(h), recipe.batch_prompts), sum(r["gen_s"] + r["train_s"] for r in h)
        else:
            model = fresh_copy(base, recipe.trainer_dtype).to(device)
            res = train_grpo(model, tok, pool, recipe.for_strategy(name), gen_cfg=gen_cfg, steps=recipe.strategy_steps,
                             seed=seed, device=device, reward_pool=reward_pool, progress=progress,
                             run_dir=Path(run_root) / f"strategy_{name}" if run_root is not None else None,
                             desc=f"strategy {name}")
            del model
            h, sampler, wall = res.history, res.sampler, res.wall_s
        rows.append({"strategy": name, **sampler, "wall_s": wall, "reused_run": reused,
                     "batch_groups_mean": _mean([r["batch_groups"] for r in h]),
                     "batch_groups_min": min(r["batch_groups"] for r in h),
                     "reward_mean_first": h[0]["reward_mean"], "reward_mean_last": h[-1]["reward_mean"],
                     "mean_staleness": _mean([r["mean_staleness"] for r in h]),
                     "is_ratio_max": max(r.get("is_ratio_max", 1.0) for r in h)})
    return rows


def gen_call_saving(rows: Sequence[dict[str, Any]], strategy: str = "backfill", baseline: str = "reject") -> float:
    """1 - (generation calls per filled batch of ``strategy``) / (the same of ``baseline``)."""
    by = {r["strategy"]: r for r in rows}
    if strategy not in by or baseline not in by:
        raise ValueError(f"need rows for {strategy!r} and {baseline!r}; have {sorted(by)}")
    return 1.0 - by[strategy]["gen_calls_per_filled_batch"] / by[baseline]["gen_calls_per_filled_batch"]


__all__ = ["CURRICULA", "PAPER_TABLE3_ROW", "RLRecipe", "RunResult", "SeqBatch", "attack_training_step",
           "PoolBuilder", "build_batch", "cached", "compare_strategies", "gen_call_saving", "paired_difference",
           "per_problem_rates", "grpo_update", "heldout_eval", "heldout_problems", "make_sample_fn",
           "policy_loss", "policy_loss_reference", "run_curriculum", "token_logprobs",
           "train_grpo"]
