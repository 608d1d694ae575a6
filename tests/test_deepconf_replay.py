"""The DeepConf paper's replay evaluation (``falcon_h1r.deepconf.replay``): resamplings of a stored pool,
every method's accuracy and token bill, paired draws, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from falcon_h1r import deepconf as dc


def _pool(n_good: int = 18, n_bad: int = 22, length: int = 50) -> list[dc.Trace]:
    """Problem 'g': good traces (confident, answer 1, correct) and more bad ones (a confidence collapse
    after 20 tokens, answer 2, wrong: majority voting gets 'g' wrong); problem 'h': every trace correct."""
    pool = []
    for i in range(n_good):
        pool.append(dc.Trace(confidences=np.full(length, 10.0), answer="1", correct=True, problem_id="g", trace_idx=i))
    for i in range(n_bad):
        conf = np.concatenate([np.full(20, 10.0), np.full(length - 20, 2.0)])
        pool.append(dc.Trace(confidences=conf, answer="2", correct=False, problem_id="g", trace_idx=n_good + i))
    for i in range(n_good + n_bad):
        pool.append(dc.Trace(confidences=np.full(length, 8.0), answer="5", correct=True, problem_id="h", trace_idx=i))
    return pool


def test_replay_evaluate_methods():
    pool = _pool()
    recipe = dc.DeepConfRecipe(window=5, tail_tokens=5, n_init=16, budget=40)
    n_pool = 40
    # K = whole pool: every resampling sees every trace, so offline numbers are exact
    p1 = dc.replay_evaluate(pool, "pass@1", n_pool, n_resamples=4, recipe=recipe)
    assert p1.acc_mean == pytest.approx((18 / 40 + 1.0) / 2) and p1.acc_std == 0.0 and p1.n_problems == 2
    assert p1.tokens_mean == 2 * n_pool * 50 and p1.traces_mean == n_pool
    maj = dc.replay_evaluate(pool, "majority", n_pool, n_resamples=4, recipe=recipe)
    assert maj.acc_mean == 0.5 and maj.acc_std == 0.0  # 22 wrong vs 18 right on 'g'
    maj_small = dc.replay_evaluate(pool, "majority", 16, n_resamples=64, seed=1, recipe=recipe)
    filt = dc.replay_evaluate(pool, "min_window_weighted", 16, eta=10, n_resamples=64, seed=1, recipe=recipe)
    assert filt.acc_mean == 1.0 and maj_small.acc_mean < 1.0  # filtering drops every collapsed trace
    assert filt.tokens_mean == maj_small.tokens_mean == 2 * 16 * 50  # offline pays for all K traces
    # online: collapsed traces stop early and never vote, so DeepConf-low is always right and cheaper
    low = dc.replay_evaluate(pool, "online_low", 40, n_resamples=16, recipe=recipe, adaptive=False)
    high = dc.replay_evaluate(pool, "online_high", 40, n_resamples=16, recipe=recipe, adaptive=False)
    assert low.acc_mean == 1.0 and low.traces_mean == 40
    assert all(lo <= hi for lo, hi in zip(low.tokens, high.tokens))  # the low threshold is never below high's
    assert low.tokens_mean < 2 * 40 * 50
    adaptive = dc.replay_evaluate(pool, "online_low", 40, n_resamples=16, recipe=recipe)
    assert adaptive.traces_mean < 40 and adaptive.tokens_mean < low.tokens_mean  # consensus stops early
    # same seed -> same draws -> same numbers
    again = dc.replay_evaluate(pool, "majority", 16, n_resamples=64, seed=1, recipe=recipe)
    assert again.accuracies == maj_small.accuracies and len(again.accuracies) == 64


def test_replay_evaluate_token_accounting_matches_replay_online():
    pool = [t for t in _pool() if t.problem_id == "g"]
    recipe = dc.DeepConfRecipe(window=5, tail_tokens=5, n_init=16, budget=40)
    summary = dc.replay_evaluate(pool, "online_low", 40, n_resamples=3, seed=7, recipe=recipe, adaptive=False)
    rng = np.random.default_rng(7)
    for r in range(3):
        draw = [pool[i] for i in rng.permutation(len(pool))[:40]]
        res = dc.replay_online(draw, "low", recipe, budget=40, adaptive=False)
        assert summary.tokens[r] == res.tokens
        warm, later = draw[:16], draw[16:]
        # warm-up runs to completion; later collapsed traces stop at the threshold crossing
        want = sum(t.num_tokens for t in warm) + sum(
            t.num_tokens if dc.first_stop_index(t.confidences, res.threshold, 5) is None
            else dc.first_stop_index(t.confidences, res.threshold, 5) + 1 for t in later)
        assert res.tokens == want
        assert res.stopped == sum(t.answer == "2" for t in later)


def test_replay_evaluate_bad_input():
    pool = _pool(4, 4)
    with pytest.raises(ValueError, match="fewer than K=16"):
        dc.replay_evaluate(pool, "majority", 16)
    with pytest.raises(ValueError, match="unknown method"):
        dc.replay_evaluate(pool, "best_of_n", 4)
    with pytest.raises(ValueError, match="eta applies"):
        dc.replay_evaluate(pool, "majority", 4, eta=10)
    with pytest.raises(ValueError, match="empty pool"):
        dc.replay_evaluate([], "majority", 4)
    ungraded = [dc.Trace(confidences=[1.0], answer="1", problem_id="z") for _ in range(4)]
    with pytest.raises(ValueError, match="ungraded"):
        dc.replay_evaluate(ungraded, "majority", 4)
