"""The DeepConf paper's evaluation: every number a mean over resamplings of K traces from a larger pool.

The DeepConf paper generated a large pool of complete traces per problem once and computed every number
(offline and online) as the mean over 64 resamplings of K traces from that pool; :func:`replay_evaluate`
does the same over stored traces (:mod:`falcon_h1r.tracestore` keeps them), so generation and analysis
are apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from falcon_h1r.deepconf.answers import AnswerClasses
from falcon_h1r.deepconf.offline import offline_vote
from falcon_h1r.deepconf.online import replay_online
from falcon_h1r.deepconf.recipe import VOTE_METHODS, DeepConfRecipe
from falcon_h1r.deepconf.traces import Trace, group_by_problem

N_RESAMPLES = 64  # DeepConf §4: every number is a mean over 64 resamplings of a larger pool
ONLINE_METHODS = ("online_low", "online_high")
EVAL_METHODS = ("pass@1", *VOTE_METHODS, *ONLINE_METHODS)


@dataclass
class ReplaySummary:
    method: str
    K: int
    eta: float | None
    n_resamples: int
    n_problems: int
    acc_mean: float  # over resamplings of the accuracy over problems
    acc_std: float  # population std (ddof = 0) over resamplings
    tokens_mean: float  # over resamplings of the tokens summed over problems
    tokens_std: float
    traces_mean: float  # traces generated per problem (K unless online stopped early)
    accuracies: list[float]
    tokens: list[float]


def replay_evaluate(pool: Sequence[Trace], method: str, K: int, *, eta: float | None = None,
                    n_resamples: int = N_RESAMPLES, seed: int = 0, recipe: DeepConfRecipe | None = None,
                    adaptive: bool = True, batch_size: int = 1,
                    classes: dict[str, AnswerClasses] | None = None) -> ReplaySummary:
    """The DeepConf paper's evaluation: ``n_resamples`` (64) draws of K traces per problem from a larger
    pool (without replacement, fresh random order), the method run on each draw.

    Methods: ``pass@1`` (mean trace accuracy), ``majority`` (Cons@K), the weighted votes of
    ``VOTE_METHODS`` with ``eta`` (kept %, filtered by the method's score) or without (Measure@K),
    ``online_low`` / ``online_high`` (K is the budget; replayed one trace at a time, the paper's
    sequential protocol, with truncation and, if ``adaptive``, the tau consensus stop; ``batch_size`` > 1
    checks consensus only every ``batch_size`` traces, as a live run with that batch does). The same
    ``seed`` draws the same subsets for every method (paired).
    ``classes`` (problem_id -> :class:`AnswerClasses`) may be shared between calls to reuse math-verify
    work. Every trace must carry ``correct``.
    """
    if method not in EVAL_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {list(EVAL_METHODS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (traces per consensus check), got {batch_size}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if eta is not None and method in ("pass@1", "majority", *ONLINE_METHODS):
        raise ValueError(f"eta applies to the weighted votes only, not to {method!r}")
    recipe = recipe or DeepConfRecipe()
    groups = group_by_problem(pool)
    if not groups:
        raise ValueError("empty pool: nothing to evaluate")
    for pid, traces in groups.items():
        if len(traces) < K:
            raise ValueError(f"problem {pid} has {len(traces)} traces in the pool, fewer than K={K}")
        if any(t.correct is None for t in traces):
            raise ValueError(f"problem {pid} has ungraded traces (correct is None); grade the pool first")
    classes = classes if classes is not None else {}
    rng = np.random.default_rng(seed)
    accs, toks, n_traces = [], [], []
    for _ in range(n_resamples):
        correct, tokens, launched = 0.0, 0, 0
        for pid in sorted(groups):
            traces = groups[pid]
            cls = classes.setdefault(pid, AnswerClasses())
            draw = [traces[i] for i in rng.permutation(len(traces))[:K]]
            if method == "pass@1":
                correct += float(np.mean([bool(t.correct) for t in draw]))
                tokens += sum(t.num_tokens for t in draw)
                launched += K
            elif method in ONLINE_METHODS:
                res = replay_online(draw, "low" if method == "online_low" else "high", recipe, budget=K,
                                    batch_size=batch_size, adaptive=adaptive, classes=cls)
                correct += float(bool(res.correct))
                tokens += res.tokens
                launched += res.traces_used
            else:
                v = offline_vote(draw, method, eta, window=recipe.window, tail_tokens=recipe.tail_tokens,
                                 classes=cls)
                correct += float(bool(v and v.correct))
                tokens += sum(t.num_tokens for t in draw)
                launched += K
        accs.append(correct / len(groups))
        toks.append(float(tokens))
        n_traces.append(launched / len(groups))
    return ReplaySummary(method=method, K=K, eta=eta, n_resamples=n_resamples, n_problems=len(groups),
                         acc_mean=float(np.mean(accs)), acc_std=float(np.std(accs)),
                         tokens_mean=float(np.mean(toks)), tokens_std=float(np.std(toks)),
                         traces_mean=float(np.mean(n_traces)), accuracies=accs, tokens=toks)


__all__ = ["N_RESAMPLES", "ONLINE_METHODS", "EVAL_METHODS", "ReplaySummary", "replay_evaluate"]
