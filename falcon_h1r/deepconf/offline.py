"""Offline DeepConf (paper Alg. 1): keep the top-eta % of the traces by a confidence score, then vote.

eta is the percentage of traces KEPT, everywhere here. The five voting rules are the paper's /
the official ``compute_all_voting_results``: majority, or weighted by one of the trace scores. Answers that
mean the same share a vote, under the package's one answer equivalence (:class:`falcon_h1r.verify.AnswerClasses`,
built for the problem's answer kind); the official code groups by exact string (deepconf issue #15).

How many traces the filter keeps (``keep_rule``): ``"floor"`` keeps exactly ``max(1, floor(eta n / 100))``;
``"percentile"`` keeps every trace at or above ``np.percentile(scores, 100 - eta)``, as the official code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from falcon_h1r.deepconf.recipe import (
    KEEP_RULES,
    SCORE_OF_METHOD,
    SCORES,
    VOTE_METHODS,
    WINDOW,
)
from falcon_h1r.deepconf.traces import Trace
from falcon_h1r.verify import AnswerClasses, answers_equivalent


def _sort_score(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def n_kept(n: int, eta: float) -> int:
    """How many of ``n`` traces the top-eta % keeps: ``max(1, floor(eta * n / 100))`` (as TensorRT-LLM;
    K = 512, eta = 10 keeps 51, the paper's "about 51"); 0 for no traces."""
    if not 0 < eta <= 100:
        raise ValueError(f"eta is the kept percentage, in (0, 100]; got {eta}")
    return 0 if n == 0 else max(1, int(math.floor(eta * n / 100 + 1e-9)))


def percentile_cutoff(scores: Sequence[float], eta: float) -> float | None:
    """The official code's cutoff: ``np.percentile(scores, 100 - eta)`` (linear) over the finite scores;
    None when there is none."""
    if not 0 < eta <= 100:
        raise ValueError(f"eta is the kept percentage, in (0, 100]; got {eta}")
    values = np.asarray(scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.percentile(values, 100 - eta, method="linear")) if values.size else None


def filter_top_eta(traces: Sequence[Trace], score: str, eta: float, *, window: int = WINDOW,
                   tail_tokens: int = 2048, keep_rule: str = "floor") -> list[Trace]:
    """The top-eta % of ``traces`` by ``score``, returned in their input order.

    ``keep_rule="floor"``: exactly :func:`n_kept` traces, ties broken by input order (the earlier trace is
    kept); NaN scores (empty traces) rank last. ``"percentile"``: every trace whose score is at or above
    :func:`percentile_cutoff` (the official package's rule; more than :func:`n_kept` for most n, and more on
    ties); NaN scores are never kept.
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; use one of {list(SCORES)}")
    if keep_rule not in KEEP_RULES:
        raise ValueError(f"keep_rule {keep_rule!r} not accepted; use one of {list(KEEP_RULES)}")
    values = [t.score(score, window, tail_tokens=tail_tokens) for t in traces]
    if keep_rule == "percentile":
        cutoff = percentile_cutoff(values, eta)
        return [] if cutoff is None else [t for t, v in zip(traces, values) if v >= cutoff]
    k = n_kept(len(traces), eta)
    ranked = [_sort_score(v) for v in values]
    order = sorted(range(len(traces)), key=lambda i: (-ranked[i], i))[:k]
    return [traces[i] for i in sorted(order)]


def answer_matches(answer: str | None, gold: str, classes: AnswerClasses) -> bool:
    """``answer`` against the ground truth under the equivalence ``classes`` groups votes by (its answer
    kind, option texts and numeric tolerance): :func:`falcon_h1r.verify.answers_equivalent`."""
    return answers_equivalent(answer, str(gold), classes.kind, choices=classes.choices,
                              use_math_verify=classes.use_math_verify, rel_tol=classes.rel_tol)


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
                 tail_tokens: int = 2048, answered_only: bool = True, keep_rule: str = "floor",
                 classes: AnswerClasses | None = None) -> VoteResult | None:
    """Offline DeepConf: optionally keep the top-eta % by the method's own score (``keep_rule``), then vote.

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
        pool = filter_top_eta(pool, score, eta, window=window, tail_tokens=tail_tokens, keep_rule=keep_rule)
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
                keep_rule: str = "floor", classes: AnswerClasses | None = None) -> OfflineResult:
    """Offline DeepConf on one problem's traces (:func:`offline_vote`), with the token bill. ``gold`` is
    graded under ``classes``' equivalence (default: a ``math`` answer)."""
    classes = classes if classes is not None else AnswerClasses()
    v = offline_vote(traces, method, eta, window=window, tail_tokens=tail_tokens, answered_only=answered_only,
                     keep_rule=keep_rule, classes=classes)  # first: it rejects a bad method / eta pair clearly
    pool = [t for t in traces if classes(t.answer) is not None] if answered_only else list(traces)
    score = SCORE_OF_METHOD[method]
    kept = pool if eta is None or score is None else filter_top_eta(pool, score, eta, window=window,
                                                                    tail_tokens=tail_tokens, keep_rule=keep_rule)
    cutoff = None
    if eta is not None and score is not None and kept:
        cutoff = min(t.score(score, window, tail_tokens=tail_tokens) for t in kept)
    answer = v.answer if v else None
    correct = answer_matches(answer, gold, classes) if gold is not None else (v.correct if v else None)
    return OfflineResult(answer=answer, correct=correct, tokens=int(sum(t.num_tokens for t in traces)),
                         traces_used=len(traces), kept=len(kept), voters=v.n_voters if v else 0, cutoff=cutoff,
                         share=v.share if v else None, vote=v)


__all__ = ["n_kept", "percentile_cutoff", "filter_top_eta", "answer_matches", "VoteResult", "vote", "offline_vote",
           "OfflineResult", "run_offline"]
