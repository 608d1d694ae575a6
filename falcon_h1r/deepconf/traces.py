"""One reasoning trace as DeepConf sees it: its token confidences, its answer and how it ended.

A :class:`Trace` caches its scores per window, so the many votes and replays over one pool compute each
trace's windows once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from falcon_h1r.deepconf.confidence import (
    TraceScores,
    record_lows,
    token_confidence,
    trace_scores,
)
from falcon_h1r.deepconf.recipe import WINDOW
from falcon_h1r.verify import extract_final_answer


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


def trace_from_completion(completion: Any, *, trace_idx: int = 0, problem_id: str = "", kind: str = "math",
                          choices: Sequence[str] | None = None) -> Trace:
    """A :class:`falcon_h1r.inference.Completion` -> :class:`Trace`. The answer is the one grading reads
    (:func:`falcon_h1r.verify.extract_final_answer` for the problem's answer ``kind``: the last ``\\boxed{}`` of
    the answer part, or an option letter). Early-stopped traces were cut mid-thought and do not vote, so their
    answer is not extracted."""
    stopped = completion.finish_reason == "early_stop"
    answer = None if stopped else extract_final_answer(completion.text, kind, choices=choices)
    return Trace(confidences=token_confidence(completion.top_logprobs) if len(completion.token_ids) else [],
                 answer=answer if answer and answer.strip() else None, finish_reason=completion.finish_reason,
                 num_tokens=len(completion.token_ids), problem_id=problem_id, trace_idx=trace_idx,
                 token_ids=list(completion.token_ids), text=completion.text)


def group_by_problem(traces: Iterable[Trace]) -> dict[str, list[Trace]]:
    """problem_id -> its traces, in first-appearance order."""
    groups: dict[str, list[Trace]] = {}
    for t in traces:
        groups.setdefault(t.problem_id, []).append(t)
    return groups


__all__ = ["Trace", "trace_from_completion", "group_by_problem"]
