"""Batched sampling with per-step log-probs and per-sequence early stop.

The interface every engine honours (this transformers-based loop on CPU; the static-cache engine of
``falcon_h1r.engine`` on GPU):

    generate(model, tokenizer, prompts, cfg, early_stop=None) -> list[Completion]

Each :class:`Completion` carries, for every generated token, the log-prob of the sampled token under
the *sampling* distribution (temperature and top-p applied: what GRPO's importance ratio needs) and
the top-k log-probs of the *raw* model distribution (what DeepConf's confidence is defined on, as
vLLM returns by default).

``early_stop`` is called once per decode step with the raw top-k log-probs of every row,
``[B, k]``, and the mask of rows still running; it returns a bool mask of rows to stop now. It runs
on the same device as the model, so a GPU engine can keep it inside its graph.

Why a hand-written loop instead of ``model.generate``: ``generate`` hands stopping criteria only
the processed scores, not the raw distribution DeepConf needs, and we want the same loop to be the
plain reference twin of the fast engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from falcon_h1r.config import GenerationConfig


@dataclass
class Completion:
    prompt_index: int
    text: str
    token_ids: list[int]
    logprobs: np.ndarray  # [T] float32, sampled token under the sampling distribution
    top_logprobs: np.ndarray  # [T, k] float32, raw distribution, sorted high -> low
    top_ids: np.ndarray  # [T, k] int32
    finish_reason: str  # "eos" | "length" | "early_stop"
    prompt_tokens: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


class EarlyStop(Protocol):
    def reset(self, batch_size: int, device: torch.device) -> None: ...

    def __call__(self, top_logprobs: torch.Tensor, running: torch.Tensor) -> torch.Tensor: ...


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches ``top_p``."""
    if top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    cum = probs.cumsum(-1)
    remove = cum - probs > top_p  # keep the token that crosses the threshold
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, sorted_idx, sorted_logits)


def sample_step(logits: torch.Tensor, temperature: float, top_p: float, k: int,
                generator: torch.Generator | None, noise: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoding step on ``[B, V]`` logits -> (token, sampled log-prob, raw top-k log-probs, ids).

    With ``noise`` (``[B, V]`` draws of Exp(1)) the token is drawn by an exponential race,
    argmax(log p - log E), instead of ``torch.multinomial``: the same distribution from pre-drawn noise, so
    the fast engine can run this step inside a CUDA graph.
    """
    logits = logits.float()
    raw_logp = torch.log_softmax(logits, dim=-1)
    top_lp, top_ids = raw_logp.topk(k, dim=-1)
    if temperature == 0.0:
        token = logits.argmax(-1)
        tok_lp = raw_logp.gather(-1, token[:, None])[:, 0]
        return token, tok_lp, top_lp, top_ids
    proc = top_p_filter(logits / temperature, top_p)
    proc_logp = torch.log_softmax(proc, dim=-1)
    if noise is not None:
        token = (proc_logp - noise.clamp_min(1e-30).log()).argmax(-1)
    else:
        token = torch.multinomial(proc_logp.exp(), 1, generator=generator)[:, 0]
    tok_lp = proc_logp.gather(-1, token[:, None])[:, 0]
    return token, tok_lp, top_lp, top_ids


def _left_pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        if len(x):
            ids[i, width - len(x):] = torch.tensor(list(x), dtype=torch.long)
            mask[i, width - len(x):] = 1
    return ids, mask


@torch.no_grad()
def generate_ids(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], *, eos_id: int, pad_id: int,
                 temperature: float, top_p: float, max_new_tokens: int, top_k: int = 20, seed: int = 0,
                 early_stop: EarlyStop | None = None, use_cache: bool = True) -> list[dict[str, Any]]:
    """Decode one batch with the model's own cache (KV for attention, conv/SSM state for Mamba-2).

    ``use_cache=False`` recomputes the full forward at every step: the slow reference that the
    cached path is tested against.
    """
    device = next(model.parameters()).device
    ids, mask = _left_pad(prompt_ids, pad_id)
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


def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str] | Sequence[Sequence[int]],
             cfg: GenerationConfig, *, seed: int = 0, early_stop: EarlyStop | None = None,
             progress: bool = True, desc: str = "generate") -> list[Completion]:
    """Sample one completion per prompt (repeat a prompt to get several), batched, with a progress bar.

    ``tokenizer`` is a :class:`falcon_h1r.tokenizer.ChatTokenizer`; string prompts are encoded as
    they are (render chat prompts with ``tokenizer.prompt(question)`` first).
    """
    from tqdm.auto import tqdm

    if cfg.engine != "hf":
        # The static-cache CUDA-graph engine (falcon_h1r.engine) when it applies (engine "fast", or "auto"
        # on a GPU); it hands back to this loop only when it resolves to "hf", so this cannot recurse.
        from falcon_h1r.engine import generate as engine_generate, resolve_engine

        if resolve_engine(cfg.engine, model) == "fast":
            return engine_generate(model, tokenizer, prompts, cfg, seed=seed, early_stop=early_stop,
                                   progress=progress, desc=desc)
    encoded = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    # Sort by length so batches pad little; results are returned in the caller's order.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[Completion | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(encoded), desc=desc, disable=not progress, leave=False)
    try:
        for b, start in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[start:start + cfg.batch_size]
            rows = generate_ids(model, [encoded[i] for i in idx], eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                                temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                top_k=cfg.top_logprobs, seed=seed * 100003 + b, early_stop=early_stop)
            for i, row in zip(idx, rows):
                ids = row["token_ids"]
                text_ids = ids[:-1] if row["finish_reason"] == "eos" else ids
                results[i] = Completion(prompt_index=i, text=tokenizer.decode(text_ids), token_ids=ids,
                                        logprobs=row["logprobs"], top_logprobs=row["top_logprobs"],
                                        top_ids=row["top_ids"], finish_reason=row["finish_reason"],
                                        prompt_tokens=row["prompt_tokens"])
            bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    return [r for r in results if r is not None]


def greedy(cfg: GenerationConfig) -> GenerationConfig:
    """A copy of ``cfg`` that decodes greedily (temperature 0)."""
    from dataclasses import replace

    return replace(cfg, temperature=0.0)


StopFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
