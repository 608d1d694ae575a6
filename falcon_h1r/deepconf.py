"""DeepConf (Fu et al. 2025, arXiv 2508.15260): confidence-filtered voting and confidence-based early
stopping of reasoning traces, the test-time scaling method of the paper's §5.

Signal. Each generated token gets a *token confidence*: the negative mean of the top-k (k = 20)
log-probs of the raw (untempered) next-token distribution. A peaked distribution gives a large value,
so higher means more confident. Trace scores are built from sliding windows of it.

Windows. A *group* is the mean confidence of ``window`` consecutive tokens (default 2048), stride 1,
full windows only. A trace shorter than the window has no full window; it gets ONE group value, the
mean of all its tokens, as the official code does (``compute_least_grouped``). Such a trace can never
be stopped online (its window never fills). A trace with no tokens at all has no confidence: its
scores are NaN, it is ranked last by :func:`filter_top_eta` and it never carries a weighted vote.

Trace scores (:class:`TraceScores`): ``lowest_group`` (min window), ``bottom10_group`` (mean of the
lowest ``max(1, floor(10 % of #windows))`` windows), ``tail`` (mean of the last 2048 tokens, or of all
of them), ``mean``.

Offline (paper Alg. 1): keep the top-eta % of traces by a score (:func:`filter_top_eta`), then
:func:`vote` with one of the paper's five rules. Answers that math-verify finds equal share a vote
(:class:`AnswerClasses`); the official code groups by exact string instead (deepconf issue #15).

Online (paper Alg. 2): N_init = 16 warm-up traces run to completion; the stop threshold is a
percentile of their lowest-group confidences; later traces stop as soon as their current full-window
mean drops below it (:class:`EarlyStopController` inside our generation loop); sampling stops at the
budget or once the weighted share of the leading answer reaches tau = 0.95 (the adaptive consensus
stop, which no official release implements: they launch the whole budget at once; deepconf PR #10).

eta convention, the one used everywhere here: eta is the percentage of traces KEPT.
``variant="low"`` keeps the top 10 % (threshold = 90th percentile of the warm-up lowest-group
confidences), ``variant="high"`` keeps the top 90 % (threshold = 10th percentile); ``np.percentile``
with linear interpolation. (The official repo uses both ``p`` and ``100 - p`` in different branches.)
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from falcon_h1r.config import RecipeError
from falcon_h1r.verify import extract_boxed, final_answer_part, math_verify_equal, normalize_math, to_rational

WINDOW = 2048  # DeepConf §3.1: group size n = 2048 tokens (512 / 1024 also tried, Table 8)
TOP_K = 20  # vLLM logprobs=20 in every official code path
SCORES = ("lowest_group", "bottom10_group", "tail", "mean")
# The five rules of the paper / official ``compute_all_voting_results``, and the score each weights by.
VOTE_METHODS = ("majority", "mean_confidence_weighted", "tail_confidence_weighted", "bottom_window_weighted",
                "min_window_weighted")
SCORE_OF_METHOD: dict[str, str | None] = {
    "majority": None,
    "mean_confidence_weighted": "mean",
    "tail_confidence_weighted": "tail",
    "bottom_window_weighted": "bottom10_group",
    "min_window_weighted": "lowest_group",
}
Variant = Literal["low", "high"]
VOTE_DOMAINS = ("math", "science")  # task domains with final answers to vote on (code is graded by tests)


# ============================================================================== recipe
@dataclass
class DeepConfRecipe:
    """The ``deepconf`` block of a preset. Defaults are the DeepConf paper's values."""

    window: int = WINDOW  # §3.1 group size; Table 8 ablates 512/1K/2K
    top_k: int = TOP_K  # §2 / all official code: logprobs=20 (generation.top_logprobs must match)
    tail_tokens: int = 2048  # §3.1 tail confidence over the last 2048 tokens
    n_init: int = 16  # Table 12: N_init = 16 warm-up traces
    budget: int = 512  # Table 2: budget B = 512
    budgets: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])  # Table 12: B sweep
    eta_low: float = 10.0  # Table 12: DeepConf-low keeps the top 10 %
    eta_high: float = 90.0  # Table 12: DeepConf-high keeps the top 90 %
    tau: float = 0.95  # Table 12 / App. B.1: consensus threshold
    voting_methods: list[str] = field(default_factory=lambda: list(VOTE_METHODS))  # §3.2 / Table 1
    online_vote_method: str = "min_window_weighted"  # Alg. 2: vote weighted by lowest-group confidence
    n_resamples: int = 64  # §4: every number is a mean over 64 resamplings of a larger pool
    online_batch_size: int = 1  # traces per live batch after warm-up; 1 = the paper's sequential replay
    # ---- the section's experiment (falcon_h1r.deepconf_experiments): which problems, how many traces
    domains: list[str] = field(default_factory=lambda: list(VOTE_DOMAINS))  # answers that can be voted on
    candidates: int = 0  # held-out problems screened per domain (0: all of the preset's test problems)
    screen_samples: int = 8  # samples per candidate for its pass-rate estimate; 0: no screening (whole benchmarks)
    max_problems: int = 30  # problems kept for the pool (the DeepConf paper's benchmarks have 30)
    pool_size: int = 0  # complete traces per problem (0: twice the largest budget; the DeepConf paper: 4096)
    live_problems: int = 3  # problems for the live online run (per variant)
    keep_token_ids: bool = True  # store token ids in traces.parquet (text can be decoded back)
    # When no screened problem qualifies, run on the first screened ones anyway (every vote then agrees
    # with pass@1: only for smoke tests of the pipeline; the run's info and the notebook say so).
    allow_unqualified: bool = False

    def __post_init__(self) -> None:
        for name in ("window", "top_k", "tail_tokens", "n_init", "budget", "n_resamples", "online_batch_size"):
            if getattr(self, name) < 1:
                raise RecipeError(f"deepconf.{name}: must be >= 1, got {getattr(self, name)}")
        if self.top_k > 20:
            raise RecipeError(f"deepconf.top_k: must be in 1..20 (generation keeps at most 20), got {self.top_k}")
        for name in ("eta_low", "eta_high"):
            if not 0 < getattr(self, name) <= 100:
                raise RecipeError(f"deepconf.{name}: a kept percentage in (0, 100], got {getattr(self, name)}")
        if not 0 < self.tau <= 1:
            raise RecipeError(f"deepconf.tau: must be in (0, 1], got {self.tau}")
        for b in [self.budget, *self.budgets]:
            if b < self.n_init:
                raise RecipeError(f"deepconf.budget/budgets: every budget must be >= n_init={self.n_init}, got {b}")
        bad = [m for m in [*self.voting_methods, self.online_vote_method] if m not in VOTE_METHODS]
        if bad:
            raise RecipeError(f"deepconf.voting_methods: {bad} not accepted; use some of {list(VOTE_METHODS)}")
        bad = [d for d in self.domains if d not in VOTE_DOMAINS]
        if bad or not self.domains:
            raise RecipeError(f"deepconf.domains: {bad or self.domains} not accepted; use a non-empty subset of "
                              f"{list(VOTE_DOMAINS)} (code answers are graded by tests, not voted on)")
        for name in ("candidates", "live_problems"):
            if getattr(self, name) < 0:
                raise RecipeError(f"deepconf.{name}: must be >= 0, got {getattr(self, name)}")
        if self.screen_samples == 1 or self.screen_samples < 0:
            raise RecipeError(f"deepconf.screen_samples: must be >= 2 (one sample cannot show 0 < rate < 1), or 0 "
                              f"for no screening; got {self.screen_samples}")
        if self.max_problems < 1:
            raise RecipeError(f"deepconf.max_problems: must be >= 1, got {self.max_problems}")
        if self.pool_size and self.pool_size < self.max_budget:
            raise RecipeError(f"deepconf.pool_size: {self.pool_size} is below the largest budget {self.max_budget}; "
                              "a resampling draws K traces from the pool without replacement")

    @property
    def max_budget(self) -> int:
        return max([self.budget, *self.budgets])

    @property
    def pool(self) -> int:
        """Traces per problem in the pool."""
        return self.pool_size or 2 * self.max_budget

    def eta(self, variant: Variant) -> float:
        """Kept percentage of a DeepConf variant: low -> eta_low (10), high -> eta_high (90)."""
        if variant not in ("low", "high"):
            raise ValueError(f"variant {variant!r} not accepted; use 'low' (keep top 10 %) or 'high' (top 90 %)")
        return self.eta_low if variant == "low" else self.eta_high


