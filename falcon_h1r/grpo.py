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

This module is the trainer only (the loss and its twin, batches, token log-probs, one update, the run with
kill-and-resume, and rollouts injected by hand); it knows nothing of presets, curricula or result folders.
Notebook 03's experiment (RL pools, Table 3 curricula, the strategy comparison, the sandbox attacks in a
training step) is :mod:`falcon_h1r.sections.rl`.
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

from falcon_h1r.config import GenerationConfig, RecipeError
# the rollout engine: the decode engine on GPU, transformers' loop on CPU (falcon_h1r.inference.generate)
from falcon_h1r.inference import Completion, generate
from falcon_h1r.packed_mamba import enable_packed_mamba
from falcon_h1r.prompts import as_prompt_builder
from falcon_h1r.rewards import RewardPool, RewardRecipe, RewardResult
from falcon_h1r.rollout_buffer import STRATEGIES, BatchFiller, Group, PromptStream, group_advantages

# ============================================================================== recipe
@dataclass
class RLRecipe:
    """The trainer's knobs: the ``rl`` block of a preset (the section's experiment sizes are the
    ``rl_experiments`` block, :class:`falcon_h1r.sections.rl.RLExperimentRecipe`).

    Defaults are the paper's values (Table 2, ``papers/table2_rl_hparams.yaml``) where it gives them; every
    other field says that the paper does not give it. Nothing is left to a library default.
    """

    # ---- rollouts (paper Table 2)
    group_size: int = 16  # G, rollouts per prompt. Table 2: 16 (ablated 4, 8, 16, 32)
    temperature: float = 0.85  # rollout sampling temperature. Table 2: 0.85
    top_p: float = 1.0  # rollout nucleus. Not stated; 1.0 keeps the sampler's distribution equal to the trainer's
    max_new_tokens: int = 49152  # max response length. Table 2: 48K (K read as 1024; 24K ablated, 48K from the start best)
    # ---- batches (paper Table 2)
    batch_prompts: int = 128  # prompts per train batch. Table 2: train batch 128 (the unit is not stated; read as prompts)
    mini_batches: int = 1  # optimizer updates per batch. Table 2: PPO mini-batch 128 = train batch -> 1
    micro_batch_seqs: int = 16  # sequences per forward/backward (gradient accumulation: memory only, same maths)
    # ---- optimizer
    lr: float = 2e-6  # AdamW learning rate. Table 2: 2e-6
    warmup_steps: int = 10  # linear warm-up steps. Table 2: linear, 10 steps
    lr_after_warmup: Literal["constant"] = "constant"  # schedule after warm-up. Not stated; constant
    weight_decay: float = 0.01  # AdamW weight decay. Not stated for RL; the SFT value (Table 1)
    adam_beta1: float = 0.9  # not stated
    adam_beta2: float = 0.999  # not stated
    adam_eps: float = 1e-8  # not stated
    grad_clip: float = 1.0  # max gradient norm. Not stated for RL; the SFT value (Table 1)
    # ---- GRPO objective (paper Table 2)
    clip_eps_low: float = 0.2  # ratio clipped below at 1 - eps_low. Table 2: clip ratio low 0.2
    clip_eps_high: float = 0.28  # ratio clipped above at 1 + eps_high. Table 2: clip-higher (DAPO) 0.28
    kl_coef: float = 0.0  # KL penalty. Table 2: 0, the KL term removed (so no reference model is loaded)
    entropy_coef: float = 0.0  # entropy bonus. Table 2: 0
    tis_cap: float = 2.0  # truncated importance sampling cap on pi_old / pi_sampler. Table 2: 2
    ce_weight: float = 0.1  # CE loss on correct samples. Table 2: the term is used; its weight is NOT given (ours)
    advantage_eps: float = 1e-6  # floor in (R - mean) / (std + eps). Not stated
    advantage_std: Literal["unbiased", "population"] = "unbiased"  # Table 2: (R - mean) / std; torch.std as in verl
    loss_aggregation: Literal["seq_mean_group_mean"] = "seq_mean_group_mean"  # Table 2: 1/|o_i|, then 1/G
    # ---- online sampling of zero-advantage groups (paper §3, papers/rl_sampling_strategies.yaml)
    strategy: str = "backfill"  # backfill, reject or duplicate. §3: backfill chosen (the other two compared)
    gen_prompts_per_call: int = 128  # prompts per generation call. Not stated (= the train batch)
    cache_size: int = 128  # groups kept in the bounded generation cache. §3: bounded; size NOT given
    cache_max_age: int = 2  # steps before a cached group expires (0 = never). §3: optional refresh; period NOT given
    max_gen_calls_per_step: int = 8  # stops a step on a pool of all-solved prompts. Not in the paper
    rewards: RewardRecipe = field(default_factory=RewardRecipe)  # the ``rl.rewards`` block (falcon_h1r.rewards)
    # ---- the run
    eval_every: int = 25  # eval_fn every n steps (and after the last); 0 = after the last only. Not given
    save_every: int = 10  # run state saved every n steps and at the end (kill and resume). Not given
    trainer_dtype: Literal["float32", "bfloat16"] = "float32"  # not stated; fp32 master weights (verl's FSDP default)
    sampler_dtype: Literal["float32", "bfloat16"] = "float32"  # not stated; "bfloat16" samples from a bf16 copy (vLLM-like)
    # auto: the fused kernels on CUDA where installed (as sft.kernels: causal-conv1d, mamba-ssm's scan, Liger RoPE/
    # RMSNorm/SwiGLU and fused linear cross-entropy for the log-probs); plain: PyTorch ops only; no_liger: auto
    # without Liger
    kernels: Literal["auto", "plain", "no_liger"] = "auto"

    def __post_init__(self) -> None:
        ints = ("group_size", "max_new_tokens", "batch_prompts", "mini_batches", "micro_batch_seqs",
                "gen_prompts_per_call", "max_gen_calls_per_step", "save_every")
        for name in ints:
            if getattr(self, name) < 1:
                raise RecipeError(f"rl.{name}: must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise RecipeError(f"rl.group_size: GRPO needs at least 2 rollouts per prompt, got {self.group_size}")
        for name in ("warmup_steps", "cache_size", "cache_max_age", "eval_every"):
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
        if self.kernels not in ("auto", "plain", "no_liger"):
            raise RecipeError(f"rl.kernels: {self.kernels!r} not accepted; use auto, plain or no_liger")
        if self.strategy not in STRATEGIES:
            raise RecipeError(f"rl.strategy: {self.strategy!r} not accepted; use one of {list(STRATEGIES)}")

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
                   with_entropy: bool, kernels: str = "auto") -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-token log-prob of the target at ``temperature`` (the sampled distribution), optionally the
    log-prob at temperature 1 (CE term) and the entropy of the sampled distribution (logged).
    ``kernels`` (``RLRecipe.kernels``): as :func:`falcon_h1r.sft.token_losses`; with Liger's fused linear
    cross-entropy the log-probs come from the last hidden states (no ``[B, T, V]`` logits) and the logged
    entropy is computed in chunks without gradient."""
    from falcon_h1r.kernels import fused_token_logprobs, training_kernels
    from falcon_h1r.packed_mamba import mamba_kernels

    if getattr(getattr(model, "config", None), "model_type", "") == "falcon_h1":
        enable_packed_mamba()  # keeps training on transformers' split Mamba-2 path (see packed_mamba)
    chosen = training_kernels(model, kernels)
    target = batch.ids[:, 1:]
    kw = {"input_ids": batch.ids, "attention_mask": batch.attn}
    with mamba_kernels(chosen.mamba_kernels):
        if chosen.fused_linear_cross_entropy:
            return fused_token_logprobs(model, kw, target, temperature, with_ce=with_ce, with_entropy=with_entropy)
        out = model(**kw, use_cache=False)
    logits = out.logits[:, :-1].float()
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
                lp, _, _ = token_logprobs(model, mb, recipe.temperature, with_ce=False, with_entropy=False,
                                          kernels=recipe.kernels)
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
            logp, ce_logp, ent = token_logprobs(model, mb, recipe.temperature, with_ce=with_ce, with_entropy=True,
                                                kernels=recipe.kernels)
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

    # the one prompt builder (a checkpoint's own chat template at the paper preset, stage "rl"); rewards read
    # whole assistant turns, the thinking the prompt opened put back in front
    builder = as_prompt_builder(tok)
    full = builder.full_response if builder is not None else "<think>\n".__add__

    def sample_fn(problems: list[dict[str, Any]]) -> list[Group]:
        prompts = (builder.prompts(problems, G, stage="rl") if builder is not None
                   else [tok.prompt(p["question"]) for p in problems for _ in range(G)])
        call = state["gen_calls"]
        state["gen_calls"] = call + 1
        t_decode = time.time()
        comps = generate(model, tok, prompts, gen_cfg, seed=seed * 1_000_003 + call, progress=False)
        t_score = time.time()
        flat = [p for p in problems for _ in range(G)]
        results = score(flat, [full(c.text) for c in comps])
        # where a step's generation time goes (decode or grading), for the step record and the progress bar
        log.setdefault("decode_s", []).append(t_score - t_decode)
        log.setdefault("score_s", []).append(time.time() - t_score)
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


# ============================================================================== a run
@dataclass
class RunResult:
    history: list[dict[str, Any]]  # one row per step: sampling bookkeeping, rewards, loss statistics
    evals: list[dict[str, Any]]  # {"step", "pass1", "pass1_<domain>", "pass1_ci95", ...}
    sampler: dict[str, float]  # BatchFiller.summary()
    wall_s: float
    steps: int  # steps done (fewer than asked when a deadline stopped the run: see ``complete``)
    resumed_from: int = 0
    complete: bool = True  # False when ``deadline`` stopped the run early; its state is saved, call again to resume


def make_optimizer(model: torch.nn.Module, recipe: RLRecipe) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with the recipe's values and its linear warm-up, then a constant rate (Table 2)."""
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(recipe.adam_beta1, recipe.adam_beta2),
                            eps=recipe.adam_eps, weight_decay=recipe.weight_decay)
    warm = recipe.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def fresh_copy(model: torch.nn.Module, dtype: str | None = None) -> torch.nn.Module:
    """A trainable copy of the base model (every curriculum starts from the same SFT checkpoint), in the
    trainer's dtype (fp32 master weights: a 1e-6 update vanishes in bf16 weights)."""
    m = copy.deepcopy(model)
    return m.to(DTYPES[dtype]) if dtype else m


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
               progress: bool = True, desc: str = "grpo", deadline: float | None = None) -> RunResult:
    """GRPO on ``pool`` for ``steps`` steps with the recipe's online-sampling strategy.

    ``run_dir`` holds ``state.pt`` (model, optimizer, scheduler, sampler cache, prompt stream, history,
    counters), written atomically every ``recipe.save_every`` steps and at the end; with ``resume`` a
    run picks up from it and ends with the same metrics and weights as an uninterrupted run.
    ``eval_fn(model, step)`` runs every ``recipe.eval_every`` steps and after the last one.
    ``score_fn`` replaces the reward pool (tests use it to make rewards independent of skill).
    ``deadline`` (a ``time.time()`` value): past it, the run saves its state after the current step and returns
    with ``complete`` False (a time-limited piece of a longer run; the next call with ``resume`` continues).
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

    opt, sched = make_optimizer(model, recipe)
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
               "gen_s": t_train - t_gen, "decode_s": sum(log.get("decode_s", [])),
               "score_s": sum(log.get("score_s", [])), "train_s": time.time() - t_train}
        if eval_fn is not None and ((recipe.eval_every and (step + 1) % recipe.eval_every == 0) or step + 1 == steps):
            evals.append({"step": step + 1, **eval_fn(model, step + 1)})
        history.append(row)
        bar.set_postfix(reward=f"{row['reward_mean']:.2f}", groups=len(groups), calls=row.get("gen_calls"),
                        decode_s=round(row["decode_s"]), score_s=round(row["score_s"]), train_s=round(row["train_s"]))
        if (step + 1) % recipe.save_every == 0 or step + 1 == steps:
            save(step + 1, wall_before + time.time() - t0)
        if on_step_end is not None:
            on_step_end(step + 1, row)
        if deadline is not None and step + 1 < steps and time.time() > deadline:
            save(step + 1, wall_before + time.time() - t0)
            bar.close()
            model.eval()
            return RunResult(history, evals, filler.summary(), wall_before + time.time() - t0, step + 1,
                             resumed_from=start, complete=False)
    bar.close()
    model.eval()
    return RunResult(history, evals, filler.summary(), wall_before + time.time() - t0, steps, resumed_from=start)


# ============================================================================== rollouts given by hand
def completion_from_text(tok: Any, text: str) -> Completion:
    """A Completion for a given full assistant turn (an injected rollout; log-probs filled later by
    :func:`fill_sampler_logprobs`)."""
    import numpy as np

    body = text[len("<think>\n"):] if text.startswith("<think>\n") else text
    ids = tok.encode(body) + [tok.eos_id]
    return Completion(prompt_index=0, text=body, token_ids=ids, logprobs=np.zeros(len(ids), dtype=np.float32),
                      top_logprobs=np.zeros((len(ids), 1), dtype=np.float32), top_ids=np.zeros((len(ids), 1), dtype=np.int32),
                      finish_reason="eos")


@torch.no_grad()
def fill_sampler_logprobs(model: torch.nn.Module, tok: Any, groups: Sequence[Group], recipe: RLRecipe, device: Any) -> None:
    """Injected rollouts were not sampled: use the trainer's own log-probs as the sampler's (TIS weight 1)."""
    batch = build_batch(groups, lambda p: tok.encode(tok.prompt(p["question"])), tok.pad_id)
    i = 0
    for g in groups:
        for c in g.rollouts:
            row = batch.slice(slice(i, i + 1)).to(device)
            lp, _, _ = token_logprobs(model, row, recipe.temperature, with_ce=False, with_entropy=False,
                                      kernels=recipe.kernels)
            vals = lp[0][row.mask[0].bool()].float().cpu().numpy()
            c.logprobs[:] = vals[:len(c.logprobs)]
            i += 1



__all__ = ["DTYPES", "RLRecipe", "RunResult", "SeqBatch", "build_batch", "completion_from_text", "fill_sampler_logprobs",
           "fresh_copy", "grpo_update", "make_optimizer", "make_sample_fn", "policy_loss", "policy_loss_reference", "token_logprobs",
           "train_grpo"]
