"""The DeepConf paper's replay evaluation, vectorised over resamplings: the fast twin of
:mod:`falcon_h1r.deepconf.replay`.

Why it exists: the protocol runs every method at every K on 64 resamplings of each problem's pool. At the
small preset that is 3 bases x 100 problems x ~30 series x 10 K x 64 draws of up to 512 traces; the plain
loop over :class:`~falcon_h1r.deepconf.Trace` objects (:func:`~falcon_h1r.deepconf.replay_evaluate`, kept as
the reference twin) needs tens of minutes for that, so here one problem's pool becomes a few numpy arrays
(:class:`PoolArrays`: answer class, grade, tokens, the four trace scores, and the record lows that say where
any threshold would stop each trace) and every resampling of one method is one array operation. The tests
check, draw by draw, that the outcomes equal those of :func:`~falcon_h1r.deepconf.offline_vote` and
:func:`~falcon_h1r.deepconf.replay_online` on the same draws.

Draws: resampling ``r`` of a problem is the permutation ``orders[r]`` of its pool (:func:`draw_orders`); a
method at K (or at budget B) reads its first K (B) entries. So draws are nested in K, every method sees the
same traces at the same K (paired), and the online run at budget B is the run at the largest budget cut at B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from falcon_h1r.deepconf.offline import n_kept
from falcon_h1r.deepconf.online import warmup_threshold
from falcon_h1r.deepconf.recipe import (
    KEEP_RULES,
    SCORE_OF_METHOD,
    SCORES,
    VOTE_METHODS,
    DeepConfRecipe,
)
from falcon_h1r.deepconf.traces import Trace
from falcon_h1r.verify import AnswerClasses

LOWEST = SCORES.index("lowest_group")


def draw_orders(n_pool: int, n_resamples: int, seed: int | Sequence[int]) -> np.ndarray:
    """``[n_resamples, n_pool]``: one random permutation of the pool per resampling (numpy's generator
    seeded with ``seed``, which may be a sequence such as ``(seed, problem index)``)."""
    if n_pool < 1 or n_resamples < 1:
        raise ValueError(f"need a non-empty pool and >= 1 resampling, got n_pool={n_pool}, n_resamples={n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(n_pool), (n_resamples, 1)), axis=1)


@dataclass
class PoolArrays:
    """One problem's pool of complete traces as arrays (trace ``i`` of the pool in row ``i``)."""

    problem_id: str
    answer_class: np.ndarray  # int64 [n]: vote class (falcon_h1r.verify.AnswerClasses), -1 for no answer
    correct: np.ndarray  # bool [n]
    tokens: np.ndarray  # int64 [n]
    scores: np.ndarray  # float64 [n, 4], columns in SCORES order (NaN for a trace without tokens)
    low_ptr: np.ndarray  # int64 [n + 1]: trace i's record lows are low_idx / low_val[low_ptr[i]:low_ptr[i + 1]]
    low_idx: np.ndarray  # window index of each record low (the stop token is low_idx + window - 1)
    low_val: np.ndarray  # its window mean (strictly decreasing within a trace)
    window: int

    @property
    def n(self) -> int:
        return int(self.tokens.size)

    def score(self, name: str) -> np.ndarray:
        return self.scores[:, SCORES.index(name)]


