"""One cached :class:`~falcon_h1r.inference.engine.DecodeEngine` per model (static caches and captured graphs
are reused across calls with the same rows and weights), the engine defaults ``generate()`` builds with, and one
batch of token ids on the model's engine."""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import torch

from falcon_h1r.inference.engine import ATTENTION_MODES, DecodeEngine, round_up
from falcon_h1r.inference.sampling import EarlyStop

# What engines made by generate() use: the plain paths unless a caller (the throughput study, a GPU recipe)
# asks for the fast ones with set_defaults().
DEFAULT_ATTENTION = "sdpa"
DEFAULT_COMPILE = False
DEFAULT_SSM_STATE_DTYPE = torch.float32  # what transformers keeps; bfloat16 is vLLM's default for Mamba caches
_ENGINES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, DecodeEngine]]" = weakref.WeakKeyDictionary()


def _engine_for(model: torch.nn.Module, batch: int, max_len: int, cuda_graph: bool | None) -> DecodeEngine:
    """Reuse the model's last engine when it fits (same rows, enough columns, same weights in place)."""
    fingerprint = tuple(p.data_ptr() for p in model.parameters())
    cached = _ENGINES.get(model)
    if cached is not None:
        key, eng = cached
        if key == (batch, fingerprint, cuda_graph, DEFAULT_ATTENTION, DEFAULT_COMPILE, DEFAULT_SSM_STATE_DTYPE) \
                and eng.max_len >= max_len:
            return eng
        del _ENGINES[model]
        del eng, cached
        if next(model.parameters()).is_cuda:
            torch.cuda.empty_cache()
    if next(model.parameters()).is_cuda:  # round up so that calls with slightly different prompts share graphs
        max_len = round_up(max_len, 256)
    eng = DecodeEngine(model, batch, max_len, cuda_graph=cuda_graph, attention=DEFAULT_ATTENTION,
                       compile=DEFAULT_COMPILE and next(model.parameters()).is_cuda,
                       ssm_state_dtype=DEFAULT_SSM_STATE_DTYPE)
    _ENGINES[model] = ((batch, fingerprint, cuda_graph, DEFAULT_ATTENTION, DEFAULT_COMPILE, DEFAULT_SSM_STATE_DTYPE), eng)
    return eng


def set_defaults(attention: str | None = None, compile: bool | None = None,
                 ssm_state_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Choose the attention mode, torch.compile'd glue (CUDA only) and SSM state dtype of the engines generate()
    builds from now on. Returns the previous defaults, so a caller can restore them."""
    global DEFAULT_ATTENTION, DEFAULT_COMPILE, DEFAULT_SSM_STATE_DTYPE
    before = {"attention": DEFAULT_ATTENTION, "compile": DEFAULT_COMPILE, "ssm_state_dtype": DEFAULT_SSM_STATE_DTYPE}
    if attention is not None:
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention {attention!r} not accepted; use one of {ATTENTION_MODES}")
        DEFAULT_ATTENTION = attention
    if compile is not None:
        DEFAULT_COMPILE = bool(compile)
    if ssm_state_dtype is not None:
        if ssm_state_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"ssm_state_dtype {ssm_state_dtype} not accepted; use torch.float32 or torch.bfloat16")
        DEFAULT_SSM_STATE_DTYPE = ssm_state_dtype
    return before


def free_engines(model: torch.nn.Module | None = None) -> None:
    """Release the cached engine (static caches, graphs) of ``model``, or of every model."""
    if model is None:
        _ENGINES.clear()
    else:
        _ENGINES.pop(model, None)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@torch.no_grad()
def generate_ids(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], *, eos_id: int, pad_id: int,
                 temperature: float, top_p: float, max_new_tokens: int, top_k: int = 20, seed: int = 0,
                 early_stop: EarlyStop | None = None, cuda_graph: bool | None = None) -> list[dict[str, Any]]:
    """One batch on the model's cached :class:`DecodeEngine`; the same rows as
    :func:`falcon_h1r.inference.hf_loop.generate_ids` (callers pick a path with
    :func:`falcon_h1r.inference.generate_ids`)."""
    if not prompt_ids:
        return []
    width = max(len(p) for p in prompt_ids)
    was_training = model.training
    model.eval()
    try:
        eng = _engine_for(model, len(prompt_ids), width + max_new_tokens + 1, cuda_graph)
        return eng.generate(prompt_ids, eos_id=eos_id, pad_id=pad_id, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens, top_k=top_k, seed=seed, early_stop=early_stop)
    finally:
        model.train(was_training)
