"""DeepConf library: confidences, window scores (batch vs streaming), eta filtering, voting with answer
equivalence, the live early-stop controller, the consensus stop and replay token accounting."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from falcon_h1r import deepconf as dc
from falcon_h1r.config import RecipeError, parse
from falcon_h1r.inference import Completion
from falcon_h1r.inference.hf_loop import generate_ids
from falcon_h1r.verify import AnswerClasses


def const_trace(value: float, n: int, answer: str | None = "1", **kw) -> dc.Trace:
    return dc.Trace(confidences=np.full(n, value, dtype=np.float32), answer=answer, **kw)


# ============================================================================== confidences
def test_token_confidence_is_negative_mean_of_topk():
    top = np.array([[-0.1, -2.0, -3.9], [-0.0, -1.0, -2.0]])
    np.testing.assert_allclose(dc.token_confidence(top), [2.0, 1.0], rtol=1e-6)
    # A peaked distribution is MORE confident than a flat one (deepconf.md §2.2 sanity check).
    flat = np.log(np.full((1, 5), 0.2))
    peaked = np.log(np.array([[0.9, 0.04, 0.03, 0.02, 0.01]]))
    assert dc.token_confidence(peaked)[0] > dc.token_confidence(flat)[0]
    assert abs(dc.token_confidence(flat)[0] - math.log(5)) < 1e-5
    assert dc.token_confidence(np.zeros((0, 20))).shape == (0,)
    with pytest.raises(ValueError, match=r"\[T, k\]"):
        dc.token_confidence(np.zeros(5))


@pytest.mark.parametrize("n,window", [(50, 1), (50, 7), (50, 50), (20, 50), (1, 1), (0, 3), (300, 64)])
def test_window_means_match_reference(n, window):
    conf = np.random.default_rng(n + window).uniform(5, 20, size=n).astype(np.float32)
    fast, ref = dc.window_means(conf, window), dc.window_means_reference(conf, window)
    assert fast.shape == (max(0, n - window + 1),)
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-10)


def test_trace_scores_hand_computed():
    s = dc.trace_scores(np.array([1, 2, 3, 4, 5.0]), window=2, tail_tokens=2)
    # windows: 1.5 2.5 3.5 4.5; bottom: max(1, int(0.4)) = 1 window
    assert (s.lowest_group, s.bottom10_group, s.tail, s.mean, s.num_windows) == (1.5, 1.5, 4.5, 3.0, 4)
    s = dc.trace_scores(np.arange(1, 22, dtype=float), window=1, tail_tokens=3)
    # 21 windows of one token; bottom 10 %: int(2.1) = 2 lowest -> mean(1, 2)
    assert (s.lowest_group, s.bottom10_group, s.tail, s.mean) == (1.0, 1.5, 20.0, 11.0)
    # shorter than the window: one group value, the mean of all tokens (official compute_least_grouped)
    s = dc.trace_scores(np.array([2.0, 4.0]), window=3, tail_tokens=2048)
    assert (s.lowest_group, s.bottom10_group, s.tail, s.mean, s.num_windows) == (3.0, 3.0, 3.0, 3.0, 0)
    np.testing.assert_array_equal(dc.group_confidences(np.array([2.0, 4.0]), 3), [3.0])
    # empty trace: no confidence at all
    s = dc.trace_scores(np.array([]), window=3)
    assert all(math.isnan(getattr(s, k)) for k in dc.SCORES) and s.num_windows == 0


@pytest.mark.parametrize("n,window,tail", [(200, 1, 7), (200, 16, 16), (64, 64, 10), (10, 64, 64), (500, 37, 100),
                                           (0, 4, 4), (1, 1, 1)])
def test_streaming_matches_batch(n, window, tail):
    conf = np.random.default_rng(n * 31 + window).uniform(5, 20, size=n)
    stream = dc.StreamingConfidence(window, tail_tokens=tail)
    live = [stream.push(c) for c in conf]
    batch_means = dc.window_means(conf, window)
    # push returns None until the window is full, then exactly the batch window means
    assert all(m is None for m in live[:window - 1])
    np.testing.assert_allclose([m for m in live if m is not None], batch_means, rtol=1e-12)
    a, b = stream.scores(), dc.trace_scores(conf, window, tail_tokens=tail)
    assert a.num_windows == b.num_windows
    for k in dc.SCORES:
        va, vb = a.get(k), b.get(k)
        assert (math.isnan(va) and math.isnan(vb)) or va == pytest.approx(vb, rel=1e-12), k


def test_streaming_push_top_logprobs():
    stream = dc.StreamingConfidence(2)
    assert stream.push_top_logprobs([-1.0, -3.0]) is None
    assert stream.push_top_logprobs([-3.0, -5.0]) == pytest.approx(3.0)
    assert stream.is_full and stream.lowest == pytest.approx(3.0)


def test_first_stop_index_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, window = int(rng.integers(1, 120)), int(rng.integers(1, 30))
        conf = rng.uniform(5, 20, size=n)
        wm = dc.window_means(conf, window)
        for thr in rng.uniform(4, 21, size=5):
            below = np.flatnonzero(wm < thr)
            want = None if below.size == 0 else int(below[0]) + window - 1
            assert dc.first_stop_index(conf, thr, window) == want


# ============================================================================== eta convention
def test_percentile_convention_on_16_warmup_values():
    x = np.array([3, 15, 9, 1, 12, 6, 14, 2, 8, 11, 4, 13, 10, 7, 5, 16], dtype=float)  # sorted: 1..16
    xs = np.sort(x)
    low = dc.warmup_threshold(x, keep_percent=10)  # DeepConf-low: 90th percentile, position 13.5
    high = dc.warmup_threshold(x, keep_percent=90)  # DeepConf-high: 10th percentile, position 1.5
    assert xs[13] < low < xs[14] and low == pytest.approx((xs[13] + xs[14]) / 2) == pytest.approx(14.5)
    assert xs[1] < high < xs[2] and high == pytest.approx(2.5)
    assert int((x >= low).sum()) == 2 and int((x >= high).sum()) == 14  # 12.5 % / 87.5 % of warm-up pass
    recipe = dc.DeepConfRecipe()
    assert recipe.eta("low") == 10 and recipe.eta("high") == 90
    with pytest.raises(ValueError, match="no warm-up trace"):
        dc.warmup_threshold([math.nan, math.nan], 10)
    with pytest.raises(ValueError, match="variant"):
        recipe.eta("medium")


def test_n_kept_rounding():
    assert dc.n_kept(512, 10) == 51  # the paper's "about 51 traces vote"
    assert dc.n_kept(16, 10) == 1 and dc.n_kept(16, 90) == 14 and dc.n_kept(5, 10) == 1
    assert dc.n_kept(10, 90) == 9 and dc.n_kept(0, 10) == 0 and dc.n_kept(7, 100) == 7
    with pytest.raises(ValueError, match="kept percentage"):
        dc.n_kept(10, 0)


def test_filter_top_eta_ties_and_order():
    traces = [const_trace(v, 4, answer=str(i), trace_idx=i) for i, v in enumerate([5, 9, 7, 9, 9, 1, 2, 3, 4, 6])]
    kept = dc.filter_top_eta(traces, "mean", 20, window=2)  # 2 of 10; three tie at 9 -> earliest two
    assert [t.trace_idx for t in kept] == [1, 3]
    kept = dc.filter_top_eta(traces, "lowest_group", 50, window=2)
    assert [t.trace_idx for t in kept] == [1, 2, 3, 4, 9]  # 9, 9, 9, 7, 6 -> returned in input order
    with_empty = [dc.Trace(confidences=[], answer="x", trace_idx=99)] + traces[:2]
    assert [t.trace_idx for t in dc.filter_top_eta(with_empty, "tail", 100 * 2 / 3, window=2)] == [0, 1]
    assert dc.filter_top_eta([], "mean", 10) == []
    with pytest.raises(ValueError, match="unknown score"):
        dc.filter_top_eta(traces, "median", 10)


def test_percentile_keep_rule_keeps_what_the_official_code_keeps():
    # 16 distinct scores 0..15: np.percentile(., 90) = 13.5 -> 14 and 15 kept (2, floor keeps 1);
    # np.percentile(., 10) = 1.5 -> 2..15 kept (14, as floor)
    traces = [const_trace(float(v), 4, answer=str(v), trace_idx=v) for v in range(16)]
    assert [t.trace_idx for t in dc.filter_top_eta(traces, "mean", 10, keep_rule="percentile")] == [14, 15]
    assert [t.trace_idx for t in dc.filter_top_eta(traces, "mean", 10)] == [15]
    assert len(dc.filter_top_eta(traces, "mean", 90, keep_rule="percentile")) == 14
    # ties at the cutoff: the percentile rule keeps all of them, the floor rule exactly n_kept
    tied = [const_trace(9.0 if i < 5 else 1.0, 4, trace_idx=i) for i in range(10)]
    assert len(dc.filter_top_eta(tied, "mean", 10, keep_rule="percentile")) == 5
    assert len(dc.filter_top_eta(tied, "mean", 10)) == 1
    assert dc.percentile_cutoff([math.nan, 1.0, 3.0], 50) == 2.0 and dc.percentile_cutoff([math.nan], 50) is None
    with pytest.raises(ValueError, match="keep_rule"):
        dc.filter_top_eta(traces, "mean", 10, keep_rule="ceil")


# ============================================================================== answers and votes
def test_trace_answer_is_the_one_grading_reads():
    def completion(text: str) -> Completion:
        return Completion(prompt_index=0, text=text, token_ids=[5, 6], logprobs=np.zeros(2, np.float32),
                          top_logprobs=np.full((2, 20), -1.0, np.float32), top_ids=np.zeros((2, 20), np.int32),
                          finish_reason="eos", prompt_tokens=3)

    t = dc.trace_from_completion(completion("<think>maybe \\boxed{3}? no</think>So $\\boxed{\\frac{1}{2}}$."))
    assert t.answer == "\\frac{1}{2}" and t.confidences.tolist() == [1.0, 1.0]
    assert dc.trace_from_completion(completion("<think>we get x = 5 and then 12</think>")).answer is None
    assert dc.trace_from_completion(completion("\\boxed{}")).answer is None
    letter = dc.trace_from_completion(completion("Answer: C"), kind="multiple_choice", choices=["a", "b", "c", "d"])
    assert letter.answer == "C"


def test_vote_classes_follow_the_answer_kind():
    classes = AnswerClasses()
    ids = [classes(a) for a in ["0.5", "\\frac{1}{2}", "\\dfrac{1}{2}", "7", "7.0", None, "  "]]
    assert ids[0] == ids[1] == ids[2] and ids[3] == ids[4] and ids[0] != ids[3] and ids[5] is None and ids[6] is None
    # science answers are numbers within the problem's tolerance: one vote
    numeric = AnswerClasses(kind="numeric", rel_tol=0.01)
    assert numeric("12.0") == numeric("12.05") != numeric("13")
    traces = [const_trace(10, 3, a, correct=a != "13") for a in ["12.0", "13", "12.05", "13", "12.1"]]
    v = dc.vote(traces, "majority", classes=numeric)
    assert v.answer == "12.0" and v.n_voters == 5 and v.weights == {"12.0": 3.0, "13": 2.0}
    res = dc.run_offline(traces, "majority", gold="12.08", classes=numeric)
    assert res.correct is True


def test_vote_equivalent_answers_share_a_vote():
    answers = ["0.5", "\\frac{1}{2}", "7", "7", "\\dfrac{1}{2}"]
    traces = [const_trace(10, 5, a, correct=(a != "7")) for a in answers]
    v = dc.vote(traces, "majority")
    assert v.answer == "0.5" and v.n_voters == 5 and v.share == pytest.approx(3 / 5) and v.correct is True
    assert v.weights == {"0.5": 3.0, "7": 2.0}
    # exact-string voting (the official code) would have split 0.5 / \frac{1}{2} / \dfrac{1}{2} and picked 7
    # a 2-2 tie goes to the class whose first voter comes first
    tie = dc.vote(traces[:4], "majority")
    assert tie.weights == {"0.5": 2.0, "7": 2.0} and tie.answer == "0.5"
    assert dc.vote(traces[2:4] + traces[:2], "majority").answer == "7"


def test_weighted_votes_hand_computed():
    conf_a = np.array([10, 10, 10, 10], dtype=np.float32)  # mean 10, every window 10
    conf_b = np.array([20, 20, 1, 20], dtype=np.float32)  # mean 15.25, tail(2) 10.5, min window(2) 10.5
    traces = [dc.Trace(confidences=conf_a, answer="A"), dc.Trace(confidences=conf_a, answer="A"),
              dc.Trace(confidences=conf_b, answer="B")]
    kw = dict(window=2, tail_tokens=2)
    assert dc.vote(traces, "majority", **kw).answer == "A"
    v = dc.vote(traces, "mean_confidence_weighted", **kw)
    assert v.answer == "A" and v.weights == pytest.approx({"A": 20.0, "B": 15.25})
    single_b = traces[1:]
    assert dc.vote(single_b, "mean_confidence_weighted", **kw).answer == "B"  # 15.25 > 10
    assert dc.vote(single_b, "tail_confidence_weighted", **kw).answer == "B"  # 10.5 > 10
    assert dc.vote(single_b, "min_window_weighted", **kw).answer == "B"  # 10.5 > 10
    assert dc.vote(single_b, "bottom_window_weighted", **kw).answer == "B"
    low_b = [traces[0], dc.Trace(confidences=np.array([20, 1, 1, 20.0]), answer="B")]  # min window 1 < 10
    assert dc.vote(low_b, "min_window_weighted", **kw).answer == "A"
    assert dc.vote(low_b, "mean_confidence_weighted", **kw).answer == "B"  # mean 10.5 > 10: rules disagree
    with pytest.raises(ValueError, match="unknown voting method"):
        dc.vote(traces, "median")


def test_vote_without_answers_and_empty_traces():
    assert dc.vote([], "majority") is None
    assert dc.vote([const_trace(10, 3, None), const_trace(12, 3, None)], "min_window_weighted") is None
    empty_with_answer = dc.Trace(confidences=[], answer="5")
    # majority counts it (an answer, weight 1); a weighted vote cannot weight it (no confidence)
    assert dc.vote([empty_with_answer], "majority").answer == "5"
    assert dc.vote([empty_with_answer], "mean_confidence_weighted") is None
    mixed = [empty_with_answer, const_trace(10, 3, "6")]
    assert dc.vote(mixed, "tail_confidence_weighted").answer == "6"


def test_offline_vote_filters_by_the_methods_score():
    # nine low-confidence traces say "1", one high-confidence trace says "2"
    traces = [const_trace(5 + 0.1 * i, 8, "1") for i in range(9)] + [const_trace(15, 8, "2")]
    traces.append(const_trace(30, 8, None))  # unanswered: not ranked with answered_only (official analysis)
    assert dc.offline_vote(traces, "majority").answer == "1"
    assert dc.offline_vote(traces, "tail_confidence_weighted", eta=None, window=4, tail_tokens=4).answer == "1"
    v = dc.offline_vote(traces, "tail_confidence_weighted", eta=10, window=4, tail_tokens=4)
    assert v.answer == "2" and v.n_voters == 1
    # ranking all traces (paper Alg. 1 literally): the unanswered one takes the only kept slot
    assert dc.offline_vote(traces, "tail_confidence_weighted", eta=10, window=4, answered_only=False) is None
    with pytest.raises(ValueError, match="weighted method"):
        dc.offline_vote(traces, "majority", eta=10)
    res = dc.run_offline(traces, "tail_confidence_weighted", eta=10, gold="2", window=4, tail_tokens=4)
    assert (res.answer, res.correct, res.kept, res.voters, res.cutoff) == ("2", True, 1, 1, 15.0)
    assert res.tokens == 11 * 8 and res.traces_used == 11  # every trace was generated in full
    res = dc.run_offline(traces, "majority", gold="2")
    assert (res.answer, res.correct, res.kept, res.voters, res.cutoff) == ("1", False, 10, 10, None)
    assert dc.run_offline([const_trace(9, 3, None)], "majority", gold="1").answer is None


# ============================================================================== live controller
def _rows_of_confidences(confs: list[list[float]], k: int = 20) -> list[torch.Tensor]:
    """Per step, a [B, k] top-k log-prob tensor whose row mean is -confidence (spread around it)."""
    spread = torch.linspace(-0.5, 0.5, k, dtype=torch.float64)
    steps = []
    for t in range(len(confs[0])):
        c = torch.tensor([row[t] for row in confs], dtype=torch.float64)
        steps.append((-(c[:, None]) + spread[None, :]).to(torch.float32))
    return steps


def test_controller_stops_exactly_when_window_mean_crosses():
    window, thr = 3, 2.0
    confs = [
        [3.0, 3.0, 3.0, 2.5, 1.0, 1.0, 1.0, 1.0],  # means 3, 2.83, 2.17, 1.5 -> stop at step 5
        [0.1, 0.1, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0],  # low early, but the window is only full at step 2 (1.73)
        [9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0],  # never
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # not running from step 1 on: state frozen, never stops
    ]
    ctl = dc.EarlyStopController(threshold=thr, window=window)
    ctl.reset(4, "cpu")
    running = torch.ones(4, dtype=torch.bool)
    stopped_at = [None] * 4
    for step, top in enumerate(_rows_of_confidences(confs)):
        if step == 1:
            running[3] = False
        stop = ctl(top, running.clone())
        assert not bool((stop & ~running).any())
        for i in torch.nonzero(stop).flatten().tolist():
            stopped_at[i] = step
        running &= ~stop
    assert stopped_at == [5, 2, None, None]
    for row in range(3):
        assert dc.first_stop_index(np.array(confs[row]), thr, window) == stopped_at[row]
    assert int(ctl.count[3]) == 1  # a row that is not running does not advance


def test_controller_without_threshold_never_stops_and_checks_shape():
    ctl = dc.EarlyStopController(threshold=None, window=1)
    ctl.reset(2, "cpu")
    assert not bool(ctl(torch.full((2, 20), -0.01), torch.ones(2, dtype=torch.bool)).any())
    ctl.threshold = 5.0  # settable between batches
    assert bool(ctl(torch.full((2, 20), -0.01), torch.ones(2, dtype=torch.bool)).all())
    with pytest.raises(ValueError, match="reset"):
        ctl(torch.zeros(3, 20), torch.ones(3, dtype=torch.bool))


class _FadingLM(torch.nn.Module):
    """A fake causal LM whose next-token distribution flattens with position: confidence falls."""

    def __init__(self, vocab: int = 30):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=vocab)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=True, logits_to_keep=None,
                past_key_values=None):
        pos = position_ids[:, -1:].float()  # [B, 1]
        logits = torch.zeros(input_ids.shape[0], 1, self.config.vocab_size)
        logits[:, :, 1] = (12.0 - 0.4 * pos)  # peaked early, flat later
        logits[:, :, 0] = -1e4  # EOS never sampled
        return SimpleNamespace(logits=logits, past_key_values=None)


def test_controller_inside_generation_loop_stops_where_replay_would():
    model, window, thr = _FadingLM(), 4, 5.0
    rows = generate_ids(model, [[2, 3], [2, 3, 4, 5]], eos_id=0, pad_id=0, temperature=1.0, top_p=1.0,
                        max_new_tokens=60, top_k=20, early_stop=dc.EarlyStopController(thr, window))
    free = generate_ids(model, [[2, 3]], eos_id=0, pad_id=0, temperature=1.0, top_p=1.0, max_new_tokens=60,
                        top_k=20, early_stop=None)[0]
    full_conf = dc.token_confidence(free["top_logprobs"])
    assert free["finish_reason"] == "length" and full_conf[0] > thr > full_conf[-1]
    for row in rows:
        assert row["finish_reason"] == "early_stop"
        conf = dc.token_confidence(row["top_logprobs"])
        stop = dc.first_stop_index(conf, thr, window)
        assert stop is not None and len(row["token_ids"]) == stop + 1  # the crossing token counts
        assert dc.window_means(conf[:-1], window).min() >= thr  # not a token earlier


# ============================================================================== online runs
def _completion(conf: float, n: int, answer: str | None, reason: str = "eos") -> Completion:
    text = f"<think>...</think>\\boxed{{{answer}}}" if answer is not None else "<think>..."
    return Completion(prompt_index=0, text=text, token_ids=list(range(n)), logprobs=np.zeros(n, np.float32),
                      top_logprobs=np.full((n, 20), -conf, np.float32), top_ids=np.zeros((n, 20), np.int32),
                      finish_reason=reason)


def test_run_online_consensus_is_checked_between_batches():
    # warm-up lowest: 14 traces at 1..7.5, x14 = 10 says "1", x15 = 12 says "2"; 90th pct = (7.5 + 10) / 2
    warm = [_completion(1 + 0.5 * i, 6, "3") for i in range(14)] + [_completion(10, 6, "1"), _completion(12, 6, "2")]
    calls = []

    def sample_fn(n, early_stop):
        calls.append((n, None if early_stop is None else early_stop.threshold))
        return warm if early_stop is None else [_completion(10, 6, "1") for _ in range(n)]

    recipe = dc.DeepConfRecipe(window=4, tail_tokens=4, budget=64)
    res = dc.run_online(sample_fn, "low", recipe, batch_size=4, gold="1")
    # beta = (10 + 10 n) / (22 + 10 n) >= 0.95 first at n = 22; checked every 4 traces -> n = 24
    assert calls[0] == (16, None) and all(c == (4, 8.75) for c in calls[1:]) and len(calls) == 7
    assert res.stop_reason == "consensus" and res.traces_used == 40 and res.tokens == 40 * 6
    assert res.answer == "1" and res.correct is True and res.threshold == 8.75 and res.voters == 26
    assert res.share == pytest.approx(250 / 262) and res.stopped == 0
    # sequential (batch 1, the paper's protocol) stops at exactly n = 22
    calls.clear()
    assert dc.run_online(sample_fn, "low", recipe, batch_size=1).traces_used == 38
    # budget-only never checks consensus
    calls.clear()
    res = dc.run_online(sample_fn, "low", recipe, batch_size=8, adaptive=False)
    assert res.stop_reason == "budget" and res.traces_used == 64


def test_run_online_rejects_wrong_sample_count_and_k():
    with pytest.raises(ValueError, match="exactly 16"):
        dc.run_online(lambda n, es: [_completion(10, 3, "1")], "low", dc.DeepConfRecipe(window=2, budget=32))
    with pytest.raises(ValueError, match="generation.top_logprobs=5"):
        dc.run_online(lambda n, es: [_completion(10, 3, "1")] * n, "low",
                      dc.DeepConfRecipe(window=2, budget=32, top_k=5))


def test_replay_truncates_and_counts_every_token():
    window = 4
    recipe = dc.DeepConfRecipe(window=window, tail_tokens=window, n_init=16, budget=20)
    # warm-up: lowest-group 1..16 (constant traces, 10 tokens); "high" keeps top 90 % -> thr = 2.5
    warm = [const_trace(float(v), 10, "9") for v in range(1, 17)]
    dip = np.array([8, 8, 8, 8, 8, 1, 1, 1, 1, 1, 8, 8], dtype=np.float32)  # means 8, 8, 6.25, 4.5, 2.75, 1
    later = [dc.Trace(confidences=dip, answer="4"), const_trace(2.6, 30, "4"), const_trace(2.0, 3, "4"),
             const_trace(20.0, 7, None)]
    res = dc.replay_online(warm + later, "high", recipe, adaptive=False)
    assert res.threshold == pytest.approx(2.5)
    # dip: first window mean below 2.5 is window 5 (tokens 5..8, mean 1) -> token index 8 -> 9 tokens
    assert dc.first_stop_index(dip, 2.5, window) == 8
    assert res.tokens == 16 * 10 + 9 + 30 + 3 + 7 and res.traces_used == 20 and res.stop_reason == "budget"
    assert res.stopped == 1
    # voters: warm-up >= 2.5 (14 traces, "9"), the 2.6 trace ("4"); the 3-token trace is shorter than the
    # window (never stoppable) but its whole-trace mean 2.0 < 2.5 fails the post-hoc check; no answer: none
    assert res.voters == 15 and res.answer == "9"
    short_pool = dc.replay_online(warm + later[:2], "high", recipe, adaptive=False)
    assert short_pool.stop_reason == "pool" and short_pool.traces_used == 18
    with pytest.raises(ValueError, match="at least n_init"):
        dc.replay_online(warm[:5], "high", recipe)


def test_all_later_traces_stopped_and_no_answers():
    recipe = dc.DeepConfRecipe(window=2, tail_tokens=2, n_init=16, budget=24)
    warm = [const_trace(float(v), 6, None) for v in range(10, 26)]  # finished without a boxed answer
    later = [dc.Trace(confidences=np.array([20, 1, 1, 20], np.float32), answer="5") for _ in range(8)]
    res = dc.replay_online(warm + later, "low", recipe, gold="5")
    assert res.stopped == 8 and res.voters == 0 and res.answer is None and res.correct is False
    # each later trace: windows 10.5, 1, 10.5 vs threshold 23.5 -> stops at token 1 (2 tokens)
    assert res.share is None and res.stop_reason == "budget" and res.tokens == 16 * 6 + 8 * 2
    assert dc.replay_online(warm + later, "low", recipe).correct is None  # ungraded, no gold


# ============================================================================== recipe and vLLM
def test_recipe_defaults_and_parse():
    r = dc.DeepConfRecipe()
    assert (r.window, r.top_k, r.n_init, r.budget, r.eta_low, r.eta_high, r.tau) == (2048, 20, 16, 512, 10, 90, 0.95)
    p = parse(dc.DeepConfRecipe, {"window": 32, "tail_tokens": 32, "budget": 64}, "deepconf")
    assert p.window == 32 and p.budget == 64 and p.tau == 0.95
    with pytest.raises(RecipeError, match="unknown key deepconf.windw"):
        parse(dc.DeepConfRecipe, {"windw": 3}, "deepconf")
    with pytest.raises(RecipeError, match="online_vote_method"):
        parse(dc.DeepConfRecipe, {"online_vote_method": "median"}, "deepconf")
    with pytest.raises(RecipeError, match="unknown key deepconf.budgets"):  # the sweep is the experiment's
        parse(dc.DeepConfRecipe, {"budgets": [16]}, "deepconf")
    with pytest.raises(RecipeError, match="n_init"):
        parse(dc.DeepConfRecipe, {"budget": 8}, "deepconf")
    with pytest.raises(RecipeError, match="tau"):
        parse(dc.DeepConfRecipe, {"tau": 1.5}, "deepconf")


def test_run_online_grade_callable_grades_every_trace():
    """``gold`` grades with the math grader; a science answer within tolerance needs ``grade``."""
    from falcon_h1r.tracestore import grade_answer

    problem = {"id": "s", "domain": "science", "answer": "3.00", "tolerance": 0.01}
    recipe = dc.DeepConfRecipe(window=2, tail_tokens=2, budget=20)
    sample_fn = lambda n, es: [_completion(10, 4, "3.02") for _ in range(n)]  # noqa: E731
    assert dc.run_online(sample_fn, "low", recipe, gold="3.00").correct is False  # exact math: 3.02 != 3
    res = dc.run_online(sample_fn, "low", recipe, grade=lambda a: grade_answer(a, problem))
    assert res.correct is True and res.answer == "3.02"
    assert dc.run_online(sample_fn, "low", recipe).correct is None  # nothing to grade with


def test_controller_window_means_match_streaming_twin():
    """Random confidences, rows leaving at random steps: the controller's window mean of every running
    row equals StreamingConfidence's, and it stops exactly where the running mean first crosses."""
    rng = np.random.default_rng(5)
    batch, window, steps, k = 6, 5, 40, 20
    top = -rng.uniform(0.0, 12.0, size=(steps, batch, k))
    leave = rng.integers(3, steps, size=batch)
    ctl = dc.EarlyStopController(threshold=6.0, window=window)
    ctl.reset(batch, "cpu")
    twins = [dc.StreamingConfidence(window, tail_tokens=window) for _ in range(batch)]
    running = torch.ones(batch, dtype=torch.bool)
    for t in range(steps):
        running &= torch.as_tensor(t < leave)
        stop = ctl(torch.as_tensor(top[t], dtype=torch.float32), running.clone())
        for i in torch.nonzero(running).flatten().tolist():
            mean = twins[i].push_top_logprobs(top[t, i].astype(np.float32))
            if mean is not None:
                assert float(ctl.window_mean()[i]) == pytest.approx(mean, rel=1e-9)
            assert bool(stop[i]) == (mean is not None and mean < 6.0)
        assert not bool((stop & ~running).any())
        running &= ~stop
    assert ctl.count.tolist() == [tw.n_tokens for tw in twins]
