"""DeepConf's online stop inside vLLM, as a logits processor (DeepConf Alg. 2; paper §5).

A request whose ``SamplingParams.extra_args`` carries :data:`EXTRA_ARGS_KEY` (see :func:`deepconf_extra_args`)
gets the stop: at every decode step its token confidence (-mean of the raw top-k log-probs, k = 20) enters a ring
buffer of the last ``window`` confidences; once the window is full and its mean is below the threshold, every logit
but EOS is masked, so the token at the crossing position is EOS and the request ends normally. The trace has the
same token count as in our engine (:class:`falcon_h1r.deepconf.EarlyStopController`), which keeps the crossing
token and then stops; its vLLM ``finish_reason`` is "stop", and :func:`falcon_h1r.tracestore.from_vllm_outputs`
labels it ``early_stop`` when given the threshold. Warm-up, threshold and votes are the package's own
(:mod:`falcon_h1r.inference.vllm_online`).

Two vLLM interfaces, chosen by what the installed vLLM provides (:func:`processor_class`):

- **Model Runner V2** (the default runner on CUDA in current vLLM): :class:`DeepConfV2LogitsProcessor` subclasses
  ``vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor`` (``__init__(vllm_config, req_states)``,
  ``validate_params``, ``add_request(slot, params)``, ``apply(logits, ctx)``). All state lives in per-slot device
  tensors (:class:`SlotConfidenceStop`): one batched top-k and one logsumexp per step over the rows, gathers and
  scatters by slot, no Python loop over requests and no host sync. Rows of a chunked prefill (no token sampled
  yet) are skipped with ``pos + 1 < prefill_len``. Speculative decoding is refused (a request would own several
  rows per step, and rejected drafts would enter the window). A request preempted and re-admitted gets a fresh
  window (its earlier confidences are not in the runner's state), so its stop can come later, never earlier.
- **V1 runner** (vLLM 0.10.2 up to the V2 switch, or ``VLLM_USE_V2_MODEL_RUNNER=0``): :class:`DeepConfLogitsProcessor`
  subclasses ``vllm.v1.sample.logits_processor.AdapterLogitsProcessor`` with one :class:`RequestConfidenceStop`
  per request, indexed by the number of output tokens so that repeated calls during a chunked prefill do not
  count twice.

Why written here: no vLLM release has a confidence stop (vLLM PR #23201 was closed; the official ``deepconf``
package pins vLLM 0.10.2 and its V1 adapter); both classes share the package's arithmetic (sums of top-k
log-probs in float64, the comparison ``sum > -threshold * k * window``) so that the CPU tests compare them with
the reference on recorded log-probs through a stand-in for each runner interface.
What was run against a real vLLM: nothing (no vLLM in this package's environment; see README "Past one machine").
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from falcon_h1r.deepconf.recipe import TOP_K, WINDOW

VLLM_MISSING = ("vLLM is not installed, and falcon_h1r.inference.vllm_deepconf needs it for this call. vLLM pins its "
                "own torch and transformers: create its environment with requirements-vllm.txt (README, 'Past one "
                "machine'). Without vLLM, use falcon_h1r.deepconf.run_online with the package's own engine.")
EXTRA_ARGS_KEY = "falcon_h1r_deepconf"
MAX_WINDOW = int(os.environ.get("FALCON_H1R_DEEPCONF_MAX_WINDOW", WINDOW))  # ring width; per-request window <= it
V2_INTERFACE = "vllm.v1.worker.gpu.sample.logits_processor"
V1_INTERFACE = "vllm.v1.sample.logits_processor"


def _vllm_base(module: str, name: str) -> type | None:
    try:
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    except (ImportError, AttributeError):
        return None


_V2Base = _vllm_base(V2_INTERFACE, "LogitsProcessor")
_V1Base = _vllm_base(V1_INTERFACE, "AdapterLogitsProcessor")
HAVE_V2 = _V2Base is not None
HAVE_V1 = _V1Base is not None
HAVE_VLLM = HAVE_V1 or HAVE_V2


def require_vllm() -> Any:
    """Import vLLM or raise one clear error saying how to get it."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(VLLM_MISSING) from exc
    return vllm


# ============================================================================== request arguments
def deepconf_extra_args(threshold: float, eos_token_id: int, window: int = WINDOW,
                        top_k: int = TOP_K) -> dict[str, Any]:
    """The ``SamplingParams.extra_args`` entry that switches the stop on for one request."""
    return {EXTRA_ARGS_KEY: {"threshold": float(threshold), "eos_token_id": int(eos_token_id),
                             "window": int(window), "top_k": int(top_k)}}


