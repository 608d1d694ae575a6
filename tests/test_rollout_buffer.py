"""Online sampling strategies: advantages, the prompt stream, and each strategy's bookkeeping."""

import pytest

from falcon_h1r.rollout_buffer import (BatchFiller, Group, PromptStream, ReplaySampler, group_advantages,
                                      informative_probability, simulate_strategy, summarize, totals_from_rows)


def test_group_advantages_hand_computed():
    # rewards [1, 0, 0, 0]: mean 0.25, unbiased var (0.5625 + 3 * 0.0625) / 3 = 0.25, std 0.5
    adv = group_advantages([1.0, 0.0, 0.0, 0.0], eps=0.0)
    assert adv == pytest.approx([1.5, -0.5, -0.5, -0.5])
    # population std: var 0.1875 -> std 0.4330
    pop = group_advantages([1.0, 0.0, 0.0, 0.0], eps=0.0, std="population")
    assert pop[0] == pytest.approx(0.75 / 0.1875 ** 0.5)
    assert group_advantages([1.0, 1.0, 1.0], eps=1e-6) == [0.0, 0.0, 0.0]
    assert group_advantages([0.0, 0.0], eps=1e-6) == [0.0, 0.0]
    with pytest.raises(ValueError, match="unbiased"):
        group_advantages([1.0, 0.0], eps=0.0, std="sample")


def _problems(n, domains=("math",)):
    return [{"id": f"{d}-{i}", "domain": d, "question": f"q{d}{i}"} for d in domains for i in range(n)]


def test_prompt_stream_is_seeded_interleaves_domains_and_resumes():
    pool = _problems(6, ("math", "code"))
    a, b = PromptStream(pool, seed=3), PromptStream(pool, seed=3)
    first = [p["id"] for p in a.take(8)]
    assert first == [p["id"] for p in b.take(8)]
    # round-robin over domains inside an epoch: every consecutive pair holds one of each
    assert all({first[i].split("-")[0], first[i + 1].split("-")[0]} == {"math", "code"} for i in range(0, 8, 2))
    assert [p["id"] for p in PromptStream(pool, seed=4).take(12)] != [p["id"] for p in PromptStream(pool, seed=3).take(12)]
    # the whole pool once per epoch, then a reshuffle
    whole = [p["id"] for p in PromptStream(pool, seed=3).take(12)]
    assert sorted(whole) == sorted(p["id"] for p in pool)
    state = a.state_dict()
    c = PromptStream(pool, seed=3)
    c.load_state_dict(state)
    assert [p["id"] for p in c.take(10)] == [p["id"] for p in a.take(10)]
    with pytest.raises(ValueError, match="same pool"):
        PromptStream(pool[:3], seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="empty"):
        PromptStream([], seed=0)


class FakeSampler:
    """Groups whose outcome is fixed by the problem: 'i' informative, 'c' all correct, 'w' all wrong."""

    def __init__(self, kinds, G=2):
        self.kinds = kinds
        self.G = G
        self.calls = []
        self.step = 0

    def __call__(self, problems):
        self.calls.append([p["id"] for p in problems])
        out = []
        for p in problems:
            kind = self.kinds[p["id"]]
            rewards = {"i": [1.0] + [0.0] * (self.G - 1), "c": [1.0] * self.G, "w": [0.0] * self.G}[kind]
            out.append(Group(problem=p, rollouts=[f"{p['id']}/{k}" for k in range(self.G)], rewards=rewards,
                             correct=[r > 0 for r in rewards], advantages=group_advantages(rewards, 1e-6),
                             born_step=self.step))
        return out


def _setup(pattern):
    pool = [{"id": f"p{i}", "domain": "math"} for i in range(len(pattern))]
    kinds = {f"p{i}": k for i, k in enumerate(pattern)}
    return pool, FakeSampler(kinds)


def _unshuffled(pool):
    s = PromptStream(pool, seed=0)
    s._order = list(range(len(pool)))  # fixed order so the bookkeeping can be hand-computed
    s._make_order = lambda epoch: list(range(len(pool)))
    return s


