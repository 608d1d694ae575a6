"""Online DeepConf (paper Alg. 2): warm-up, stop threshold, the live early stop and the consensus stop.

N_init = 16 warm-up traces run to completion; the stop threshold is a percentile of their lowest-group
confidences; later traces stop as soon as their current full-window mean drops below it
(:class:`EarlyStopController` inside our generation loop); sampling stops at the budget or once the weighted
share of the leading answer reaches tau = 0.95 (the adaptive consensus stop, which no official release
implements: they launch the whole budget at once; deepconf PR #10).

eta convention: ``variant="low"`` keeps the top 10 % (threshold = 90th percentile of the warm-up
lowest-group confidences), ``variant="high"`` keeps the top 90 % (threshold = 10th percentile);
``np.percentile`` with linear interpolation. (The official repo uses both ``p`` and ``100 - p`` in
different branches.) :func:`run_online` generates live; :func:`replay_online` replays stored complete
traces, as the DeepConf paper evaluated it; both share :class:`OnlineDeepConf`.

``variant=None`` is the consensus stop alone (no confidence threshold, no truncation, an unweighted
majority vote with the same warm-up and tau): what the consensus stop saves on its own, apart from the
confidence stop. ``adaptive=False`` is the confidence stop alone (the DeepConf paper's "budget-only").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from falcon_h1r.deepconf.confidence import check_window, first_stop_index
from falcon_h1r.deepconf.offline import VoteResult, answer_matches, vote
from falcon_h1r.deepconf.recipe import WINDOW, DeepConfRecipe, Variant
from falcon_h1r.deepconf.stop_kernel import fused_available, window_stop_update, window_stop_update_ref
from falcon_h1r.deepconf.traces import Trace, trace_from_completion
from falcon_h1r.verify import AnswerClasses


def warmup_threshold(lowest_group: Sequence[float], keep_percent: float) -> float:
    """Stop threshold from warm-up lowest-group confidences: ``np.percentile(x, 100 - keep_percent)``,
    linear. keep 10 % (DeepConf-low) -> 90th percentile; keep 90 % (high) -> 10th. NaN (empty traces)
    are ignored."""
    if not 0 < keep_percent <= 100:
        raise ValueError(f"keep_percent is the kept percentage, in (0, 100]; got {keep_percent}")
    x = np.asarray(lowest_group, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("no warm-up trace has a confidence (all were empty); cannot set a threshold")
    return float(np.percentile(x, 100 - keep_percent, method="linear"))


class EarlyStopController:
    """DeepConf's live stop inside :func:`falcon_h1r.inference.generate` (the ``EarlyStop`` protocol).

    Per decode step and row: confidence = -mean(top-k raw log-probs); a ring buffer ``[B, window]``
    and a running window sum give the current window mean in O(1); a row stops when its window is
    full and the mean is below ``threshold``. Everything stays on the model's device (no host sync),
    so the fast engine captures it in its decode step's CUDA graph.
    Sums are float64 so that subtract-add drift over 10^5 tokens stays far below 1e-6.
    ``threshold=None`` never stops (warm-up).

    Why the bookkeeping is in sums of log-probs rather than in confidences: a decode step of a small
    model is ~1.5 ms on a GPU and every extra elementwise kernel costs a few microseconds even inside
    a graph, so the step keeps to gather/scatter on the ring and compares ``sum < -threshold * k *
    window`` instead of dividing; on CUDA with Triton the whole step is one fused kernel
    (:mod:`falcon_h1r.deepconf.stop_kernel`; the torch form is about 12 small kernels, 4 % of the small
    preset's 1.7 ms step on the H200, over the 3 % target). ``fused``: None picks the kernel on CUDA where
    Triton imports, True always (tests run it under Triton's CPU interpreter), False never.
    :class:`StreamingConfidence` is the plain per-trace twin the tests compare it to.
    """

    graph_safe = True  # its state lives in device tensors updated in place: the engine may capture it

    def __init__(self, threshold: float | None = None, window: int = WINDOW, fused: bool | None = None):
        check_window(window)
        self.threshold = threshold
        self.window = window
        self.fused = fused
        self.batch_size = 0
        self.k = 0

    def reset(self, batch_size: int, device: torch.device | str) -> None:
        self.batch_size = batch_size
        self.ring = torch.zeros(batch_size, self.window, dtype=torch.float64, device=device)  # per token: sum_k logp
        self.sums = torch.zeros(batch_size, dtype=torch.float64, device=device)  # over the window
        self.count = torch.zeros(batch_size, dtype=torch.long, device=device)
        self._threshold_tensor(device)  # made before any graph capture (the fused kernel reads it)

    def _threshold_tensor(self, device: torch.device | str) -> torch.Tensor | None:
        """``threshold`` as a float64 [1] device tensor, remade only when the threshold was changed."""
        if self.threshold is None:
            return None
        if getattr(self, "_buf_of", None) != float(self.threshold):
            self.threshold_buf = torch.full((1,), float(self.threshold), dtype=torch.float64, device=device)
            self._buf_of = float(self.threshold)
        return self.threshold_buf

    def window_mean(self) -> torch.Tensor:
        """Current window mean confidence per row (meaningful where ``count >= window``)."""
        return -self.sums / (max(self.k, 1) * self.window)

    def __call__(self, top_logprobs: torch.Tensor, running: torch.Tensor) -> torch.Tensor:
        if top_logprobs.ndim != 2 or top_logprobs.shape[0] != self.batch_size:
            raise ValueError(f"top_logprobs must be [batch={self.batch_size}, k], got {tuple(top_logprobs.shape)}; "
                             "call reset(batch_size, device) first")
        self.k = int(top_logprobs.shape[1])
        use_fused = self.fused if self.fused is not None else (top_logprobs.is_cuda and fused_available())
        if use_fused:
            try:
                return window_stop_update(top_logprobs, running, self.ring, self.sums, self.count, self.threshold,
                                          self._threshold_tensor(self.ring.device))
            except Exception as exc:  # noqa: BLE001 (a Triton build or launch error)
                if self.fused is not None or _capturing():  # asked for, or inside a graph capture: not ours to mend
                    raise
                # auto mode, an eager call: a kernel that does not build here falls back to the torch form for the
                # rest of the run, with one warning, instead of failing the generation
                import warnings

                warnings.warn(f"the fused DeepConf stop kernel failed ({type(exc).__name__}: {exc}); using the "
                              "torch form", RuntimeWarning, stacklevel=2)
                self.fused = False
        # rows that are done keep their state; window mean confidence < threshold <=> the window's sum of
        # log-probs > -threshold * k * window
        return window_stop_update_ref(top_logprobs, running, self.ring, self.sums, self.count, self.threshold)


def _capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream (never on a machine without CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


@dataclass
class OnlineResult:
    answer: str | None
    correct: bool | None  # against gold when given, else the trace flags
    tokens: int  # every generated token: warm-up, finished and early-stopped traces
    traces_used: int  # traces launched (warm-up included)
    threshold: float
    stopped: int  # traces cut by the confidence threshold
    voters: int
    share: float | None  # final beta of the leading answer
    stop_reason: str  # "consensus" | "budget" | "pool" (replay ran out of traces)
    warmup_lowest: list[float]
    vote: VoteResult | None = None


class OnlineDeepConf:
    """The state of one online DeepConf run on one problem, shared by :func:`run_online` (live) and
    :func:`replay_online` (stored traces).

    Voters: warm-up traces whose lowest-group confidence is >= the threshold, plus later traces that
    were not stopped and whose recomputed lowest-group confidence is >= the threshold (the official
    post-hoc check: it also drops later traces shorter than the window whose whole-trace mean is
    below it). The consensus beta always weights by lowest-group confidence (Alg. 2), from a running
    tally in O(#answers) per check; the final vote uses ``recipe.online_vote_method`` (default the same).
    Replay assumes stored traces are complete (generated without a stop).

    ``variant=None``: the consensus stop alone. The threshold is -inf (nothing is stopped, every answered
    trace votes), beta and the final vote are unweighted (majority).
    """

    def __init__(self, variant: Variant | None = "low", recipe: DeepConfRecipe | None = None, *,
                 budget: int | None = None, adaptive: bool = True, classes: AnswerClasses | None = None):
        self.recipe = recipe or DeepConfRecipe()
        self.keep_percent = None if variant is None else self.recipe.eta(variant)
        self.variant = variant
        self.vote_method = "majority" if variant is None else self.recipe.online_vote_method
        self.budget = self.recipe.budget if budget is None else budget
        if self.budget < self.recipe.n_init:
            raise ValueError(f"budget {self.budget} is below the {self.recipe.n_init} warm-up traces")
        self.adaptive = adaptive
        self.classes = classes if classes is not None else AnswerClasses()
        self.threshold: float | None = None
        self.traces: list[Trace] = []
        self.voters: list[Trace] = []
        self.warmup_lowest: list[float] = []
        self._tally: dict[int, float] = {}
        self.stop_reason = "budget"

    @property
    def launched(self) -> int:
        return len(self.traces)

    def _lowest(self, t: Trace) -> float:
        return t.score("lowest_group", self.recipe.window, tail_tokens=self.recipe.tail_tokens)

    def _maybe_vote(self, t: Trace) -> None:
        if t.finish_reason == "early_stop":  # cut mid-thought (its scores are never needed)
            return
        low = self._lowest(t)
        if math.isnan(low) or low < self.threshold:
            return
        cls = self.classes(t.answer)
        if cls is None:
            return
        self.voters.append(t)
        self._tally[cls] = self._tally.get(cls, 0.0) + (1.0 if self.variant is None else low)

    def add_warmup(self, traces: Sequence[Trace]) -> float:
        if self.threshold is not None:
            raise RuntimeError("warm-up was already added")
        if not traces:
            raise ValueError("warm-up needs at least one trace")
        self.traces.extend(traces)
        self.warmup_lowest = [self._lowest(t) for t in traces]
        self.threshold = (-math.inf if self.keep_percent is None
                          else warmup_threshold(self.warmup_lowest, self.keep_percent))
        for t in traces:
            self._maybe_vote(t)
        return self.threshold

    def add(self, traces: Sequence[Trace]) -> None:
        if self.threshold is None:
            raise RuntimeError("add the warm-up traces first (add_warmup)")
        self.traces.extend(traces)
        for t in traces:
            self._maybe_vote(t)

    def share(self) -> float | None:
        """beta = V(leading answer) / sum_a V(a); None while no trace votes."""
        total = sum(self._tally.values())
        return max(self._tally.values()) / total if self._tally and total > 0 else None

    def should_launch(self) -> bool:
        """Checked before each new trace (or batch) after warm-up."""
        if self.launched >= self.budget:
            self.stop_reason = "budget"
            return False
        beta = self.share()
        if self.adaptive and beta is not None and beta >= self.recipe.tau:
            self.stop_reason = "consensus"
            return False
        return True

    def result(self, gold: str | None = None) -> OnlineResult:
        if self.threshold is None:
            raise RuntimeError("no warm-up yet")
        v = vote(self.voters, self.vote_method, window=self.recipe.window,
                 tail_tokens=self.recipe.tail_tokens, classes=self.classes)
        answer = v.answer if v else None
        if gold is not None:
            correct: bool | None = answer_matches(answer, gold, self.classes)
        elif v is not None:
            correct = v.correct
        else:  # nobody voted: wrong if the traces were graded at all
            correct = False if any(t.correct is not None for t in self.traces) else None
        return OnlineResult(answer=answer, correct=correct, tokens=int(sum(t.num_tokens for t in self.traces)),
                            traces_used=self.launched, threshold=self.threshold,
                            stopped=sum(t.finish_reason == "early_stop" for t in self.traces),
                            voters=len(self.voters), share=v.share if v else None, stop_reason=self.stop_reason,
                            warmup_lowest=list(self.warmup_lowest), vote=v)


SampleFn = Callable[[int, "EarlyStopController | None"], Sequence[Any]]


def run_online(sample_fn: SampleFn, variant: Variant | None = "low", recipe: DeepConfRecipe | None = None, *,
               budget: int | None = None, batch_size: int | None = None, adaptive: bool = True,
               gold: str | None = None, problem_id: str = "", classes: AnswerClasses | None = None,
               grade: Callable[[str | None], bool | None] | None = None) -> OnlineResult:
    """Live online DeepConf with our generation engine.

    ``sample_fn(n, early_stop)`` must return ``n`` :class:`falcon_h1r.inference.Completion` for the
    problem (e.g. ``lambda n, es: generate(model, tok, [prompt] * n, cfg, seed=next(seeds), early_stop=es)``:
    each call must draw fresh samples, so vary the seed). Warm-up
    is one call with ``early_stop=None``; afterwards traces are launched in batches of ``batch_size``
    (default ``recipe.online_batch_size``) with an :class:`EarlyStopController` at the threshold.
    Live serving cannot stop traces already in flight, so the consensus check runs between batches:
    batch size 1 is the paper's sequential protocol, larger batches trade tokens for wall time.

    Answers are extracted and grouped for the answer kind of ``classes`` (default ``math``). Grading:
    ``gold`` grades the voted answer under that equivalence; ``grade(answer) -> bool`` instead grades every
    trace's answer (e.g. ``lambda a: tracestore.grade_answer(a, problem)``), and the result takes the
    winning trace's flag, as in replay. ``variant=None``: the consensus stop alone (see :class:`OnlineDeepConf`).
    """
    state = OnlineDeepConf(variant, recipe, budget=budget, adaptive=adaptive, classes=classes)
    rec = state.recipe
    batch_size = rec.online_batch_size if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def sample(n: int, early_stop: EarlyStopController | None) -> list[Trace]:
        comps = list(sample_fn(n, early_stop))
        if len(comps) != n:
            raise ValueError(f"sample_fn({n}, ...) returned {len(comps)} completions; it must return exactly {n}")
        ks = {int(np.shape(c.top_logprobs)[1]) for c in comps if len(c.token_ids)}
        if ks - {rec.top_k}:
            raise ValueError(f"completions carry top-{sorted(ks)} log-probs but the recipe's confidence uses "
                             f"top_k={rec.top_k}; generate with generation.top_logprobs={rec.top_k}")
        start = state.launched
        traces = [trace_from_completion(c, trace_idx=start + i, problem_id=problem_id, kind=state.classes.kind,
                                        choices=state.classes.choices) for i, c in enumerate(comps)]
        if grade is not None:
            for t in traces:
                t.correct = grade(t.answer)
        return traces

    state.add_warmup(sample(rec.n_init, None))
    controller = EarlyStopController(threshold=state.threshold, window=rec.window)
    while state.should_launch():
        state.add(sample(min(batch_size, state.budget - state.launched), controller))
    return state.result(gold)


def truncate_at_threshold(trace: Trace, threshold: float, window: int = WINDOW) -> Trace:
    """What the live stop would have left of a stored complete trace: cut at the first token where the
    full-window mean drops below ``threshold`` (that token counted), no answer. Unchanged otherwise."""
    stop = first_stop_index(trace.confidences, threshold, window, lows=trace.lows(window))
    if stop is None:
        return trace
    return Trace(confidences=trace.confidences[:stop + 1], answer=None, correct=None, finish_reason="early_stop",
                 num_tokens=stop + 1, problem_id=trace.problem_id, trace_idx=trace.trace_idx)


def replay_online(pool_traces: Sequence[Trace], variant: Variant | None = "low", recipe: DeepConfRecipe | None = None, *,
                  budget: int | None = None, batch_size: int = 1, adaptive: bool = True, gold: str | None = None,
                  classes: AnswerClasses | None = None) -> OnlineResult:
    """Online DeepConf replayed over stored complete traces, in the given order (how the DeepConf paper
    evaluated it): the first ``n_init`` are the warm-up, each later one is truncated where its window
    mean first drops below the threshold; the consensus check runs before each batch (default: each
    trace). If the pool runs out before the budget, the run ends with ``stop_reason="pool"``."""
    state = OnlineDeepConf(variant, recipe, budget=budget, adaptive=adaptive, classes=classes)
    rec = state.recipe
    if len(pool_traces) < rec.n_init:
        raise ValueError(f"replay needs at least n_init={rec.n_init} traces, got {len(pool_traces)}")
    state.add_warmup(list(pool_traces[:rec.n_init]))
    pos = rec.n_init
    while state.should_launch():
        if pos >= len(pool_traces):
            state.stop_reason = "pool"
            break
        n = min(batch_size, state.budget - state.launched, len(pool_traces) - pos)
        state.add([truncate_at_threshold(t, state.threshold, rec.window) for t in pool_traces[pos:pos + n]])
        pos += n
    return state.result(gold)


__all__ = ["warmup_threshold", "EarlyStopController", "OnlineResult", "OnlineDeepConf", "run_online",
           "truncate_at_threshold", "replay_online"]