def request_args(params: Any, *, max_window: int = MAX_WINDOW, top_k: int = TOP_K,
                 vocab_size: int | None = None) -> dict[str, Any] | None:
    """The stop's arguments of one request (None: no stop), checked; a ``ValueError`` names what is wrong."""
    args = (getattr(params, "extra_args", None) or {}).get(EXTRA_ARGS_KEY)
    if args is None:
        return None
    if not isinstance(args, dict):
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}] must be a dict from deepconf_extra_args(), got {type(args)}")
    unknown = set(args) - {"threshold", "eos_token_id", "window", "top_k"}
    if unknown:
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}]: unknown keys {sorted(unknown)}; accepted: threshold, "
                         "eos_token_id, window, top_k")
    threshold = float(args.get("threshold", math.nan))
    if not math.isfinite(threshold):
        raise ValueError(f"DeepConf threshold must be a finite number, got {args.get('threshold')!r}")
    eos = int(args.get("eos_token_id", -1))
    if eos < 0 or (vocab_size is not None and eos >= vocab_size):
        raise ValueError(f"DeepConf eos_token_id must be in [0, {vocab_size}), got {args.get('eos_token_id')!r}")
    window = int(args.get("window", WINDOW))
    if not 1 <= window <= max_window:
        raise ValueError(f"DeepConf window must be in 1..{max_window} (the processor's ring width; raise "
                         f"FALCON_H1R_DEEPCONF_MAX_WINDOW to allow more), got {window}")
    k = int(args.get("top_k", top_k))
    if k != top_k:
        raise ValueError(f"DeepConf top_k must be {top_k} (the processor's confidence), got {k}")
    return {"threshold": threshold, "eos_token_id": eos, "window": window}