def test_backfill_fills_from_later_prompts_and_caches_the_overflow():
    pool, fake = _setup("iwci" "iiii" "wwww")
    stream = _unshuffled(pool)
    f = BatchFiller("backfill", batch_prompts=3, gen_prompts_per_call=4, cache_size=8)
    batch, st = f.fill(stream, fake, step=0)
    # call 1: p0..p3 -> informative p0, p3 (2 < 3); call 2: p4..p7 -> all informative, 1 used, 3 cached
    assert [g.problem["id"] for g in batch] == ["p0", "p3", "p4"]
    assert (st.gen_calls, st.prompts_generated, st.rollouts_generated) == (2, 8, 16)
    assert (st.all_correct, st.all_wrong, st.informative_new) == (1, 1, 6)
    assert (st.to_cache, st.cache_len, st.groups_used, st.underfilled) == (3, 3, 3, False)
    fake.step = 1
    batch, st = f.fill(stream, fake, step=1)
    # the next batch is served from the cache alone: no generation call
    assert [g.problem["id"] for g in batch] == ["p5", "p6", "p7"]
    assert (st.gen_calls, st.from_cache, st.mean_staleness) == (0, 3, 1.0)
    s = f.summary()
    # 2 calls for 6 unique informative groups, batch 3 -> 1 call per filled batch
    assert s["gen_calls"] == 2 and s["groups_used"] == 6 and s["gen_calls_per_filled_batch"] == pytest.approx(1.0)


def test_backfill_without_cache_wastes_the_overflow_and_costs_more_calls():
    pool, fake = _setup("iwci" "iiii" "wwww")
    stream = _unshuffled(pool)
    f = BatchFiller("backfill", batch_prompts=3, gen_prompts_per_call=4, cache_size=0)
    f.fill(stream, fake, step=0)
    assert f.summary()["evicted"] == 3 and f.cache == []
    _, st = f.fill(stream, fake, step=1)
    # p8..p11 all wrong, then p0..p3 again (epoch 2): p0, p3 -> still short, p4..p7 -> one more
    assert st.gen_calls == 3 and st.groups_used == 3
    s = f.summary()
    assert s["gen_calls_per_filled_batch"] == pytest.approx(5 * 3 / 6)


def test_backfill_cache_is_bounded_and_refreshed():
    pool, fake = _setup("iiiiiiii")
    stream = _unshuffled(pool)
    f = BatchFiller("backfill", batch_prompts=1, gen_prompts_per_call=4, cache_size=2, cache_max_age=1)
    _, st = f.fill(stream, fake, step=0)
    assert (st.to_cache, st.evicted, len(f.cache)) == (3, 1, 2)  # the oldest overflow group is evicted
    assert [g.problem["id"] for g in f.cache] == ["p2", "p3"]
    batch, st = f.fill(stream, fake, step=1)  # age 1 <= 1: still fresh
    assert batch[0].problem["id"] == "p2" and st.gen_calls == 0
    fake.step = 5
    batch, st = f.fill(stream, fake, step=5)  # p3 was born at step 0: too old, dropped, new call
    assert st.expired == 1 and st.gen_calls == 1 and batch[0].problem["id"] == "p4"


def test_backfill_stops_after_max_calls_on_a_solved_pool():
    pool, fake = _setup("cccc")
    f = BatchFiller("backfill", batch_prompts=2, gen_prompts_per_call=2, cache_size=4, max_gen_calls=3)
    batch, st = f.fill(_unshuffled(pool), fake, step=0)
    assert batch == [] and st.gen_calls == 3 and st.underfilled and st.all_correct == 6


def test_reject_keeps_a_variable_batch_from_one_call():
    pool, fake = _setup("iwci" "iiii")
    stream = _unshuffled(pool)
    f = BatchFiller("reject", batch_prompts=4, gen_prompts_per_call=4)
    batch, st = f.fill(stream, fake, step=0)
    assert [g.problem["id"] for g in batch] == ["p0", "p3"] and st.gen_calls == 1
    batch, st = f.fill(stream, fake, step=1)
    assert len(batch) == 4 and st.gen_calls == 1
    s = f.summary()
    assert s["gen_calls_per_filled_batch"] == pytest.approx(2 * 4 / 6)
    assert s["informative_frac"] == pytest.approx(6 / 8)