def pool_arrays(traces: Sequence[Trace], classes: AnswerClasses, *, window: int, tail_tokens: int) -> PoolArrays:
    """The arrays of one problem's pool. Every trace must be complete (not early-stopped) and graded."""
    if not traces:
        raise ValueError("empty pool: nothing to evaluate")
    for t in traces:
        if t.finish_reason == "early_stop":
            raise ValueError(f"trace {t.problem_id}/{t.trace_idx} was stopped early; a replay pool holds complete "
                             "traces (generate it without a stop)")
        if t.correct is None:
            raise ValueError(f"trace {t.problem_id}/{t.trace_idx} is ungraded (correct is None); grade the pool first")
    cls = np.array([-1 if (c := classes(t.answer)) is None else c for t in traces], dtype=np.int64)
    scores = np.array([[t.score(s, window, tail_tokens=tail_tokens) for s in SCORES] for t in traces],
                      dtype=np.float64)
    lows = [t.lows(window) for t in traces]
    ptr = np.concatenate([[0], np.cumsum([lo[0].size for lo in lows])]).astype(np.int64)
    return PoolArrays(problem_id=str(traces[0].problem_id), answer_class=cls,
                      correct=np.array([bool(t.correct) for t in traces]),
                      tokens=np.array([int(t.num_tokens) for t in traces], dtype=np.int64), scores=scores,
                      low_ptr=ptr,
                      low_idx=np.concatenate([lo[0] for lo in lows]).astype(np.int64) if ptr[-1] else np.zeros(0, np.int64),
                      low_val=np.concatenate([lo[1] for lo in lows]).astype(np.float64) if ptr[-1] else np.zeros(0),
                      window=window)


# ============================================================================== votes
def vote_winners(answer_class: np.ndarray, weight: np.ndarray, voting: np.ndarray) -> np.ndarray:
    """Per row of ``[R, K]`` draws: the position of the winning class's first voter, -1 when nobody votes.

    The class with the largest summed ``weight`` over the ``voting`` positions wins; ties go to the class whose
    first voter comes first, as :func:`falcon_h1r.deepconf.vote` does (and the sums are taken in the same
    order, so equal floats tie exactly as there).
    """
    n_rows, k = answer_class.shape
    voting = voting & (answer_class >= 0)
    n_cls = int(answer_class.max()) + 1 if answer_class.size else 0
    out = np.full(n_rows, -1, dtype=np.int64)
    if n_cls == 0 or not voting.any():
        return out
    rows, pos = np.nonzero(voting)  # row-major: positions ascend within a row
    flat = rows * n_cls + answer_class[rows, pos]
    tally = np.bincount(flat, weights=weight[rows, pos], minlength=n_rows * n_cls).reshape(n_rows, n_cls)
    seen = np.zeros(n_rows * n_cls, dtype=bool)
    seen[flat] = True
    first = np.full(n_rows * n_cls, k, dtype=np.int64)
    uniq, at = np.unique(flat, return_index=True)
    first[uniq] = pos[at]
    seen, first = seen.reshape(n_rows, n_cls), first.reshape(n_rows, n_cls)
    best = np.where(seen, tally, -np.inf).max(axis=1, keepdims=True)
    tied = seen & (tally == best)
    winner_cls = np.where(tied, first, k).argmin(axis=1)
    has = seen.any(axis=1)
    out[has] = first[np.arange(n_rows), winner_cls][has]
    return out


def _outcome(arr: PoolArrays, orders: np.ndarray, winner: np.ndarray) -> np.ndarray:
    """Winning trace's grade per row (False where nobody voted)."""
    ok = np.zeros(orders.shape[0], dtype=bool)
    has = winner >= 0
    ok[has] = arr.correct[orders[has, winner[has]]]
    return ok


def _filter_kept(values: np.ndarray, answered: np.ndarray, eta: float, keep_rule: str) -> np.ndarray:
    """``[R, K]`` mask of the traces the top-eta % filter keeps among the ``answered`` ones (as
    :func:`falcon_h1r.deepconf.filter_top_eta` on the answered traces of each draw)."""
    n_rows, k = values.shape
    if keep_rule == "percentile":
        masked = np.where(answered & np.isfinite(values), values, np.nan)
        kept = np.zeros_like(answered)
        has = np.isfinite(masked).any(axis=1)
        if has.any():
            cutoff = np.nanpercentile(masked[has], 100 - eta, axis=1, method="linear")
            kept[has] = answered[has] & (values[has] >= cutoff[:, None])
        return kept
    rank_value = np.where(np.isnan(values), np.inf, -values)  # NaN ranks last, as -inf scores do there
    pos = np.broadcast_to(np.arange(k), (n_rows, k))
    order = np.lexsort((pos, rank_value, ~answered), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(k), (n_rows, k)), axis=1)
    n_answered = answered.sum(axis=1)
    keep = np.array([n_kept(int(n), eta) for n in n_answered])
    return answered & (ranks < keep[:, None])


