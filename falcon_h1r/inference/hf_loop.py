"""transformers' own cached decoding as a batched sampler: the plain reference path.

Why a hand-written loop instead of ``model.generate``: ``generate`` hands stopping criteria only the
processed scores, not the raw distribution DeepConf needs, and the same loop is the plain reference twin
of the fast engine (:mod:`falcon_h1r.inference.engine`), which tests compare against it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from falcon_h1r.inference.sampling import EarlyStop, left_pad, sample_step


@torch.no_grad()
def generate_ids(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], *, eos_id: int, pad_id: int,
                 temperature: float, top_p: float, max_new_tokens: int, top_k: int = 20, seed: int = 0,
                 early_stop: EarlyStop | None = None, use_cache: bool = True) -> list[dict[str, Any]]:
    """Decode one batch with the model's own cache (KV for attention, conv/SSM state for Mamba-2).

    ``use_cache=False`` recomputes the full forward at every step: the slow reference that the
    cached path is tested against.
    """
    device = next(model.parameters()).device
    ids, mask = left_pad(prompt_ids, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    bsz = ids.shape[0]
    k = min(top_k, model.config.vocab_size)
    gen = torch.Generator(device=device).manual_seed(seed)
    if early_stop is not None:
        early_stop.reset(bsz, device)
    running = torch.ones(bsz, dtype=torch.bool, device=device)
    reason = ["length"] * bsz
    lengths = [max_new_tokens] * bsz
    tokens, tok_lps, top_lps, top_idss = [], [], [], []
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=use_cache, logits_to_keep=1)
    cache = out.past_key_values if use_cache else None
    all_ids = ids
    for step in range(max_new_tokens):
        token, tok_lp, top_lp, top_id = sample_step(out.logits[:, -1, :], temperature, top_p, k, gen)
        token = torch.where(running, token, torch.full_like(token, pad_id))
        tokens.append(token)
        tok_lps.append(tok_lp)
        top_lps.append(top_lp)
        top_idss.append(top_id)
        finished_eos = running & (token == eos_id)
        stop_now = torch.zeros_like(running)
        if early_stop is not None:
            stop_now = early_stop(top_lp, running) & running & ~finished_eos
        for i in torch.nonzero(finished_eos | stop_now).flatten().tolist():
            reason[i] = "eos" if bool(finished_eos[i]) else "early_stop"
            lengths[i] = step + 1  # the stopping token (EOS, or the one that crossed the threshold) counts
        running = running & ~finished_eos & ~stop_now
        if not bool(running.any()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, running[:, None].long() | mask.new_zeros(bsz, 1)], dim=-1)
        mask[:, -1] = 1  # finished rows keep decoding a pad token; their output is ignored
        pos = pos[:, -1:] + 1
        if use_cache:
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=pos, past_key_values=cache,
                        use_cache=True)
        else:
            all_ids = torch.cat([all_ids, token[:, None]], dim=-1)
            full_pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=all_ids, attention_mask=mask, position_ids=full_pos, use_cache=False,
                        logits_to_keep=1)
    tok = torch.stack(tokens, 1).cpu()
    lp = torch.stack(tok_lps, 1).cpu()
    tlp = torch.stack(top_lps, 1).cpu()
    tid = torch.stack(top_idss, 1).cpu()
    rows = []
    for i in range(bsz):
        n = min(lengths[i], tok.shape[1])
        rows.append({"token_ids": tok[i, :n].tolist(), "logprobs": lp[i, :n].numpy().astype(np.float32),
                     "top_logprobs": tlp[i, :n].numpy().astype(np.float32),
                     "top_ids": tid[i, :n].numpy().astype(np.int32), "finish_reason": reason[i],
                     "prompt_tokens": len(prompt_ids[i])})
    return rows