def test_duplicate_refills_with_positive_advantage_rollouts():
    pool, fake = _setup("iwwi")
    f = BatchFiller("duplicate", batch_prompts=4, gen_prompts_per_call=4)  # 2 informative of 4: 2 slots to fill
    batch, st = f.fill(_unshuffled(pool), fake, step=0)
    assert len(batch) == 4 and st.gen_calls == 1 and st.groups_used == 2
    dups = [g for g in batch if g.duplicate_of is not None]
    assert len(dups) == 2 and st.duplicated == 4
    for g in dups:  # only positive-advantage rollouts are copied in, with their advantages
        assert all(a > 0 for a in g.advantages) and all(g.correct)
        assert all(r.endswith("/0") for r in g.rollouts)
    assert f.summary()["gen_calls_per_filled_batch"] == pytest.approx(1 * 4 / 2)


def test_filler_state_round_trip_and_bad_input():
    pool, fake = _setup("iiiiiiii")
    f = BatchFiller("backfill", batch_prompts=1, gen_prompts_per_call=4, cache_size=8)
    f.fill(_unshuffled(pool), fake, step=0)
    g = BatchFiller("backfill", batch_prompts=1, gen_prompts_per_call=4, cache_size=8)
    g.load_state_dict(f.state_dict())
    assert [x.problem["id"] for x in g.cache] == [x.problem["id"] for x in f.cache] and g.totals == f.totals
    with pytest.raises(ValueError, match="strategy"):
        BatchFiller("reject", 1, 1).load_state_dict(f.state_dict())
    with pytest.raises(ValueError, match="backfill"):
        BatchFiller("oversample", 1, 1)
    with pytest.raises(ValueError, match="batch_prompts"):
        BatchFiller("reject", 0, 1)


def test_totals_from_per_step_rows_equal_the_fillers_own():
    pool, fake = _setup("iwci" "iiww" "wiic")
    stream = _unshuffled(pool)
    f = BatchFiller("backfill", batch_prompts=3, gen_prompts_per_call=4, cache_size=2, cache_max_age=1)
    rows = []
    for step in range(5):
        fake.step = step
        _, st = f.fill(stream, fake, step=step)
        rows.append(st.as_dict())
    assert totals_from_rows(rows) == f.totals
    assert summarize(totals_from_rows(rows[:2]), 3)["gen_calls"] == rows[0]["gen_calls"] + rows[1]["gen_calls"]
    assert summarize(totals_from_rows(rows), 3) == f.summary()


def test_reject_and_duplicate_generate_calls_of_the_same_size_as_backfill_and_train_at_most_a_batch():
    pool, fake = _setup("iiwi" "iwww")
    f = BatchFiller("reject", batch_prompts=2, gen_prompts_per_call=8)
    batch, st = f.fill(_unshuffled(pool), fake, step=0)
    # 4 informative groups in the call: 2 trained (the cap), 2 dropped (wasted), as many as backfill would train
    assert st.prompts_generated == 8 and len(batch) == 2 and st.groups_used == 2 and st.overflow_dropped == 2
    assert [g.problem["id"] for g in batch] == ["p0", "p1"]
    d = BatchFiller("duplicate", batch_prompts=3, gen_prompts_per_call=8)
    batch, st = d.fill(_unshuffled(pool), fake, step=0)
    assert len(batch) == 3 and st.groups_used == 3 and st.overflow_dropped == 1 and st.duplicated == 0
    g = BatchFiller("duplicate", batch_prompts=6, gen_prompts_per_call=8)
    batch, st = g.fill(_unshuffled(pool), fake, step=0)
    assert st.prompts_generated == 8 and len(batch) == 6 and st.groups_used == 4 and st.duplicated == 2 * 2
    assert st.overflow_dropped == 0