def offline_correct(arr: PoolArrays, orders: np.ndarray, method: str, eta: float | None = None, *,
                    keep_rule: str = "floor") -> np.ndarray:
    """``[R]``: is offline DeepConf right on each draw ``orders[r]`` (traces in that order)? The twin of
    :func:`falcon_h1r.deepconf.offline_vote` with ``answered_only=True``."""
    return offline_outcome(arr, orders, method, eta, keep_rule=keep_rule)[0]


def offline_outcome(arr: PoolArrays, orders: np.ndarray, method: str, eta: float | None = None, *,
                    keep_rule: str = "floor") -> tuple[np.ndarray, np.ndarray]:
    """:func:`offline_correct` and ``[R]`` how many traces voted on each draw (after the filter)."""
    if method not in SCORE_OF_METHOD:
        raise ValueError(f"unknown voting method {method!r}; use one of {list(VOTE_METHODS)}")
    if keep_rule not in KEEP_RULES:
        raise ValueError(f"keep_rule {keep_rule!r} not accepted; use one of {list(KEEP_RULES)}")
    cls = arr.answer_class[orders]
    answered = cls >= 0
    score = SCORE_OF_METHOD[method]
    if score is None:
        if eta is not None:
            raise ValueError(f"eta filtering needs a weighted method (the score it ranks by); got {method!r}")
        return _outcome(arr, orders, vote_winners(cls, np.ones(cls.shape), answered)), answered.sum(axis=1)
    values = arr.score(score)[orders]
    voting = answered if eta is None else _filter_kept(values, answered, eta, keep_rule)
    voting = voting & ~np.isnan(values)
    return _outcome(arr, orders, vote_winners(cls, np.nan_to_num(values), voting)), voting.sum(axis=1)


