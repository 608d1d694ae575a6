"""Checks of the decode engine against transformers on the same weights (``bench/engine_check.py`` and the
tests use them): identical greedy tokens, and each path's recorded log-probs against a full forward."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from falcon_h1r.inference import engine_pool, hf_loop
from falcon_h1r.inference.sampling import left_pad


@torch.no_grad()
def teacher_forced_logprobs(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]],
                            generated: Sequence[Sequence[int]], pad_id: int) -> list[torch.Tensor]:
    """transformers' full-forward raw log-probs [T_i, V] at each generated position of each row."""
    seqs = [list(p) + list(g) for p, g in zip(prompt_ids, generated)]
    ids, mask = left_pad(seqs, pad_id)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float(), dim=-1)
    width = ids.shape[1]
    out = []
    for i, (p, g) in enumerate(zip(prompt_ids, generated)):
        start = width - len(seqs[i]) + len(p) - 1
        out.append(logp[i, start:start + len(g)].cpu())
    return out


def _error_stats(rows: list[dict[str, Any]], full: list[torch.Tensor], tol: float) -> tuple[float, float, float]:
    """Largest and mean |recorded top-k log-prob - full-forward log-prob|, and the share of tokens that are
    the full forward's argmax up to ``tol``, for rows decoded by one path."""
    worst, total, entries, ok, n = 0.0, 0.0, 0, 0, 0
    for row, lp in zip(rows, full):
        if not len(row["token_ids"]):
            continue
        ref_top = lp.gather(-1, torch.as_tensor(row["top_ids"], dtype=torch.long))
        err = (ref_top - torch.as_tensor(row["top_logprobs"])).abs()
        worst = max(worst, float(err.max()))
        total, entries = total + float(err.double().sum()), entries + err.numel()
        chosen = lp.gather(-1, torch.as_tensor(row["token_ids"])[:, None])[:, 0]
        ok += int((chosen >= lp.max(-1).values - tol).sum())
        n += len(row["token_ids"])
    return worst, total / entries if entries else 0.0, ok / n if n else 1.0


def _against_full_forward(rows: list[dict[str, Any]], full: list[torch.Tensor], tol: float) -> tuple[float, float]:
    """Largest |recorded top-k log-prob - full-forward log-prob| and the share of tokens that are the
    full forward's argmax up to ``tol``, for rows decoded by one path."""
    worst, _, argmax = _error_stats(rows, full, tol)
    return worst, argmax