def test_a_run_that_fills_no_batch_says_so_and_never_reports_an_infinite_cost():
    pool, fake = _setup("cwcw")
    f = BatchFiller("reject", batch_prompts=2, gen_prompts_per_call=4)
    for step in range(3):
        f.fill(_unshuffled(pool), fake, step=step)
    s = f.summary()
    assert s["gen_calls"] == 3 and s["groups_used"] == 0
    assert s["filled_batches"] == 0 and s["filled_no_batch"] is True
    assert s["gen_calls_per_filled_batch"] is None and s["rollouts_per_filled_batch"] is None
    assert summarize({"gen_calls": 3, "groups_used": 3, "rollouts_generated": 24}, 2)["gen_calls_per_filled_batch"] == 2.0


def test_replay_sampler_is_keyed_by_seed_problem_and_visit():
    rates = {"a": 0.5, "b": 0.0, "c": 1.0}
    pool = [{"id": i, "domain": "math"} for i in rates]
    s1, s2 = ReplaySampler(rates, 8, seed=4), ReplaySampler(rates, 8, seed=4)
    g1, g2 = s1(pool), s2(pool)
    assert [g.rewards for g in g1] == [g.rewards for g in g2]  # same seed, same visit: the same group
    assert g1[1].rewards == [0.0] * 8 and g1[2].rewards == [1.0] * 8  # 0/k and k/k replay all wrong / all right
    assert not g1[1].informative and not g1[2].informative and g1[2].all_correct
    again = s1([pool[0]])[0]
    assert s2([pool[0]])[0].rewards == again.rewards  # the second visit is the same in both samplers...
    assert len({tuple(ReplaySampler(rates, 8, seed=k)(pool)[0].rewards) for k in range(8)}) > 1  # ...seeds differ
    assert all(a == pytest.approx(x) for a, x in zip(g1[0].advantages, group_advantages(g1[0].rewards, 1e-6)))
    with pytest.raises(KeyError, match="no measured success rate"):
        s1([{"id": "z", "domain": "math"}])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReplaySampler({"a": 1.5}, 4)


def test_replayed_informative_share_matches_its_probability():
    # 400 groups of 4 at p = 0.25: P(informative) = 1 - 0.25^4 - 0.75^4 = 0.68
    rates = {f"p{i}": 0.25 for i in range(400)}
    groups = ReplaySampler(rates, 4, seed=0)([{"id": i, "domain": "math"} for i in rates])
    share = sum(g.informative for g in groups) / len(groups)
    assert informative_probability(0.25, 4) == pytest.approx(1 - 0.25 ** 4 - 0.75 ** 4)
    assert share == pytest.approx(informative_probability(0.25, 4), abs=0.07)  # 3 binomial standard errors


def test_simulated_strategies_on_a_plentiful_pool_cost_what_the_bookkeeping_says():
    # p = 0.5 and groups of 8: 1 - 2/256 of the groups are informative. A call of 2 batches' worth of prompts
    # overfills the batch: backfill without a cache spends one call a batch and wastes the rest; with a cache
    # every informative group is used once, so it needs about half a call a batch; reject (capped) one call.
    pool = [{"id": f"p{i}", "domain": "math"} for i in range(50)]
    rates = {p["id"]: 0.5 for p in pool}
    kw = dict(group_size=8, batch_prompts=4, gen_prompts_per_call=8, steps=40, seed=1)
    cache = simulate_strategy("backfill", pool, rates, cache_size=16, **kw)
    nocache = simulate_strategy("backfill", pool, rates, cache_size=0, **kw)
    reject = simulate_strategy("reject", pool, rates, **kw)
    assert nocache["gen_calls"] == 40 and nocache["gen_calls_per_filled_batch"] == pytest.approx(1.0)
    assert nocache["evicted"] > 100  # the overflow of every call is thrown away
    assert cache["gen_calls_per_filled_batch"] == pytest.approx(4 / (8 * (1 - 2 / 256)), abs=0.03)
    assert reject["gen_calls_per_filled_batch"] == pytest.approx(1.0) and reject["overflow_dropped"] > 100
    assert cache["batch_groups_min"] == nocache["batch_groups_min"] == reject["batch_groups_min"] == 4
    with pytest.raises(ValueError, match="steps"):
        simulate_strategy("reject", pool, rates, **{**kw, "steps": 0})
