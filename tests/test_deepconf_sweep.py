"""The vectorised replay (``falcon_h1r.deepconf.sweep``) against its plain twin, draw by draw: offline votes
under both keep rules, online DeepConf-low/-high with and without the consensus stop, the consensus stop
alone, at several budgets and consensus batch sizes; and the whole protocol (``replay_evaluate``) against
``evaluate_problem`` on the same draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from falcon_h1r import deepconf as dc
from falcon_h1r.verify import AnswerClasses

RECIPE = dc.DeepConfRecipe(window=8, tail_tokens=8, n_init=6, budget=40, tau=0.9)


def random_pool(seed: int, n: int = 40, *, with_ties: bool = False, pid: str = "p0") -> list[dc.Trace]:
    """Traces of varying length (some shorter than the window, one empty without an answer); confident traces
    answer right more often, so the methods differ. ``with_ties`` rounds confidences to one decimal, so that
    scores tie."""
    rng = np.random.default_rng(seed)
    traces = []
    for i in range(n):
        confident = rng.random() < 0.5
        length = 0 if i == 3 else int(rng.integers(3, 60))
        conf = rng.normal(12.0 if confident else 10.0, 1.5, size=length)
        if with_ties:
            conf = np.round(conf, 1)
        p_right = 0.75 if confident else 0.35
        answer = None if (length == 0 or rng.random() < 0.1) else (
            "7" if rng.random() < p_right else str(rng.choice(["3", "5", "\\frac{14}{2}", "9"])))
        correct = answer is not None and answer in ("7", "\\frac{14}{2}")
        traces.append(dc.Trace(confidences=conf, answer=answer, correct=correct, problem_id=pid, trace_idx=i))
    return traces


def _arrays(traces, classes=None):
    classes = classes or AnswerClasses()
    return dc.pool_arrays(traces, classes, window=RECIPE.window, tail_tokens=RECIPE.tail_tokens), classes


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False)])
def test_offline_votes_match_the_plain_vote_draw_by_draw(seed, ties):
    traces = random_pool(seed, with_ties=ties)
    arr, classes = _arrays(traces)
    orders = dc.draw_orders(len(traces), 12, seed)
    for k in (1, 5, 16, 40):
        for method in dc.VOTE_METHODS:
            etas = [None] if method == "majority" else [None, 10.0, 50.0, 90.0]
            for eta in etas:
                for rule in dc.KEEP_RULES:
                    fast, voters = dc.offline_outcome(arr, orders[:, :k], method, eta, keep_rule=rule)
                    for r in range(orders.shape[0]):
                        draw = [traces[j] for j in orders[r, :k]]
                        v = dc.offline_vote(draw, method, eta, window=RECIPE.window, tail_tokens=RECIPE.tail_tokens,
                                            keep_rule=rule, classes=classes)
                        assert fast[r] == bool(v and v.correct), (k, method, eta, rule, r)
                        assert voters[r] == (v.n_voters if v else 0), (k, method, eta, rule, r)


def test_equivalent_answers_share_a_vote_in_both_paths():
    # three "\frac{14}{2}" and two "7" beat three "5": only if the two forms of 7 are one class
    answers = ["\\frac{14}{2}", "5", "7", "5", "\\frac{14}{2}", "5", "7", "\\frac{14}{2}"]
    traces = [dc.Trace(confidences=np.full(4, 10.0), answer=a, correct=a != "5", trace_idx=i)
              for i, a in enumerate(answers)]
    arr, classes = _arrays(traces)
    orders = np.arange(len(traces))[None, :]
    assert dc.offline_correct(arr, orders, "majority")[0]
    assert dc.offline_vote(traces, "majority", classes=classes).correct


@pytest.mark.parametrize("variant", ["low", "high", None])
@pytest.mark.parametrize("adaptive,batch", [(True, 1), (False, 1), (True, 5)])
def test_online_replay_matches_the_plain_replay(variant, adaptive, batch):
    seen = {"stopped": 0, "consensus": 0, "budget": 0}
    for seed in (0, 1, 2):
        traces = random_pool(seed, with_ties=seed == 1)
        arr, classes = _arrays(traces)
        orders = dc.draw_orders(len(traces), 10, seed + 7)
        budgets = [6, 17, 40]
        fast = dc.online_replay(arr, orders, RECIPE, variant, budgets=budgets, adaptive=adaptive, batch_size=batch)
        for b in budgets:
            for r in range(orders.shape[0]):
                draw = [traces[j] for j in orders[r, :b]]
                ref = dc.replay_online(draw, variant, RECIPE, budget=b, batch_size=batch, adaptive=adaptive,
                                       classes=classes)
                got = fast[b]
                assert got.tokens[r] == ref.tokens, (variant, b, r)
                assert got.launched[r] == ref.traces_used, (variant, b, r)
                assert got.stopped[r] == ref.stopped, (variant, b, r)
                assert got.correct[r] == bool(ref.correct), (variant, b, r)
                assert got.voters[r] == ref.voters, (variant, b, r)
                seen["stopped"] += ref.stopped
                seen[ref.stop_reason] += 1
    # the draws exercise each path: confidence stops (DeepConf only), consensus stops (adaptive only), budget
    if variant is None:
        assert seen["stopped"] == 0
    elif not adaptive:  # (with the consensus stop, DeepConf-low often stops right after the warm-up)
        assert seen["stopped"] > 0
    assert (seen["consensus"] > 0) == adaptive and seen["budget"] > 0


def test_online_replay_without_any_answer():
    traces = random_pool(3)
    for t in traces:
        t.answer, t.correct = None, False
    arr, classes = _arrays(traces)
    orders = dc.draw_orders(len(traces), 4, 0)
    for variant in ("low", None):
        got = dc.online_replay(arr, orders, RECIPE, variant)[40]
        ref = [dc.replay_online([traces[j] for j in row], variant, RECIPE, budget=40, classes=classes) for row in orders]
        assert got.tokens.tolist() == [r.tokens for r in ref] and not got.correct.any()
        assert got.launched.tolist() == [40] * 4 and got.voters.tolist() == [0] * 4


def test_stop_tokens_equal_first_stop_index_plus_one():
    traces = random_pool(4)
    arr, _ = _arrays(traces)
    thresholds = np.array([-math.inf, 9.0, 10.5, 12.0, math.inf])
    got = dc.stop_tokens(arr, thresholds)
    for r, s in enumerate(thresholds):
        for i, t in enumerate(traces):
            stop = dc.first_stop_index(t.confidences, s, RECIPE.window)
            assert got[r, i] == (-1 if stop is None else stop + 1)


def test_vote_winners_ties_go_to_the_first_voter():
    cls = np.array([[1, 0, 0, 1], [2, 2, -1, 0]])
    w = np.ones(cls.shape)
    voting = np.ones(cls.shape, dtype=bool)
    assert dc.vote_winners(cls, w, voting).tolist() == [0, 0]  # 2-2 tie: class 1 voted first; 2 votes for class 2
    assert dc.vote_winners(cls, w, np.zeros_like(voting)).tolist() == [-1, -1]


def test_the_protocol_equals_the_plain_replay_evaluate():
    pools = [random_pool(s, pid=f"p{s}") for s in range(3)]
    flat = [t for p in pools for t in p]
    classes = {f"p{s}": AnswerClasses() for s in range(3)}
    series = dc.standard_series(RECIPE, ["majority", "min_window_weighted", "tail_confidence_weighted"])
    ks, budgets, seed, n_res = [1, 8, 32], [6, 32], 5, 6
    rows = {}
    for i, pid in enumerate(sorted(classes)):
        traces = [t for t in flat if t.problem_id == pid]
        arr = dc.pool_arrays(traces, classes[pid], window=RECIPE.window, tail_tokens=RECIPE.tail_tokens)
        orders = dc.draw_orders(len(traces), n_res, (seed, i))
        for row in dc.evaluate_problem(arr, orders, RECIPE, series, ks=ks, budgets=budgets):
            rows[(row["series"], row["K"], pid)] = row
    checks = [("majority", "majority", None, "floor", True), ("min_window_weighted@10", "min_window_weighted", 10.0,
                                                               "floor", True),
              ("tail_confidence_weighted@90/percentile", "tail_confidence_weighted", 90.0, "percentile", True),
              ("online_low", "online_low", None, "floor", True), ("online_high/budget_only", "online_high", None,
                                                                  "floor", False),
              ("consensus_only", "consensus_only", None, "floor", True)]
    for name, method, eta, rule, adaptive in checks:
        for k in (budgets if method.startswith(("online", "consensus")) else ks):
            ref = dc.replay_evaluate(flat, method, k, eta=eta, n_resamples=n_res, seed=seed, recipe=RECIPE,
                                     adaptive=adaptive, keep_rule=rule, classes=classes)
            for i, pid in enumerate(ref.problem_ids):
                row = rows[(name, k, pid)]
                assert row["acc"] == pytest.approx(ref.correct[:, i].mean()), (name, k, pid)
                assert row["tokens"] == pytest.approx(ref.problem_tokens[:, i].mean()), (name, k, pid)
    # pass@1 is the pool's exact mean grade, the expectation of the replay's K = 1 draws
    for i, pid in enumerate(sorted(classes)):
        traces = [t for t in flat if t.problem_id == pid]
        assert rows[("pass@1", 1, pid)]["acc"] == pytest.approx(np.mean([t.correct for t in traces]))


def test_pool_arrays_reject_stopped_or_ungraded_traces():
    t = dc.Trace(confidences=np.ones(5), answer="1", correct=None)
    with pytest.raises(ValueError, match="ungraded"):
        dc.pool_arrays([t], AnswerClasses(), window=2, tail_tokens=2)
    s = dc.Trace(confidences=np.ones(5), answer=None, correct=False, finish_reason="early_stop")
    with pytest.raises(ValueError, match="stopped early"):
        dc.pool_arrays([s], AnswerClasses(), window=2, tail_tokens=2)