# ============================================================================== the batched state (plain torch)
class SlotConfidenceStop:
    """Per-slot ring buffers of the window's token confidences, updated for a batch of logits rows at once.

    Slots are the runner's persistent request slots (recycled: :meth:`add` fully resets one). Each token stores
    the sum of its raw top-k log-probs (``-k * confidence``) in float64; ``sums`` holds the window's total, so the
    stop test is ``count >= window and sums > -threshold * k * window``, the comparison of
    :class:`falcon_h1r.deepconf.EarlyStopController`. Host-side :meth:`add` calls are staged and written to the
    device in one go by :meth:`flush` (the runner calls it once per step).
    """

    def __init__(self, max_slots: int, device: torch.device | str, *, max_window: int = MAX_WINDOW,
                 top_k: int = TOP_K):
        if max_slots < 1 or max_window < 1 or top_k < 1:
            raise ValueError(f"max_slots, max_window and top_k must be >= 1, got {max_slots}, {max_window}, {top_k}")
        self.max_window, self.top_k, self.device = int(max_window), int(top_k), torch.device(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.ring = torch.zeros(max_slots, self.max_window, **f64)
        self.sums = torch.zeros(max_slots, **f64)
        self.bound = torch.zeros(max_slots, **f64)  # -threshold * k * window
        self.count = torch.zeros(max_slots, dtype=torch.long, device=self.device)
        self.window = torch.ones(max_slots, dtype=torch.long, device=self.device)
        self.eos = torch.zeros(max_slots, dtype=torch.long, device=self.device)
        self.active = torch.zeros(max_slots, dtype=torch.bool, device=self.device)
        self._staged: dict[int, dict[str, Any] | None] = {}

    def add(self, slot: int, args: dict[str, Any] | None) -> bool:
        """Stage a request entering ``slot`` (``args`` from :func:`request_args`; None: no stop). Returns
        whether the stop is on for it."""
        self._staged[int(slot)] = args
        return args is not None

    def flush(self) -> None:
        """Write the staged slot resets to the device (a few index writes, whatever the number of requests)."""
        if not self._staged:
            return
        slots = torch.tensor(list(self._staged), dtype=torch.long)
        on = [a is not None for a in self._staged.values()]
        win = [a["window"] if a else 1 for a in self._staged.values()]
        bound = [-a["threshold"] * self.top_k * a["window"] if a else 0.0 for a in self._staged.values()]
        eos = [a["eos_token_id"] if a else 0 for a in self._staged.values()]
        slots = slots.to(self.device)
        self.ring.index_fill_(0, slots, 0.0)
        self.sums.index_fill_(0, slots, 0.0)
        self.count.index_fill_(0, slots, 0)
        self.active[slots] = torch.tensor(on, device=self.device)
        self.window[slots] = torch.tensor(win, dtype=torch.long, device=self.device)
        self.bound[slots] = torch.tensor(bound, dtype=torch.float64, device=self.device)
        self.eos[slots] = torch.tensor(eos, dtype=torch.long, device=self.device)
        self._staged.clear()

    def top_logprob_sums(self, logits: torch.Tensor) -> torch.Tensor:
        """Per row: the sum of the top-k log-probs of the raw distribution, float64 ``[rows]``."""
        k = min(self.top_k, logits.shape[-1])
        top = logits.topk(k, dim=-1).values.double()
        return (top - torch.logsumexp(logits, dim=-1).double()[:, None]).sum(-1)

    def step(self, logits: torch.Tensor, slots: torch.Tensor, samples: torch.Tensor | None = None) -> torch.Tensor:
        """Push this step's confidences of the rows whose request has the stop on and samples a token now
        (``samples``; None: every row), force EOS where the window mean crossed the threshold; returns the
        rows' stop flags. ``slots``: each row's slot (distinct)."""
        self.flush()
        slots = slots.to(self.device, torch.long)
        on = self.active[slots]
        if samples is not None:
            on = on & samples.to(self.device, torch.bool)
        total = self.top_logprob_sums(logits)
        pos = self.count[slots] % self.window[slots]
        old = self.ring[slots, pos]
        new = torch.where(on, total, old)
        self.ring[slots, pos] = new
        self.sums[slots] += new - old
        self.count[slots] += on.long()
        stop = on & (self.count[slots] >= self.window[slots]) & (self.sums[slots] > self.bound[slots])
        force_eos(logits, stop, self.eos[slots])
        return stop


def force_eos(logits: torch.Tensor, rows: torch.Tensor, eos: torch.Tensor) -> None:
    """In place: rows flagged in ``rows`` keep only their EOS token (logit 0, everything else -inf)."""
    eos = eos.to(logits.device, torch.long)[:, None]
    keep = logits.gather(1, eos)
    logits.masked_fill_(rows[:, None], float("-inf"))
    logits.scatter_(1, eos, torch.where(rows[:, None], torch.zeros_like(keep), keep))


# ============================================================================== Model Runner V2
def _tensor_of(buffer: Any) -> torch.Tensor | None:
    """A runner buffer's device view (``.gpu`` of vLLM's UVA/staged buffers) or the tensor itself."""
    if buffer is None:
        return None
    return buffer.gpu if hasattr(buffer, "gpu") else buffer


class DeepConfV2LogitsProcessor(_V2Base or object):  # type: ignore[misc]
    """DeepConf's stop for vLLM's Model Runner V2 (see the module docstring). Register it by name:
    ``vllm.LLM(model, logits_processors=["falcon_h1r.inference.vllm_deepconf:DeepConfV2LogitsProcessor"])``."""

    def __init__(self, vllm_config: Any, req_states: Any):
        spec = getattr(vllm_config, "speculative_config", None)
        if spec is not None:
            raise ValueError("DeepConf's stop does not support speculative decoding (rejected draft tokens would enter "
                             "the confidence window); start vLLM without a speculative config")
        self.req_states = req_states
        self.vocab_size = int(req_states.vocab_size)
        self.state = SlotConfidenceStop(int(req_states.max_num_reqs), req_states.device)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        request_args(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes the argmax (kept for runner versions whose container asks)

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        return self.state.add(req_idx, request_args(sampling_params, vocab_size=self.vocab_size))

    def apply_staged_writes(self) -> None:
        self.state.flush()

    def apply(self, logits: torch.Tensor, ctx: Any) -> torch.Tensor:
        slots = ctx.expanded_idx_mapping
        if logits.shape[0] != len(ctx.idx_mapping_np):
            raise ValueError(f"{logits.shape[0]} logits rows for {len(ctx.idx_mapping_np)} requests: DeepConf's stop "
                             "needs one row per request (no speculative decoding)")
        prefill = _tensor_of(getattr(self.req_states, "prefill_len", None))
        samples = None if prefill is None else (ctx.pos.long() + 1 >= prefill[slots.long()].to(ctx.pos.device))
        self.state.step(logits, slots, samples)
        return logits


# ============================================================================== V1 runner (per-request adapter)
class RequestConfidenceStop:
    """One request's stop for vLLM V1's ``AdapterLogitsProcessor``: ``(output_ids, logits [V]) -> logits``.

    The ring position is the number of output tokens so far, so a call repeated at the same position (the
    chunks of a chunked prefill) replaces that position's value instead of adding one. State stays on the
    logits' device (no host sync per step)."""

    def __init__(self, threshold: float, eos_token_id: int, window: int = WINDOW, top_k: int = TOP_K):
        self.threshold, self.eos_token_id, self.window, self.top_k = float(threshold), int(eos_token_id), window, top_k
        self.ring: torch.Tensor | None = None
        self.count = 0

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        if self.ring is None:
            self.ring = torch.zeros(self.window, dtype=torch.float64, device=logits.device)
            self.total = torch.zeros((), dtype=torch.float64, device=logits.device)
        k = min(self.top_k, logits.shape[-1])
        logp = logits.topk(k).values.double() - torch.logsumexp(logits, -1).double()
        position = len(output_ids)
        slot = position % self.window
        self.total += logp.sum() - self.ring[slot]
        self.ring[slot] = logp.sum()
        self.count = position + 1
        if self.count < self.window:
            return logits
        stop = self.total > -self.threshold * k * self.window
        force_eos(logits[None], stop[None], torch.tensor([self.eos_token_id], device=logits.device))
        return logits


class DeepConfLogitsProcessor(_V1Base or object):  # type: ignore[misc]
    """vLLM V1 batch-level wrapper: requests whose ``extra_args`` carry :data:`EXTRA_ARGS_KEY` get a
    :class:`RequestConfidenceStop`; others are untouched."""

    def __init__(self, *args: Any, **kwargs: Any):
        if not HAVE_V1:
            raise ImportError(VLLM_MISSING)
        super().__init__(*args, **kwargs)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        request_args(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes the argmax; also makes vLLM run it before temperature (raw logits)

    def new_req_logits_processor(self, params: Any) -> RequestConfidenceStop | None:
        args = request_args(params)
        return RequestConfidenceStop(args["threshold"], args["eos_token_id"], args["window"]) if args else None


# ============================================================================== choosing and using
def uses_v2_runner() -> bool:
    """Whether the installed vLLM runs Model Runner V2: its interface exists, ``VLLM_USE_V2_MODEL_RUNNER`` is not
    "0" and Triton is importable (vLLM 0.33 falls back to V1 without Triton, with ``VLLM_USE_V2_MODEL_RUNNER=0``,
    and for speculative methods V2 lacks, which the V2 processor refuses anyway)."""
    import importlib.util

    flag = os.environ.get("VLLM_USE_V2_MODEL_RUNNER", "").strip().lower()
    if not HAVE_V2 or flag in ("0", "false"):
        return False
    return flag in ("1", "true") or importlib.util.find_spec("triton") is not None


def processor_class() -> str:
    """The processor for the installed vLLM, as the ``module:Class`` name vLLM's loader accepts (a name, not a
    class object, so that engine processes import it themselves)."""
    if uses_v2_runner():
        return f"{__name__}:DeepConfV2LogitsProcessor"
    if HAVE_V1:
        return f"{__name__}:DeepConfLogitsProcessor"
    raise ImportError(VLLM_MISSING)


def sampling_params(threshold: float | None, eos_token_id: int, *, window: int = WINDOW, top_k: int = TOP_K,
                    params_cls: Any = None, **kwargs: Any) -> Any:
    """``SamplingParams`` with ``logprobs=top_k`` (for the trace store) and, when ``threshold`` is given, the
    DeepConf stop (None: warm-up, no stop). ``params_cls`` defaults to ``vllm.SamplingParams``."""
    cls = params_cls or require_vllm().SamplingParams
    extra = dict(kwargs.pop("extra_args", None) or {})
    if threshold is not None:
        extra.update(deepconf_extra_args(threshold, eos_token_id, window, top_k))
    return cls(logprobs=top_k, extra_args=extra or None, **kwargs)


def make_llm(model: str, **vllm_kwargs: Any) -> Any:
    """``vllm.LLM`` with the DeepConf processor for its runner registered."""
    vllm = require_vllm()
    proc = processor_class()
    # pin vLLM's runner to the one the processor was chosen for (its own choice reads the same variable)
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "1" if proc.endswith("V2LogitsProcessor") else "0")
    procs = list(vllm_kwargs.pop("logits_processors", None) or []) + [proc]
    return vllm.LLM(model=model, logits_processors=procs, **vllm_kwargs)


__all__ = ["VLLM_MISSING", "HAVE_VLLM", "HAVE_V1", "HAVE_V2", "EXTRA_ARGS_KEY", "MAX_WINDOW", "require_vllm",
           "deepconf_extra_args", "request_args", "SlotConfidenceStop", "force_eos", "DeepConfV2LogitsProcessor",
           "RequestConfidenceStop", "DeepConfLogitsProcessor", "uses_v2_runner", "processor_class",
           "sampling_params", "make_llm"]
