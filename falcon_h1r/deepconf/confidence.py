"""Token and trace confidences: the signal DeepConf filters and stops on.

Each generated token gets a *token confidence*: the negative mean of the top-k (k = 20) log-probs of the
raw (untempered) next-token distribution. A peaked distribution gives a large value, so higher means more
confident. Trace scores are built from sliding windows of it.

Windows. A *group* is the mean confidence of ``window`` consecutive tokens (default 2048), stride 1, full
windows only. A trace shorter than the window has no full window; it gets ONE group value, the mean of all
its tokens, as the official code does (``compute_least_grouped``). Such a trace can never be stopped online
(its window never fills). A trace with no tokens at all has no confidence: its scores are NaN.

Trace scores (:class:`TraceScores`): ``lowest_group`` (min window), ``bottom10_group`` (mean of the lowest
``max(1, floor(10 % of #windows))`` windows), ``tail`` (mean of the last 2048 tokens, or of all of them),
``mean``. The batch functions are vectorised with numpy; :class:`StreamingConfidence` is their O(1)-per-token
twin and :func:`window_means_reference` the plain-loop twin the tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from falcon_h1r.deepconf.recipe import SCORES, WINDOW


def token_confidence(top_logprobs: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``[T, k]`` raw top-k log-probs -> ``[T]`` confidences ``-mean_k``; ``[0, k]`` gives ``[0]``."""
    arr = np.asarray(top_logprobs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"top_logprobs must be a [T, k] array of log-probs, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError("top_logprobs has k = 0 columns; DeepConf needs the top-k (k = 20) log-probs")
    return (-arr.mean(axis=1)).astype(np.float32)


def check_window(window: int) -> None:
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer number of tokens, got {window!r}")


def window_means(confidences: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Means of every FULL window of ``window`` tokens, stride 1 (``[T - window + 1]``, empty if T < window).

    Vectorised with a float64 cumulative sum; :func:`window_means_reference` is the plain twin.
    """
    check_window(window)
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
        check_window(window)
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


__all__ = ["token_confidence", "window_means", "window_means_reference", "group_confidences", "TraceScores",
           "trace_scores", "StreamingConfidence", "record_lows", "first_stop_index", "check_window"]
