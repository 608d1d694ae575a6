"""The one ``generate()``: batches prompts and hands each batch to transformers' loop or the fast engine.

``generation.engine`` chooses: ``hf`` (transformers' cached loop, :mod:`falcon_h1r.inference.hf_loop`: the
plain reference), ``fast`` (the static-cache engine, :mod:`falcon_h1r.inference.engine`, anywhere) or ``auto``
(the engine on CUDA, where graphs and the Triton kernels pay off, transformers' loop on CPU). Both paths return
the same rows, so the batching loop below (prompts sorted by length, ``cfg.batch_size`` per batch, batch b seeded
``seed * 100003 + b``) is written once.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from falcon_h1r.config import GenerationConfig
from falcon_h1r.inference import engine_pool, hf_loop
from falcon_h1r.inference.architecture import EngineUnsupported, supports
from falcon_h1r.inference.sampling import Completion, EarlyStop, completion_from_row

ENGINES = ("auto", "hf", "fast")


def resolve_engine(engine: str, model: torch.nn.Module) -> str:
    """``'hf'`` or ``'fast'`` for a requested ``generation.engine`` value and a model.

    ``auto`` picks the fast engine on CUDA and transformers' loop on CPU; ``fast`` asks for the engine anywhere
    (on CPU it runs its step eagerly); an engine that cannot run the model raises :class:`EngineUnsupported`.
    """
    if engine not in ENGINES:
        raise ValueError(f"generation.engine {engine!r} not accepted; use one of {list(ENGINES)}")
    if engine == "hf":
        return "hf"
    ok, why = supports(model)
    if engine == "fast":
        if not ok:
            raise EngineUnsupported(why)
        return "fast"
    return "fast" if ok and next(model.parameters()).device.type == "cuda" else "hf"


def generate_ids(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], *, eos_id: int, pad_id: int,
                 temperature: float, top_p: float, max_new_tokens: int, top_k: int = 20, seed: int = 0,
                 early_stop: EarlyStop | None = None, engine: str = "auto",
                 cuda_graph: bool | None = None) -> list[dict[str, Any]]:
    """One batch of token ids on the path ``engine`` resolves to (rows: token ids, sampled and top-k
    log-probs, finish reason, prompt length)."""
    kw = dict(eos_id=eos_id, pad_id=pad_id, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
              top_k=top_k, seed=seed, early_stop=early_stop)
    if resolve_engine(engine, model) == "hf":
        return hf_loop.generate_ids(model, prompt_ids, **kw)
    return engine_pool.generate_ids(model, prompt_ids, cuda_graph=cuda_graph, **kw)


def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str] | Sequence[Sequence[int]],
             cfg: GenerationConfig, *, seed: int = 0, early_stop: EarlyStop | None = None,
             progress: bool = True, desc: str = "generate") -> list[Completion]:
    """Sample one completion per prompt (repeat a prompt to get several), batched, with a progress bar.

    String prompts are encoded as they are (render chat prompts with the tokenizer's ``prompt()`` first).
    Results come back in the caller's order.
    """
    from tqdm.auto import tqdm

    path = resolve_engine(cfg.engine, model)
    meta = {"engine": "fast"} if path == "fast" else None
    encoded = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # batches pad little
    results: list[Completion | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(encoded), desc=desc, disable=not progress, leave=False)
    try:
        for b, start in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[start:start + cfg.batch_size]
            rows = generate_ids(model, [encoded[i] for i in idx], eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                                temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                top_k=cfg.top_logprobs, seed=seed * 100003 + b, early_stop=early_stop,
                                engine=path)
            for i, row in zip(idx, rows):
                results[i] = completion_from_row(i, row, tokenizer, meta)
            bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    return [r for r in results if r is not None]
