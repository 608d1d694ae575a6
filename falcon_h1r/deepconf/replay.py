"""The DeepConf paper's evaluation: every number a mean over resamplings of K traces from a larger pool.

The DeepConf paper generated a large pool of complete traces per problem once and computed every number
(offline and online) as the mean over 64 resamplings of K traces from that pool; :func:`replay_evaluate`
does the same over stored traces (:mod:`falcon_h1r.tracestore` keeps them), so generation and analysis
are apart. It is the plain reference: it runs :func:`~falcon_h1r.deepconf.offline_vote` and
:func:`~falcon_h1r.deepconf.replay_online` on every draw, trace object by trace object;
:mod:`falcon_h1r.deepconf.sweep` is its vectorised twin (the same draws, :func:`draw_orders`), which the
sections use and the tests compare with this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from falcon_h1r.deepconf.offline import offline_vote
from falcon_h1r.deepconf.online import replay_online
from falcon_h1r.deepconf.recipe import VOTE_METHODS, DeepConfRecipe
from falcon_h1r.deepconf.sweep import draw_orders
from falcon_h1r.deepconf.traces import Trace, group_by_problem
from falcon_h1r.verify import AnswerClasses

N_RESAMPLES = 64  # DeepConf §4: every number is a mean over 64 resamplings of a larger pool
# online DeepConf-low / -high (Alg. 2), and the consensus stop alone (no confidence stop, unweighted majority)
ONLINE_METHODS = ("online_low", "online_high", "consensus_only")
EVAL_METHODS = ("pass@1", *VOTE_METHODS, *ONLINE_METHODS)
_VARIANT = {"online_low": "low", "online_high": "high", "consensus_only": None}


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
    problem_ids: list[str] = field(default_factory=list)  # sorted; the columns of the arrays below
    correct: np.ndarray | None = None  # [resamplings, problems] 0/1 (pass@1: the draw's mean grade)
    problem_tokens: np.ndarray | None = None  # [resamplings, problems] generated tokens


def replay_evaluate(pool: Sequence[Trace], method: str, K: int, *, eta: float | None = None,
                    n_resamples: int = N_RESAMPLES, seed: int = 0, recipe: DeepConfRecipe | None = None,
                    adaptive: bool = True, batch_size: int = 1, keep_rule: str = "floor",
                    classes: dict[str, AnswerClasses] | None = None) -> ReplaySummary:
    """The DeepConf paper's evaluation: ``n_resamples`` (64) draws of K traces per problem from a larger
    pool (without replacement, fresh random order), the method run on each draw.

    Draws: problem ``i`` (in sorted id order) draws resampling ``r`` as the first K entries of
    ``draw_orders(pool size, n_resamples, (seed, i))[r]``, so the same ``seed`` gives the same (nested)
    draws for every method and K (paired), and the vectorised twin draws the same.

    Methods: ``pass@1`` (the draw's mean trace grade), ``majority`` (Cons@K), the weighted votes of
    ``VOTE_METHODS`` with ``eta`` (kept %, filtered by the method's score under ``keep_rule``) or without
    (Measure@K), ``online_low`` / ``online_high`` (K is the budget; replayed one trace at a time, the paper's
    sequential protocol, with truncation and, if ``adaptive``, the tau consensus stop; ``batch_size`` > 1
    checks consensus only every ``batch_size`` traces, as a live run with that batch does), and
    ``consensus_only`` (the consensus stop without the confidence stop). ``classes`` (problem_id ->
    :class:`falcon_h1r.verify.AnswerClasses`, default ``math`` answers) groups votes and may be shared between
    calls to reuse math-verify work. Every trace must carry ``correct``.
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
    pids = sorted(groups)
    correct = np.zeros((n_resamples, len(pids)))
    tokens = np.zeros((n_resamples, len(pids)))
    launched = np.zeros((n_resamples, len(pids)))
    for i, pid in enumerate(pids):
        traces = groups[pid]
        cls = classes.setdefault(pid, AnswerClasses())
        orders = draw_orders(len(traces), n_resamples, (seed, i))
        for r in range(n_resamples):
            draw = [traces[j] for j in orders[r, :K]]
            if method == "pass@1":
                correct[r, i] = float(np.mean([bool(t.correct) for t in draw]))
                tokens[r, i] = sum(t.num_tokens for t in draw)
                launched[r, i] = K
            elif method in ONLINE_METHODS:
                res = replay_online(draw, _VARIANT[method], recipe, budget=K, batch_size=batch_size,
                                    adaptive=adaptive, classes=cls)
                correct[r, i] = float(bool(res.correct))
                tokens[r, i] = res.tokens
                launched[r, i] = res.traces_used
            else:
                v = offline_vote(draw, method, eta, window=recipe.window, tail_tokens=recipe.tail_tokens,
                                 keep_rule=keep_rule, classes=cls)
                correct[r, i] = float(bool(v and v.correct))
                tokens[r, i] = sum(t.num_tokens for t in draw)
                launched[r, i] = K
    accs = correct.mean(axis=1)
    toks = tokens.sum(axis=1)
    return ReplaySummary(method=method, K=K, eta=eta, n_resamples=n_resamples, n_problems=len(pids),
                         acc_mean=float(accs.mean()), acc_std=float(accs.std()), tokens_mean=float(toks.mean()),
                         tokens_std=float(toks.std()), traces_mean=float(launched.mean()),
                         accuracies=[float(a) for a in accs], tokens=[float(t) for t in toks], problem_ids=pids,
                         correct=correct, problem_tokens=tokens)


__all__ = ["N_RESAMPLES", "ONLINE_METHODS", "EVAL_METHODS", "ReplaySummary", "replay_evaluate"]