@torch.no_grad()
def compare_with_hf(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                    eos_id: int, pad_id: int, top_k: int = 20, cuda_graph: bool | None = None,
                    greedy_tol: float = 1e-3, truth_model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Greedy decode with the engine and with transformers' cached loop on the same weights.

    Reports whether the tokens are identical and the largest log-prob gaps on the common prefix; and a
    divergence-proof check for each path: its recorded top-k log-probs against transformers' full forward over
    its own tokens (``max_abs_top_logprob_diff_teacher_forced`` for the engine, ``hf_...`` for transformers'
    cached loop, the baseline: in bf16 transformers' own cached decoding already differs from its full forward),
    and the share of its tokens that are the full forward's argmax up to ``greedy_tol``.

    ``truth_model``: the same weights in float32 (e.g. ``copy.deepcopy(model).float()``). In bf16 the full
    forward is not the truth either, and transformers' cached loop shares its kernels and rounding order, so
    agreeing with it favours that loop; with a truth model both paths' tokens are also scored against exact
    arithmetic (``*_vs_fp32``: mean and max |top-k log-prob error|, share of tokens that are its argmax).
    """
    was_training = model.training
    model.eval()
    try:
        t0 = time.perf_counter()
        fast = engine_pool.generate_ids(model, prompt_ids, eos_id=eos_id, pad_id=pad_id, temperature=0.0, top_p=1.0,
                                   max_new_tokens=max_new_tokens, top_k=top_k, cuda_graph=cuda_graph)
        t1 = time.perf_counter()
        ref = hf_loop.generate_ids(model, prompt_ids, eos_id=eos_id, pad_id=pad_id, temperature=0.0, top_p=1.0,
                                   max_new_tokens=max_new_tokens, top_k=top_k)
        t2 = time.perf_counter()
        tf_fast = teacher_forced_logprobs(model, prompt_ids, [r["token_ids"] for r in fast], pad_id)
        tf_ref = teacher_forced_logprobs(model, prompt_ids, [r["token_ids"] for r in ref], pad_id)
        truth: dict[str, Any] = {}
        if truth_model is not None:
            for name, rows in (("engine", fast), ("hf", ref)):
                full = teacher_forced_logprobs(truth_model, prompt_ids, [r["token_ids"] for r in rows], pad_id)
                worst, mean, argmax = _error_stats(rows, full, greedy_tol)
                truth.update({f"{name}_max_abs_top_logprob_err_vs_fp32": worst,
                              f"{name}_mean_abs_top_logprob_err_vs_fp32": mean,
                              f"{name}_tokens_are_fp32_argmax_frac": argmax})
    finally:
        model.train(was_training)
    identical_rows, prefix_lp, prefix_top = 0, 0.0, 0.0
    first_divergence = []
    for a, b in zip(fast, ref):
        ta, tb = a["token_ids"], b["token_ids"]
        same = ta == tb and a["finish_reason"] == b["finish_reason"]
        identical_rows += same
        n = next((j for j, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        first_divergence.append(None if same else n)
        m = n + 1 if n < min(len(ta), len(tb)) else n  # the diverging step's distribution is still comparable
        if m:
            prefix_lp = max(prefix_lp, float(np.abs(a["logprobs"][:m] - b["logprobs"][:m]).max()))
            prefix_top = max(prefix_top, float(np.abs(a["top_logprobs"][:m] - b["top_logprobs"][:m]).max()))
    tf_diff, argmax = _against_full_forward(fast, tf_fast, greedy_tol)
    hf_tf_diff, hf_argmax = _against_full_forward(ref, tf_ref, greedy_tol)
    return {
        "rows": len(prompt_ids), "max_new_tokens": max_new_tokens, "dtype": str(next(model.parameters()).dtype),
        "device": str(next(model.parameters()).device), "model": type(model).__name__,
        "tokens_identical": identical_rows == len(prompt_ids), "rows_identical_frac": identical_rows / len(prompt_ids),
        "first_divergence": first_divergence, "max_abs_logprob_diff_prefix": prefix_lp,
        "max_abs_top_logprob_diff_prefix": prefix_top, "max_abs_top_logprob_diff_teacher_forced": tf_diff,
        "hf_max_abs_top_logprob_diff_teacher_forced": hf_tf_diff, "engine_tokens_are_hf_argmax_frac": argmax,
        "hf_tokens_are_full_forward_argmax_frac": hf_argmax,
        "generated_tokens": sum(len(r["token_ids"]) for r in fast), "engine_s": t1 - t0, "hf_s": t2 - t1,
        **truth,
    }


@torch.no_grad()
def compare_state_dtypes(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                         eos_id: int, pad_id: int, top_k: int = 20, teacher_forced: bool = True) -> dict[str, Any]:
    """Greedy decoding through the engine with a float32 SSM state and with a bfloat16 one (vLLM's default for
    Mamba caches), everything else the same: how often the tokens agree, how far apart the top-k log-probs are
    while they do, and (``teacher_forced``) how far each path's recorded top-k log-probs are from transformers'
    full forward over its own tokens (divergence-proof: a path that drifts after a near-tie is still scored).

    The bfloat16 state is rounded at every step, and the rounding error decays with the state (exp(dt A) < 1)
    rather than growing, so the gap should stay at the level of one step's rounding; this measures it.
    """
    from falcon_h1r.inference.engine import DecodeEngine

    if architecture_family(model) != "falcon_h1":
        raise ValueError("compare_state_dtypes: only a Falcon-H1 model has an SSM state")
    was_training = model.training
    model.eval()
    width = max(len(p) for p in prompt_ids)
    rows = {}
    try:
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            eng = DecodeEngine(model, len(prompt_ids), width + max_new_tokens + 1, ssm_state_dtype=dtype)
            rows[name] = eng.generate(prompt_ids, eos_id=eos_id, pad_id=pad_id, temperature=0.0, top_p=1.0,
                                      max_new_tokens=max_new_tokens, top_k=top_k)
            info = dict(eng.info)
            del eng
        full = {name: teacher_forced_logprobs(model, prompt_ids, [r["token_ids"] for r in rs], pad_id)
                for name, rs in rows.items()} if teacher_forced else {}
    finally:
        model.train(was_training)
    agree = total = identical = 0
    prefix_top, prefix_sum, prefix_n = 0.0, 0.0, 0
    first_divergence = []
    for a, b in zip(rows["float32"], rows["bfloat16"]):
        ta, tb = a["token_ids"], b["token_ids"]
        identical += ta == tb
        n = next((j for j, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        first_divergence.append(None if ta == tb else n)
        agree += n
        total += max(len(ta), len(tb))
        m = n + 1 if n < min(len(ta), len(tb)) else n  # the diverging step's distribution is still comparable
        if m:
            gap = np.abs(np.sort(a["top_logprobs"][:m], -1) - np.sort(b["top_logprobs"][:m], -1))
            prefix_top = max(prefix_top, float(gap.max()))
            prefix_sum, prefix_n = prefix_sum + float(gap.sum()), prefix_n + gap.size
    out: dict[str, Any] = {
        "rows": len(prompt_ids), "max_new_tokens": max_new_tokens, "dtype": str(next(model.parameters()).dtype),
        "device": str(next(model.parameters()).device), "ssm_update": info.get("ssm_update"),
        "rows_identical_frac": identical / len(prompt_ids), "greedy_prefix_agreement_frac": agree / max(1, total),
        "first_divergence": first_divergence, "max_abs_top_logprob_diff_prefix": prefix_top,
        "mean_abs_top_logprob_diff_prefix": prefix_sum / max(1, prefix_n)}
    for name in full:
        worst, mean, argmax = _error_stats(rows[name], full[name], 1e-3)
        out.update({f"{name}_state_max_abs_top_logprob_err_vs_full_forward": worst,
                    f"{name}_state_mean_abs_top_logprob_err_vs_full_forward": mean,
                    f"{name}_state_tokens_are_full_forward_argmax_frac": argmax})
    return out


def architecture_family(model: torch.nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", "")