# ============================================================================== confidences
def token_confidence(top_logprobs: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``[T, k]`` raw top-k log-probs -> ``[T]`` confidences ``-mean_k``; ``[0, k]`` gives ``[0]``."""
    arr = np.asarray(top_logprobs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"top_logprobs must be a [T, k] array of log-probs, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError("top_logprobs has k = 0 columns; DeepConf needs the top-k (k = 20) log-probs")
    return (-arr.mean(axis=1)).astype(np.float32)


def _check_window(window: int) -> None:
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer number of tokens, got {window!r}")


def window_means(confidences: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Means of every FULL window of ``window`` tokens, stride 1 (``[T - window + 1]``, empty if T < window).

    Vectorised with a float64 cumulative sum; :func:`window_means_reference` is the plain twin.
    """
    _check_window(window)
    conf = np.asarray(confidences, dtype=np.float64)
    if conf.size < window:
        return np.empty(0, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(conf)])
    return (csum[window:] - csum[:-window]) / window


def window_means_reference(confidences: Sequence[float], window: int = WINDOW) -> np.ndarray:
    """Plain-loop twin of :func:`window_means` (tests compare the two)."""
    conf = [float(c) for c in confidences]
    out = [sum(conf[i:i + window]) / window for i in range(len(conf) - window + 1)]
    return np.asarray(out, dtype=np.float64)