# ============================================================================== online replay
def stop_tokens(arr: PoolArrays, thresholds: np.ndarray) -> np.ndarray:
    """``[R, n]``: tokens trace ``i`` would have generated under threshold ``thresholds[r]`` before the live
    stop fired (the stopping token counted), or -1 when it would never fire (as
    :func:`falcon_h1r.deepconf.first_stop_index` + 1)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n_rows = thresholds.size
    counts_cum = np.zeros((n_rows, arr.low_val.size + 1), dtype=np.int64)
    if arr.low_val.size:
        np.cumsum(arr.low_val[None, :] >= thresholds[:, None], axis=1, out=counts_cum[:, 1:])
    at_or_above = counts_cum[:, arr.low_ptr[1:]] - counts_cum[:, arr.low_ptr[:-1]]  # record lows >= threshold
    n_lows = np.diff(arr.low_ptr)[None, :]
    stops = at_or_above < n_lows
    where = np.minimum(arr.low_ptr[:-1][None, :] + at_or_above, max(arr.low_idx.size - 1, 0))
    idx = arr.low_idx[where] if arr.low_idx.size else np.zeros_like(where)
    return np.where(stops, idx + arr.window, -1)


@dataclass
class OnlineOutcome:
    correct: np.ndarray  # bool [R]
    tokens: np.ndarray  # int64 [R]: every generated token (warm-up, finished and early-stopped traces)
    launched: np.ndarray  # int64 [R]: traces launched
    stopped: np.ndarray  # int64 [R]: traces cut by the confidence stop
    voters: np.ndarray  # int64 [R]: traces that voted


def online_replay(arr: PoolArrays, orders: np.ndarray, recipe: DeepConfRecipe, variant: str | None, *,
                  budgets: Sequence[int] | None = None, adaptive: bool = True,
                  batch_size: int = 1) -> dict[int, OnlineOutcome]:
    """Online DeepConf replayed on each draw ``orders[r]`` at each budget (default: ``orders.shape[1]``),
    the twin of :func:`falcon_h1r.deepconf.replay_online` (``variant=None``: the consensus stop alone)."""
    n_rows, top = orders.shape
    budgets = sorted(budgets or [top])
    if budgets[-1] > top or budgets[0] < recipe.n_init:
        raise ValueError(f"budgets {budgets} must lie in [n_init={recipe.n_init}, {top} drawn traces]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_init = recipe.n_init
    cls = arr.answer_class[orders]
    lowest = arr.scores[:, LOWEST][orders]
    if variant is None:
        thresholds = np.full(n_rows, -np.inf)
        stopped = np.zeros(orders.shape, dtype=bool)
        tokens = arr.tokens[orders]
        consensus_w = np.ones(orders.shape)
        vote_method = "majority"
    else:
        keep = recipe.eta(variant)  # type: ignore[arg-type]
        thresholds = np.array([warmup_threshold(row, keep) for row in lowest[:, :n_init]])
        stop_at = stop_tokens(arr, thresholds)[np.arange(n_rows)[:, None], orders]
        stopped = stop_at >= 0
        stopped[:, :n_init] = False  # the warm-up runs without a stop
        tokens = np.where(stopped, stop_at, arr.tokens[orders])
        consensus_w = np.nan_to_num(lowest)
        vote_method = recipe.online_vote_method
    voter = ~stopped & (cls >= 0) & ~np.isnan(lowest) & (lowest >= thresholds[:, None])

    launched_at = np.full(n_rows, top, dtype=np.int64)  # where the consensus stop ends the run
    if adaptive:
        n_cls = int(cls.max()) + 2 if cls.size else 1
        tally = np.zeros((n_rows, n_cls))
        rows = np.arange(n_rows)
        open_ = np.ones(n_rows, dtype=bool)
        for j in range(top - 1):
            tally[rows, cls[:, j]] += np.where(voter[:, j], consensus_w[:, j], 0.0)  # class -1: the last column
            launched = j + 1
            if launched < n_init or (launched - n_init) % batch_size:
                continue
            votes = tally[:, :-1]
            if votes.shape[1] == 0:  # no trace of this pool has an answer: nobody ever votes
                break
            total = votes.sum(axis=1)
            beta = np.where(total > 0, votes.max(axis=1) / np.where(total > 0, total, 1.0), 0.0)
            done = open_ & (total > 0) & (beta >= recipe.tau)
            launched_at[done] = launched
            open_ &= ~done
            if not open_.any():
                break

    weights = np.ones(orders.shape) if SCORE_OF_METHOD[vote_method] is None else \
        arr.score(SCORE_OF_METHOD[vote_method])[orders]
    out = {}
    position = np.arange(top)[None, :]
    for b in budgets:
        n_launched = np.minimum(launched_at, b)
        inside = position < n_launched[:, None]
        voting = voter & inside & ~np.isnan(weights)
        winner = vote_winners(cls, np.nan_to_num(weights), voting)
        out[b] = OnlineOutcome(correct=_outcome(arr, orders, winner), tokens=(tokens * inside).sum(axis=1),
                               launched=n_launched, stopped=(stopped & inside).sum(axis=1),
                               voters=voting.sum(axis=1))
    return out


# ============================================================================== the protocol on one problem
@dataclass(frozen=True)
class Series:
    """One curve of the evaluation: a method and its settings (``kind``: pass1 | offline | online)."""

    name: str
    kind: str
    method: str | None = None  # vote method (offline)
    eta: float | None = None  # kept % (offline filter)
    keep_rule: str | None = None
    variant: str | None = None  # online: "low" | "high" | None (the consensus stop alone)
    adaptive: bool = True  # online: with the tau consensus stop


def standard_series(recipe: DeepConfRecipe, methods: Sequence[str] = VOTE_METHODS) -> list[Series]:
    """Every curve the DeepConf paper compares, and the two stops apart.

    pass@1; majority@K (Cons@K); each weighted vote without filter (Measure@K); each weighted vote after the
    top-eta % filter at eta_low and eta_high, under both keep rules (``<method>@<eta>`` for the floor rule,
    ``<method>@<eta>/percentile`` for the official code's); online DeepConf-low and -high (``online_low``,
    ``online_high``: Alg. 2 with both stops), their confidence stop alone (``.../budget_only``, no consensus
    stop), and the consensus stop alone (``consensus_only``: no confidence stop, unweighted)."""
    out = [Series("pass@1", "pass1"), Series("majority", "offline", "majority")]
    for method in methods:
        if SCORE_OF_METHOD[method] is None:
            continue
        out.append(Series(method, "offline", method))
        for eta in (recipe.eta_low, recipe.eta_high):
            for rule in KEEP_RULES:
                suffix = "" if rule == "floor" else f"/{rule}"
                out.append(Series(f"{method}@{eta:g}{suffix}", "offline", method, eta, rule))
    for variant in ("low", "high"):
        out.append(Series(f"online_{variant}", "online", variant=variant))
        out.append(Series(f"online_{variant}/budget_only", "online", variant=variant, adaptive=False))
    out.append(Series("consensus_only", "online", variant=None))
    return out


def evaluate_problem(arr: PoolArrays, orders: np.ndarray, recipe: DeepConfRecipe, series: Sequence[Series], *,
                     ks: Sequence[int], budgets: Sequence[int], batch_size: int = 1) -> list[dict[str, Any]]:
    """Every series on one problem's draws: rows ``{series, K, acc, tokens, traces, voters, stopped}``, each the
    mean over the resamplings (``orders``: ``[R, >= max(ks, budgets)]``; ``voters``: traces that voted, after
    the filter or the threshold). pass@1 is exact (the pool's mean grade and tokens per trace, K = 1)."""
    rows: list[dict[str, Any]] = []
    need = max([*ks, *budgets])
    if orders.shape[1] < need:
        raise ValueError(f"draws hold {orders.shape[1]} traces, fewer than the largest K / budget {need}")
    online_budgets = [b for b in budgets if b >= recipe.n_init]
    for s in series:
        if s.kind == "pass1":
            rows.append({"series": s.name, "K": 1, "acc": float(arr.correct.mean()),
                         "tokens": float(arr.tokens.mean()), "traces": 1.0, "voters": 1.0, "stopped": 0.0})
        elif s.kind == "offline":
            for k in ks:
                ok, voters = offline_outcome(arr, orders[:, :k], s.method or "majority", s.eta,
                                             keep_rule=s.keep_rule or "floor")
                rows.append({"series": s.name, "K": int(k), "acc": float(ok.mean()),
                             "tokens": float(arr.tokens[orders[:, :k]].sum(axis=1).mean()), "traces": float(k),
                             "voters": float(voters.mean()), "stopped": 0.0})
        elif s.kind == "online":
            if not online_budgets:
                continue
            res = online_replay(arr, orders[:, :max(online_budgets)], recipe, s.variant, budgets=online_budgets,
                                adaptive=s.adaptive, batch_size=batch_size)
            for b, o in res.items():
                rows.append({"series": s.name, "K": int(b), "acc": float(o.correct.mean()),
                             "tokens": float(o.tokens.mean()), "traces": float(o.launched.mean()),
                             "voters": float(o.voters.mean()), "stopped": float(o.stopped.mean())})
        else:
            raise ValueError(f"unknown series kind {s.kind!r}; use pass1, offline or online")
    return rows


__all__ = ["draw_orders", "PoolArrays", "pool_arrays", "vote_winners", "offline_correct", "offline_outcome", "stop_tokens",
           "OnlineOutcome", "online_replay", "Series", "standard_series", "evaluate_problem"]
