"""Sampling primitives shared by both decode paths (transformers' loop and the static-cache engine).

Each :class:`Completion` carries, for every generated token, the log-prob of the sampled token under
the *sampling* distribution (temperature and top-p applied: what GRPO's importance ratio needs) and
the top-k log-probs of the *raw* model distribution (what DeepConf's confidence is defined on, as
vLLM returns by default).

An :class:`EarlyStop` is called once per decode step with the raw top-k log-probs of every row,
``[B, k]``, and the mask of rows still running; it returns a bool mask of rows to stop now. It runs
on the same device as the model, so a GPU engine can keep it inside its graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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


def left_pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        if len(x):
            ids[i, width - len(x):] = torch.tensor(list(x), dtype=torch.long)
            mask[i, width - len(x):] = 1
    return ids, mask


def greedy(cfg: GenerationConfig) -> GenerationConfig:
    """A copy of ``cfg`` that decodes greedily (temperature 0)."""
    return replace(cfg, temperature=0.0)


def completion_from_row(index: int, row: dict[str, Any], tokenizer: Any, meta: dict[str, Any] | None = None
                        ) -> Completion:
    """One decoded row (``generate_ids`` output of either path) as a :class:`Completion`; the EOS token is
    kept in ``token_ids`` but not in the text."""
    ids = row["token_ids"]
    text_ids = ids[:-1] if row["finish_reason"] == "eos" else ids
    return Completion(prompt_index=index, text=tokenizer.decode(text_ids), token_ids=ids, logprobs=row["logprobs"],
                      top_logprobs=row["top_logprobs"], top_ids=row["top_ids"], finish_reason=row["finish_reason"],
                      prompt_tokens=row["prompt_tokens"], meta=dict(meta or {}))


StopFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
