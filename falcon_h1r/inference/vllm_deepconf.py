"""DeepConf's online stop inside vLLM, through vLLM V1's custom logits-processor API.

Same mechanism as the official ``deepconf`` pip package (``vllm==0.10.2``): a per-request processor
keeps the last ``window`` token confidences (-mean of the raw top-k log-probs) and, once the window
is full and its mean is below the threshold, masks every logit except EOS, so the next token is EOS
and the request ends normally. Processors that are not argmax-invariant run before penalties and
temperature, so the confidence is on the raw distribution, like ours.

Differences from :class:`falcon_h1r.deepconf.EarlyStopController`: the token sampled at the
crossing position is replaced by EOS (our engine samples it normally and then stops), so the token
count is the same; and the trace ends with ``finish_reason="stop"`` (pass the threshold to
:func:`falcon_h1r.tracestore.from_vllm_outputs` to label such traces). The warm-up / threshold /
voting logic is unchanged: generate with :func:`sampling_params`, import with ``from_vllm_outputs``,
then use :mod:`falcon_h1r.deepconf`.

This file cannot be exercised here (no vLLM, no GPU): it is kept small on purpose. Only the
request-level stop (plain torch) and the "vLLM is not installed" error are tested.

Usage where vLLM is installed::

    llm = vllm.LLM(model, logits_processors=[DeepConfLogitsProcessor])   # or make_llm(model)
    params = sampling_params(threshold, tokenizer.eos_token_id, temperature=0.6, top_p=0.95)
    outputs = llm.generate(prompts, params)
"""

from __future__ import annotations

from typing import Any

import torch

VLLM_MISSING = ("vLLM is not installed, and falcon_h1r.inference.vllm_deepconf needs it. Install it on a CUDA machine with "
                "`pip install 'vllm>=0.10.2'` (V1 engine, custom logits processors). Without vLLM, use "
                "falcon_h1r.deepconf.run_online with our own generation engine.")
EXTRA_ARGS_KEY = "falcon_h1r_deepconf"

try:  # vLLM is optional; the class below only works when it is there.
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor as _AdapterBase

    HAVE_VLLM = True
except ImportError:
    _AdapterBase = object
    HAVE_VLLM = False


def require_vllm() -> Any:
    """Import vLLM or raise one clear error saying what to install."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(VLLM_MISSING) from exc
    return vllm


class RequestConfidenceStop:
    """Per-request callable ``(output_ids, logits [V]) -> logits``: force EOS once the full window's mean
    confidence drops below the threshold. State stays on the logits' device (no host sync per step)."""

    def __init__(self, threshold: float, eos_token_id: int, window: int = 2048, top_k: int = 20):
        self.threshold, self.eos_token_id, self.window, self.top_k = float(threshold), int(eos_token_id), window, top_k
        self.ring: torch.Tensor | None = None
        self.count = 0

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        if self.ring is None:
            self.ring = torch.zeros(self.window, dtype=torch.float64, device=logits.device)
            self.total = torch.zeros((), dtype=torch.float64, device=logits.device)
        k = min(self.top_k, logits.shape[-1])
        conf = -torch.log_softmax(logits.float(), -1).topk(k).values.double().mean()
        slot = self.count % self.window
        self.total += conf - self.ring[slot]
        self.ring[slot] = conf
        self.count += 1
        if self.count < self.window:
            return logits
        stop = self.total / self.window < self.threshold
        eos_only = torch.full_like(logits, float("-inf"))
        eos_only[self.eos_token_id] = logits[self.eos_token_id]
        return torch.where(stop, eos_only, logits)


class DeepConfLogitsProcessor(_AdapterBase):  # type: ignore[misc, valid-type]
    """vLLM batch-level wrapper: requests whose ``extra_args`` carry :data:`EXTRA_ARGS_KEY` get a
    :class:`RequestConfidenceStop`; others are untouched."""

    def __init__(self, *args: Any, **kwargs: Any):
        require_vllm()
        super().__init__(*args, **kwargs)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes the argmax; also makes vLLM run it before temperature (raw logits)

    def new_req_logits_processor(self, params: Any) -> RequestConfidenceStop | None:
        args = (getattr(params, "extra_args", None) or {}).get(EXTRA_ARGS_KEY)
        return RequestConfidenceStop(**args) if args else None


def deepconf_extra_args(threshold: float, eos_token_id: int, window: int = 2048, top_k: int = 20) -> dict[str, Any]:
    """The ``SamplingParams.extra_args`` entry that switches the stop on for one request."""
    return {EXTRA_ARGS_KEY: {"threshold": float(threshold), "eos_token_id": int(eos_token_id),
                             "window": int(window), "top_k": int(top_k)}}


def sampling_params(threshold: float | None, eos_token_id: int, *, window: int = 2048, top_k: int = 20,
                    **kwargs: Any) -> Any:
    """``vllm.SamplingParams`` with ``logprobs=20`` (needed for the trace store) and, when ``threshold``
    is given, the DeepConf stop (``None``: warm-up, no stop)."""
    vllm = require_vllm()
    extra = dict(kwargs.pop("extra_args", None) or {})
    if threshold is not None:
        extra.update(deepconf_extra_args(threshold, eos_token_id, window, top_k))
    return vllm.SamplingParams(logprobs=top_k, extra_args=extra or None, **kwargs)


def make_llm(model: str, **vllm_kwargs: Any) -> Any:
    """``vllm.LLM`` with the DeepConf processor registered."""
    vllm = require_vllm()
    procs = list(vllm_kwargs.pop("logits_processors", None) or []) + [DeepConfLogitsProcessor]
    return vllm.LLM(model=model, logits_processors=procs, **vllm_kwargs)


__all__ = ["VLLM_MISSING", "HAVE_VLLM", "EXTRA_ARGS_KEY", "require_vllm", "RequestConfidenceStop",
           "DeepConfLogitsProcessor", "deepconf_extra_args", "sampling_params", "make_llm"]