def group_confidences(confidences: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """The trace's group values: the full-window means, or ``[mean of all tokens]`` for a short trace
    (official ``compute_least_grouped``), or empty for an empty trace."""
    wm = window_means(confidences, window)
    conf = np.asarray(confidences, dtype=np.float64)
    if wm.size == 0 and conf.size > 0:
        return np.array([conf.mean()])
    return wm


@dataclass(frozen=True)
class TraceScores:
    lowest_group: float
    bottom10_group: float
    tail: float
    mean: float
    num_windows: int  # full windows (0 for a trace shorter than the window)

    def get(self, name: str) -> float:
        if name not in SCORES:
            raise ValueError(f"unknown score {name!r}; use one of {list(SCORES)}")
        return getattr(self, name)


def _bottom_mean(groups: np.ndarray, fraction: float) -> float:
    n_bottom = max(1, int(fraction * groups.size))  # official: max(1, int(0.1 * #windows))
    return float(np.partition(groups, n_bottom - 1)[:n_bottom].mean())


def trace_scores(confidences: np.ndarray, window: int = WINDOW, *, tail_tokens: int = 2048,
                 bottom_fraction: float = 0.1) -> TraceScores:
    """All four trace scores (batch, vectorised). An empty trace gets NaN everywhere."""
    conf = np.asarray(confidences, dtype=np.float64)
    if conf.size == 0:
        return TraceScores(math.nan, math.nan, math.nan, math.nan, 0)
    wm = window_means(conf, window)
    groups = wm if wm.size else np.array([conf.mean()])
    return TraceScores(lowest_group=float(groups.min()), bottom10_group=_bottom_mean(groups, bottom_fraction),
                       tail=float(conf[-tail_tokens:].mean()), mean=float(conf.mean()), num_windows=int(wm.size))


class StreamingConfidence:
    """O(1)-per-token twin of :func:`trace_scores`: a ring buffer of the last ``window`` confidences,
    a running window sum, a running total and the running lowest window.

    ``push`` returns the current full-window mean (None until the window is full). The window means
    are also kept (one float per token, appended) so that ``scores()`` can give the bottom-10 % value
    at the end; everything the online stop needs is O(1).
    """

    def __init__(self, window: int = WINDOW, *, tail_tokens: int = 2048, bottom_fraction: float = 0.1):
        _check_window(window)
        self.window, self.tail_tokens, self.bottom_fraction = window, tail_tokens, bottom_fraction
        self._ring = np.zeros(window, dtype=np.float64)
        self._tail = np.zeros(tail_tokens, dtype=np.float64)
        self._window_sum = 0.0
        self._tail_sum = 0.0
        self._total = 0.0
        self.n_tokens = 0
        self.lowest: float = math.inf
        self.means: list[float] = []

    def push(self, confidence: float) -> float | None:
        c = float(confidence)
        slot = self.n_tokens % self.window
        self._window_sum += c - self._ring[slot]
        self._ring[slot] = c
        tslot = self.n_tokens % self.tail_tokens
        self._tail_sum += c - self._tail[tslot]
        self._tail[tslot] = c
        self._total += c
        self.n_tokens += 1
        if self.n_tokens < self.window:
            return None
        mean = self._window_sum / self.window
        self.means.append(mean)
        self.lowest = min(self.lowest, mean)
        return mean

    def push_top_logprobs(self, top_logprobs: Sequence[float]) -> float | None:
        """Push one decode step's top-k log-probs."""
        return self.push(-float(np.mean(np.asarray(top_logprobs, dtype=np.float64))))

    @property
    def is_full(self) -> bool:
        return self.n_tokens >= self.window

    def scores(self) -> TraceScores:
        if self.n_tokens == 0:
            return TraceScores(math.nan, math.nan, math.nan, math.nan, 0)
        mean = self._total / self.n_tokens
        tail = self._tail_sum / min(self.n_tokens, self.tail_tokens)
        if not self.means:
            return TraceScores(mean, mean, tail, mean, 0)
        groups = np.asarray(self.means)
        return TraceScores(self.lowest, _bottom_mean(groups, self.bottom_fraction), tail, mean, len(self.means))


def record_lows(confidences: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Where the running minimum of the full-window means drops: (window indices, values), values
    strictly decreasing. Enough to answer "where would threshold s stop this trace" for any s with
    one binary search, which makes replaying many thresholds over one pool cheap."""
    wm = window_means(confidences, window)
    if wm.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    running_min = np.minimum.accumulate(wm)
    new_low = np.concatenate([[True], wm[1:] < running_min[:-1]])
    idx = np.flatnonzero(new_low)
    return idx, wm[idx]


def first_stop_index(confidences: np.ndarray, threshold: float, window: int = WINDOW, *,
                     lows: tuple[np.ndarray, np.ndarray] | None = None) -> int | None:
    """Index of the token at which the full-window mean first falls below ``threshold`` (that token is
    generated and counted), or None if it never does (including every trace shorter than the window)."""
    idx, vals = lows if lows is not None else record_lows(confidences, window)
    n_at_or_above = int(np.searchsorted(-vals, -threshold, side="right"))  # vals >= threshold
    if n_at_or_above >= vals.size:
        return None
    return int(idx[n_at_or_above]) + window - 1


# ============================================================================== answers
def extract_answer(text: str | None) -> str | None:
    """The answer a trace votes for, or None.

    math-verify first, on the answer part (after ``</think>``), with its anchored extractors only
    (``\\boxed{}``, "the final answer is ..."): without anchors it would pull a stray number out of an
    unfinished chain of thought, which the paper's boxed-only extraction never votes for. If
    math-verify finds nothing it can parse (e.g. ``\\boxed{Yes}`` fails on some inputs), fall back to
    the last ``\\boxed{}`` content. Empty answers count as none.

    Fast path (the same string, ~1000x cheaper; pools hold 10^4+ traces): an answer part whose only
    box holds a plain integer returns it without calling math-verify, whose anchored extraction would
    pick the same box and print the integer unchanged (decimals and fractions it rewrites, e.g.
    ``0.5`` -> ``\\frac{1}{2}``, so those still go through it).
    """
    if not isinstance(text, str) or not text:
        return None
    part = final_answer_part(text)
    if part.count("\\boxed") == 1 and "final answer" not in part.lower():
        boxed = extract_boxed(part)
        if boxed and _INTEGER.fullmatch(boxed):
            return boxed
    return _extract_answer_math_verify(part)


_INTEGER = re.compile(r"-?\d+")


def _extract_answer_math_verify(part: str) -> str | None:
    """:func:`extract_answer` without its fast path (the tests compare the two)."""
    try:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

        # signal.alarm (math-verify's timeout) only works on the main thread.
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        parsed = parse(part, extraction_config=[LatexExtractionConfig(try_extract_without_anchor=False),
                                                ExprExtractionConfig(try_extract_without_anchor=False)],
                       parsing_timeout=timeout)
    except Exception:  # a math-verify failure means "no parse", never a crash
        parsed = []
    if len(parsed) >= 2 and str(parsed[1]).strip():
        return str(parsed[1]).strip()
    boxed = extract_boxed(part)
    return boxed if boxed else None


def _tier1_key(answer: str) -> tuple[str, Any]:
    value = to_rational(answer)
    return ("q", value) if value is not None else ("s", normalize_math(answer))


class AnswerClasses:
    """Equivalence classes of answer strings, so that ``0.5`` and ``\\frac{1}{2}`` share a vote.

    Tier 1 (normalized string / exact rational, free) first; math-verify only for an answer whose
    tier-1 key is new, and only against each existing class's first answer (its leader), skipping
    pairs that are both plain rationals (tier 1 already decided those). Class ids follow first
    appearance. Memoized per string, so one instance shared across many votes over one problem's pool
    (e.g. 64 resamplings) calls math-verify at most once per pair of distinct answers.
    """

    def __init__(self, use_math_verify: bool = True):
        self.use_math_verify = use_math_verify
        self._by_string: dict[str, int] = {}
        self._by_key: dict[tuple[str, Any], int] = {}
        self.leaders: list[str] = []

    def __call__(self, answer: str | None) -> int | None:
        if answer is None or not str(answer).strip():
            return None
        answer = str(answer)
        if answer in self._by_string:
            return self._by_string[answer]
        key = _tier1_key(answer)
        cls = self._by_key.get(key)
        if cls is None and self.use_math_verify:
            for c, leader in enumerate(self.leaders):
                if key[0] == "q" and _tier1_key(leader)[0] == "q":
                    continue
                if math_verify_equal(answer, leader):
                    cls = c
                    break
        if cls is None:
            cls = len(self.leaders)
            self.leaders.append(answer)
        self._by_key.setdefault(key, cls)
        self._by_string[answer] = cls
        return cls


# ============================================================================== traces
@dataclass(eq=False)  # identity: a generated __eq__ would compare the confidence arrays and raise
class Trace:
    """One reasoning trace as DeepConf sees it (what the trace store saves)."""

    confidences: np.ndarray  # [T] float32 token confidences
    answer: str | None = None
    correct: bool | None = None
    finish_reason: str = "eos"  # "eos" | "length" | "early_stop"
    num_tokens: int | None = None  # generated tokens; defaults to len(confidences)
    problem_id: str = ""
    trace_idx: int = 0
    token_ids: list[int] | None = None
    text: str | None = None
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.confidences = np.asarray(self.confidences, dtype=np.float32).reshape(-1)
        if self.num_tokens is None:
            self.num_tokens = int(self.confidences.size)

    def scores(self, window: int = WINDOW, *, tail_tokens: int = 2048, bottom_fraction: float = 0.1) -> TraceScores:
        key = ("scores", window, tail_tokens, bottom_fraction)
        if key not in self._cache:
            self._cache[key] = trace_scores(self.confidences, window, tail_tokens=tail_tokens,
                                            bottom_fraction=bottom_fraction)
        return self._cache[key]

    def score(self, name: str, window: int = WINDOW, **kw: Any) -> float:
        return self.scores(window, **kw).get(name)

    def lows(self, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
        key = ("lows", window)
        if key not in self._cache:
            self._cache[key] = record_lows(self.confidences, window)
        return self._cache[key]


def trace_from_completion(completion: Any, *, trace_idx: int = 0, problem_id: str = "") -> Trace:
    """A :class:`falcon_h1r.inference.Completion` -> :class:`Trace`. Early-stopped traces were cut
    mid-thought and do not vote, so their answer is not extracted."""
    stopped = completion.finish_reason == "early_stop"
    return Trace(confidences=token_confidence(completion.top_logprobs) if len(completion.token_ids) else [],
                 answer=None if stopped else extract_answer(completion.text), finish_reason=completion.finish_reason,
                 num_tokens=len(completion.token_ids), problem_id=problem_id, trace_idx=trace_idx,
                 token_ids=list(completion.token_ids), text=completion.text)


def is_correct(answer: str | None, gold: str | None) -> bool:
    """Grade a voted answer against the ground truth (tier 1, then math-verify)."""
    from falcon_h1r.verify import math_equal

    return answer is not None and gold is not None and math_equal(answer, str(gold))


# ============================================================================== offline
def _sort_score(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def n_kept(n: int, eta: float) -> int:
    """How many of ``n`` traces the top-eta % keeps: ``max(1, floor(eta * n / 100))`` (as TensorRT-LLM;
    K = 512, eta = 10 keeps 51, the paper's "about 51"); 0 for no traces."""
    if not 0 < eta <= 100:
        raise ValueError(f"eta is the kept percentage, in (0, 100]; got {eta}")
    return 0 if n == 0 else max(1, int(math.floor(eta * n / 100 + 1e-9)))


def filter_top_eta(traces: Sequence[Trace], score: str, eta: float, *, window: int = WINDOW,
                   tail_tokens: int = 2048) -> list[Trace]:
    """Keep exactly :func:`n_kept` traces with the highest ``score``, returned in their input order.

    Ties are broken by input order (the earlier trace is kept), so exactly ``n_kept`` survive; the
    official package keeps every trace ``>= np.percentile(scores, 100 - eta)``, which can keep more
    on ties. NaN scores (empty traces) rank last.
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; use one of {list(SCORES)}")
    k = n_kept(len(traces), eta)
    values = [_sort_score(t.score(score, window, tail_tokens=tail_tokens)) for t in traces]
    order = sorted(range(len(traces)), key=lambda i: (-values[i], i))[:k]
    return [traces[i] for i in sorted(order)]


@dataclass
class VoteResult:
    answer: str  # the first voter's answer string in the winning class
    answer_class: int
    share: float  # beta = V(winner) / sum_a V(a)
    weights: dict[str, float]  # class (by its first voter's answer) -> summed weight
    n_voters: int
    correct: bool | None  # the winning class's first voter's ``correct`` flag, if known


def vote(traces: Sequence[Trace], method: str = "majority", *, window: int = WINDOW, tail_tokens: int = 2048,
         classes: AnswerClasses | None = None) -> VoteResult | None:
    """Vote over ``traces``: majority, or weighted by a trace score (``VOTE_METHODS``).

    Traces with no answer do not vote; in weighted votes, neither do traces whose score is NaN (no
    tokens). Returns None if nobody votes. Equivalent answers share a class (:class:`AnswerClasses`).
    Ties go to the class whose first voter comes first in ``traces``.
    """
    if method not in SCORE_OF_METHOD:
        raise ValueError(f"unknown voting method {method!r}; use one of {list(VOTE_METHODS)}")
    score = SCORE_OF_METHOD[method]
    classes = classes if classes is not None else AnswerClasses()
    tally: dict[int, float] = {}
    first: dict[int, Trace] = {}
    n_voters = 0
    for t in traces:
        cls = classes(t.answer)
        if cls is None:
            continue
        weight = 1.0 if score is None else t.score(score, window, tail_tokens=tail_tokens)
        if math.isnan(weight):
            continue
        n_voters += 1
        tally[cls] = tally.get(cls, 0.0) + weight
        first.setdefault(cls, t)
    if not tally:
        return None
    best = max(tally, key=lambda c: tally[c])  # max() keeps the first of equal keys
    total = sum(tally.values())
    rep = first[best]
    return VoteResult(answer=str(rep.answer), answer_class=best, share=tally[best] / total if total > 0 else 1.0,
                      weights={str(first[c].answer): w for c, w in tally.items()}, n_voters=n_voters,
                      correct=rep.correct)


def offline_vote(traces: Sequence[Trace], method: str, eta: float | None = None, *, window: int = WINDOW,
                 tail_tokens: int = 2048, answered_only: bool = True,
                 classes: AnswerClasses | None = None) -> VoteResult | None:
    """Offline DeepConf: optionally keep the top-eta % by the method's own score, then vote.

    ``answered_only`` (default, as the official analysis code) ranks only traces that have an answer;
    False ranks all traces (paper Alg. 1 literally), so unanswered ones can take kept slots.
    ``eta=None`` is the paper's Measure@K (weighted, no filter).
    """
    classes = classes if classes is not None else AnswerClasses()
    pool = [t for t in traces if classes(t.answer) is not None] if answered_only else list(traces)
    if eta is not None:
        score = SCORE_OF_METHOD.get(method)
        if score is None:
            raise ValueError(f"eta filtering needs a weighted method (the score it ranks by); got {method!r}")
        pool = filter_top_eta(pool, score, eta, window=window, tail_tokens=tail_tokens)
    return vote(pool, method, window=window, tail_tokens=tail_tokens, classes=classes)


@dataclass
class OfflineResult:
    answer: str | None
    correct: bool | None  # against gold when given, else the winning trace's flag
    tokens: int  # every trace was generated in full
    traces_used: int
    kept: int  # traces left after the top-eta filter (all, without eta)
    voters: int
    cutoff: float | None  # lowest kept score (None without eta)
    share: float | None
    vote: VoteResult | None = None


def run_offline(traces: Sequence[Trace], method: str = "min_window_weighted", eta: float | None = None, *,
                gold: str | None = None, window: int = WINDOW, tail_tokens: int = 2048, answered_only: bool = True,
                classes: AnswerClasses | None = None) -> OfflineResult:
    """Offline DeepConf on one problem's traces (:func:`offline_vote`), with the token bill."""
    classes = classes if classes is not None else AnswerClasses()
    v = offline_vote(traces, method, eta, window=window, tail_tokens=tail_tokens, answered_only=answered_only,
                     classes=classes)  # first: it rejects a bad method / eta pair with a clear message
    pool = [t for t in traces if classes(t.answer) is not None] if answered_only else list(traces)
    score = SCORE_OF_METHOD[method]
    kept = pool if eta is None or score is None else filter_top_eta(pool, score, eta, window=window,
                                                                    tail_tokens=tail_tokens)
    cutoff = None
    if eta is not None and score is not None and kept:
        cutoff = min(t.score(score, window, tail_tokens=tail_tokens) for t in kept)
    answer = v.answer if v else None
    correct = is_correct(answer, gold) if gold is not None else (v.correct if v else None)
    return OfflineResult(answer=answer, correct=correct, tokens=int(sum(t.num_tokens for t in traces)),
                         traces_used=len(traces), kept=len(kept), voters=v.n_voters if v else 0, cutoff=cutoff,
                         share=v.share if v else None, vote=v)


# ============================================================================== online
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
    window`` instead of dividing (about 12 small kernels instead of about 20; the target is <= 3 %
    of a decode step). :class:`StreamingConfidence` is the plain per-trace twin the tests compare it to.
    """

    graph_safe = True  # its state lives in device tensors updated in place: the engine may capture it

    def __init__(self, threshold: float | None = None, window: int = WINDOW):
        _check_window(window)
        self.threshold = threshold
        self.window = window
        self.batch_size = 0
        self.k = 0

    def reset(self, batch_size: int, device: torch.device | str) -> None:
        self.batch_size = batch_size
        self.ring = torch.zeros(batch_size, self.window, dtype=torch.float64, device=device)  # per token: sum_k logp
        self.sums = torch.zeros(batch_size, dtype=torch.float64, device=device)  # over the window
        self.count = torch.zeros(batch_size, dtype=torch.long, device=device)

    def window_mean(self) -> torch.Tensor:
        """Current window mean confidence per row (meaningful where ``count >= window``)."""
        return -self.sums / (max(self.k, 1) * self.window)

    def __call__(self, top_logprobs: torch.Tensor, running: torch.Tensor) -> torch.Tensor:
        if top_logprobs.ndim != 2 or top_logprobs.shape[0] != self.batch_size:
            raise ValueError(f"top_logprobs must be [batch={self.batch_size}, k], got {tuple(top_logprobs.shape)}; "
                             "call reset(batch_size, device) first")
        self.k = int(top_logprobs.shape[1])
        total = top_logprobs.sum(-1, dtype=torch.float64)[:, None]  # -k * confidence
        slot = (self.count % self.window)[:, None]
        old = self.ring.gather(1, slot)
        new = torch.where(running[:, None], total, old)  # rows that are done keep their state
        self.ring.scatter_(1, slot, new)
        self.sums += (new - old)[:, 0]
        self.count += running
        if self.threshold is None:
            return torch.zeros_like(running)
        # window mean confidence < threshold  <=>  sum of the window's log-probs > -threshold * k * window
        return running & (self.count >= self.window) & (self.sums > -float(self.threshold) * self.k * self.window)


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
    """

    def __init__(self, variant: Variant = "low", recipe: DeepConfRecipe | None = None, *, budget: int | None = None,
                 adaptive: bool = True, classes: AnswerClasses | None = None):
        self.recipe = recipe or DeepConfRecipe()
        self.keep_percent = self.recipe.eta(variant)
        self.variant = variant
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
        self._tally[cls] = self._tally.get(cls, 0.0) + low

    def add_warmup(self, traces: Sequence[Trace]) -> float:
        if self.threshold is not None:
            raise RuntimeError("warm-up was already added")
        if not traces:
            raise ValueError("warm-up needs at least one trace")
        self.traces.extend(traces)
        self.warmup_lowest = [self._lowest(t) for t in traces]
        self.threshold = warmup_threshold(self.warmup_lowest, self.keep_percent)
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
        v = vote(self.voters, self.recipe.online_vote_method, window=self.recipe.window,
                 tail_tokens=self.recipe.tail_tokens, classes=self.classes)
        answer = v.answer if v else None
        if gold is not None:
            correct: bool | None = is_correct(answer, gold)
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


def run_online(sample_fn: SampleFn, variant: Variant = "low", recipe: DeepConfRecipe | None = None, *,
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

    Grading: ``gold`` grades the voted answer with the math grader; ``grade(answer) -> bool`` instead
    grades every trace's answer (e.g. ``lambda a: tracestore.grade_answer(a, problem)``, which also
    knows science tolerances), and the result takes the winning trace's flag, as in replay.
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
        traces = [trace_from_completion(c, trace_idx=start + i, problem_id=problem_id) for i, c in enumerate(comps)]
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


def replay_online(pool_traces: Sequence[Trace], variant: Variant = "low", recipe: DeepConfRecipe | None = None, *,
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


__all__ = [
    "WINDOW", "TOP_K", "SCORES", "VOTE_METHODS", "SCORE_OF_METHOD", "VOTE_DOMAINS", "DeepConfRecipe",
    "token_confidence",
    "window_means", "window_means_reference", "group_confidences", "TraceScores", "trace_scores",
    "StreamingConfidence", "record_lows", "first_stop_index", "extract_answer", "AnswerClasses", "Trace",
    "trace_from_completion", "is_correct", "n_kept", "filter_top_eta", "VoteResult", "vote", "offline_vote",
    "OfflineResult", "run_offline",
    "warmup_threshold", "EarlyStopController", "OnlineResult", "OnlineDeepConf", "run_online",
    "truncate_at_threshold", "replay_online",
]
