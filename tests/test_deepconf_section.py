"""Section 05 (``falcon_h1r.sections.deepconf`` and its experiment, ``sections.deepconf_experiment``):
pass-rate screening (from the bases' records or by sampling) and selection, the live online run (stop rule and
token bill), the two recipe blocks, the live stop's cost, the pools kept and resumed base by base, and the whole
section end to end on three fake language models whose confident traces are more often right."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from falcon_h1r import deepconf as dc
from falcon_h1r import tracestore as ts
from falcon_h1r.config import GenerationConfig, RecipeError, load_preset, parse
from falcon_h1r.sections import deepconf as dx
from falcon_h1r.sections import deepconf_experiment as ex
from falcon_h1r.sections import deepconf_report as dr
from falcon_h1r.sections.common import StageIncomplete, torch_threads


# ============================================================================== a fake reasoning model
class FakeTokenizer:
    """Space-separated tokens; ``prompt`` ends in ``<think>``, like ChatTokenizer's."""

    VOCAB = ["<pad>", "<eos>", "<think>", "Q", "a", "b", "Ta", "Tb", "B", "R"] + [str(d) for d in range(10)] + \
            [f"f{i}" for i in range(6)]
    TEXT = {"<pad>": "", "<eos>": "", "Ta": "</think>", "Tb": "</think>", "B": "\\boxed{", "R": "}"}

    def __init__(self):
        self.ids = {t: i for i, t in enumerate(self.VOCAB)}
        self.eos_id, self.pad_id = self.ids["<eos>"], self.ids["<pad>"]

    @property
    def vocab_size(self) -> int:
        return len(self.VOCAB)

    def prompt(self, question: str) -> str:
        return "Q <think>"

    def encode(self, text: str) -> list[int]:
        return [self.ids[t] for t in text.split()]

    def decode(self, ids) -> str:
        return "".join(self.TEXT.get(self.VOCAB[i], self.VOCAB[i]) for i in ids)


class FakeReasoner(torch.nn.Module):
    """A Markov chain on the last token. After ``<think>`` a trace goes down a confident path ("a":
    a peaked next-token distribution) or an unsure one ("b": flat); the confident path answers 7 with
    probability 0.8, the unsure one mostly 3 or 5. So DeepConf has something to find."""

    def __init__(self, tok: FakeTokenizer):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        v = tok.vocab_size
        self.config = SimpleNamespace(vocab_size=v)
        i = tok.ids
        table = torch.full((v, v), -30.0)

        def dist(row: str, probs: dict[str, float], floor: float = -30.0) -> None:
            table[i[row]] = floor
            for t, p in probs.items():
                table[i[row], i[t]] = float(np.log(p))

        dist("<think>", {"a": 0.5, "b": 0.5})
        dist("Q", {"a": 0.5, "b": 0.5})
        dist("a", {"a": 0.85, "Ta": 0.15})
        flat = {f"f{k}": 0.01 for k in range(6)}
        dist("b", {"b": 0.7, "Tb": 0.15, **flat, "Ta": 0.09}, floor=-9.0)  # flat: low confidence
        for k in range(6):
            dist(f"f{k}", {"b": 0.9, "Tb": 0.1}, floor=-9.0)
        dist("Ta", {"B": 1.0})
        dist("Tb", {"B": 1.0})
        dist("B", {"7": 0.5, "3": 0.3, "5": 0.2})  # overwritten below: the path decides, via the think token
        dist("R", {"<eos>": 1.0})
        for d in range(10):
            dist(str(d), {"R": 1.0})
        dist("<pad>", {"<eos>": 1.0})
        dist("<eos>", {"<eos>": 1.0})
        self.register_buffer("table", table)
        self.ta, self.tb, self.box = i["Ta"], i["Tb"], i["B"]
        self.answer_after = {
            i["Ta"]: torch.log(torch.tensor([0.8 if d == 7 else 0.2 if d == 3 else 1e-6 for d in range(10)])),
            i["Tb"]: torch.log(torch.tensor([0.2 if d == 7 else 0.5 if d == 3 else 0.3 if d == 5 else 1e-6
                                             for d in range(10)])),
        }
        self.digits = torch.tensor([i[str(d)] for d in range(10)])

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=True, logits_to_keep=None,
                past_key_values=None):
        last = input_ids[:, -1]
        logits = self.table[last].clone()
        # the answer depends on which path the trace took: remember the think token in the "cache",
        # updated in place as a real cache is (the loop keeps the first cache object it gets)
        state = past_key_values if past_key_values is not None else torch.full_like(last, -1)
        state.copy_(torch.where((last == self.ta) | (last == self.tb), last, state))
        at_box = last == self.box
        for think, lp in self.answer_after.items():
            rows = at_box & (state == think)
            if rows.any():
                row = torch.full((logits.shape[-1],), -30.0)
                row[self.digits] = lp
                logits[rows] = row
        return SimpleNamespace(logits=logits[:, None, :], past_key_values=state)


def _problems():
    return [{"id": f"math-test-{k}", "domain": "math", "difficulty": 1 + k % 2, "question": f"q{k}", "answer": ans}
            for k, ans in enumerate(["7", "7", "9", "3", "7", "7"])]


# pass rates the bases "recorded" when trained (what screen: base_record reads): problem 2 ("9") never right
RATES = {"math-test-0": 0.75, "math-test-1": 0.5, "math-test-2": 0.0, "math-test-3": 0.25, "math-test-4": 0.625,
         "math-test-5": 1.0}


def _base(problems=None, seed=0, rates=RATES):
    tok = FakeTokenizer()
    problems = problems or _problems()
    per = {p["id"]: rates.get(p["id"], 0.0) for p in problems}
    info = {"seed": seed, "recipe_hash": f"fake{seed}", "sampled": {"per_problem": per, "n_samples": 8}}
    return SimpleNamespace(model=FakeReasoner(tok), tokenizer=tok, sets={"train": [], "test": problems},
                           path="fake", info=info, seed=seed)


def _bases(n=3, **kw):
    return [_base(seed=s, **kw) for s in range(n)]


GEN = GenerationConfig(temperature=1.0, top_p=1.0, max_new_tokens=40, top_logprobs=20, batch_size=64)
METHOD = {"window": 3, "tail_tokens": 3, "n_init": 8, "budget": 16, "online_batch_size": 4}
EXPERIMENT = {"budgets": [8, 16], "n_resamples": 8, "max_problems": 4, "live_problems": 1, "domains": ["math"],
              "candidates": 0, "pool_size": 32, "replay_workers": 1}


def _preset(**extra):
    overrides = {f"deepconf.{k}": v for k, v in METHOD.items()}
    overrides.update({f"deepconf_experiments.{k}": v for k, v in {**EXPERIMENT, **extra}.items()})
    overrides.update({"generation.temperature": 1.0, "generation.top_p": 1.0, "generation.max_new_tokens": 40})
    return load_preset("tiny", overrides)


def test_fake_reasoner_confident_traces_are_more_often_right():
    base = _base()
    comps = __import__("falcon_h1r.inference", fromlist=["generate"]).generate(
        base.model, base.tokenizer, ["Q <think>"] * 200, GEN, seed=3, progress=False)
    traces = ts.from_completions(comps, _problems()[0])
    answered = [t for t in traces if t.answer is not None]
    assert len(answered) >= 0.9 * len(traces) and {t.answer for t in answered} <= {"7", "3", "5"}
    median = np.median([u.score("mean", 3) for u in traces])
    confident = [t for t in traces if t.score("mean", 3) > median]
    unsure = [t for t in traces if t not in confident]  # identity (Trace arrays make == ambiguous)
    assert np.mean([t.correct for t in confident]) > np.mean([t.correct for t in unsure]) + 0.2


# ============================================================================== selection and arithmetic
def test_select_problems_keeps_strictly_mixed_rates_round_robin():
    problems = [{"id": f"{d}-{k}", "domain": d} for d in ("math", "science") for k in range(4)]
    rates = {"math-0": 0.0, "math-1": 0.5, "math-2": 1.0, "math-3": 0.25,
             "science-0": 0.75, "science-1": 0.125, "science-2": 0.0, "science-3": 0.5}
    screen = pd.DataFrame([{"problem_id": p["id"], "domain": p["domain"], "pass_rate": rates[p["id"]]}
                           for p in problems])
    chosen, table = ex.select_problems(screen, problems, max_problems=3)
    assert [p["id"] for p in chosen] == ["math-1", "science-0", "math-3"]  # round-robin over domains
    assert list(table["qualifies"]) == [False, True, False, True, True, True, False, True]
    assert int(table["selected"].sum()) == 3
    assert len(ex.select_problems(screen, problems, max_problems=100)[0]) == 5
    none, _ = ex.select_problems(screen.assign(pass_rate=1.0), problems, 3)
    assert none == []
    with pytest.raises(ValueError, match="empty screening"):
        ex.select_problems(screen.iloc[:0], problems, 3)


def test_screen_from_records_pools_the_bases_and_pool_screens_adds_samples():
    problems = _problems()
    infos = [_base(seed=0).info, _base(seed=1, rates={**RATES, "math-test-5": 0.875}).info]
    screen = ex.screen_from_records(infos, problems)
    row = screen.set_index("problem_id").loc["math-test-5"]
    assert row["n"] == 16 and row["correct"] == 15 and row["pass_rate"] == pytest.approx(15 / 16)  # 8/8 + 7/8
    assert row["pass_rate_base0"] == 1.0 and row["pass_rate_base1"] == 0.875
    chosen, _ = ex.select_problems(screen, problems, 10)
    assert "math-test-5" in [p["id"] for p in chosen] and "math-test-2" not in [p["id"] for p in chosen]
    # a problem a base never recorded is left out; none recorded at all is a clear error
    missing = ex.screen_from_records(infos, problems + [{"id": "math-test-99", "domain": "math"}])
    assert "math-test-99" not in set(missing["problem_id"])
    with pytest.raises(ValueError, match="screen: sample"):
        ex.screen_from_records([{"seed": 0}], problems)
    a = pd.DataFrame({"problem_id": ["p", "q"], "domain": "math", "difficulty": 1, "n": 4, "correct": [4, 0]})
    b = a.assign(correct=[3, 0])
    pooled = ex.pool_screens([a, b]).set_index("problem_id")
    assert pooled.loc["p", "pass_rate"] == pytest.approx(7 / 8) and pooled.loc["q", "pass_rate"] == 0


def _experiment(**kw):
    return parse(ex.DeepConfExperiment, kw, "deepconf_experiments")


def test_k_values_and_recipe_blocks():
    r, e = parse(dc.DeepConfRecipe, {"budget": 64}, "deepconf"), _experiment(budgets=[32, 64])
    assert ex.k_values(r, e) == [1, 2, 4, 8, 16, 32, 64] and e.pool(r) == 64  # default pool: the largest budget
    r, e = parse(dc.DeepConfRecipe, {"budget": 48}, "deepconf"), _experiment(budgets=[16, 48], pool_size=96)
    assert ex.k_values(r, e) == [1, 2, 4, 8, 16, 32, 48] and e.all_budgets(r) == [16, 48]
    for preset in ("tiny", "small", "paper"):
        rec, exp = dx.recipes(load_preset(preset))
        assert exp.pool(rec) >= exp.max_budget(rec) >= rec.n_init
    small_rec, small_exp = dx.recipes(load_preset("small"))
    assert small_exp.max_budget(small_rec) == 512 and small_exp.max_problems >= 100  # the sizes
    e = ex.DeepConfExperiment()
    assert list(e.voting_methods) == list(dc.VOTE_METHODS) and e.n_resamples == 64 and e.screen == "base_record"
    assert _experiment(budgets=[16, 32, 64]).budgets == [16, 32, 64]
    with pytest.raises(RecipeError, match="deepconf_experiments.domains"):
        _experiment(domains=["code"])
    with pytest.raises(RecipeError, match="pool_size: 100 is below the largest budget 512"):
        _experiment(pool_size=100).check(dc.DeepConfRecipe())
    with pytest.raises(RecipeError, match="must be >= deepconf.n_init=16"):
        _experiment(budgets=[8]).check(dc.DeepConfRecipe())
    with pytest.raises(RecipeError, match="must be >= deepconf.n_init=16"):
        _experiment(live_budget=8).check(dc.DeepConfRecipe())
    with pytest.raises(RecipeError, match="pool_size: 100 is below the largest budget 512"):  # checked at load
        dx.recipes(load_preset("small", {"deepconf_experiments.pool_size": 100}))
    with pytest.raises(RecipeError, match="screen_samples"):
        _experiment(screen="sample", screen_samples=1)
    with pytest.raises(RecipeError, match="deepconf_experiments.screen"):
        _experiment(screen="all")
    with pytest.raises(RecipeError, match="voting_methods"):
        _experiment(voting_methods=["majority", "median"])
    with pytest.raises(RecipeError, match="majority included"):
        _experiment(voting_methods=["min_window_weighted"])
    with pytest.raises(RecipeError, match="unknown key deepconf_experiments.pool"):
        _experiment(pool=3)
    with pytest.raises(RecipeError, match="unknown key deepconf.candidates"):  # an experiment size, not a knob
        parse(dc.DeepConfRecipe, {"candidates": 3}, "deepconf")
    with pytest.raises(RecipeError, match="deepconf.keep_rule"):
        parse(dc.DeepConfRecipe, {"keep_rule": "ceil"}, "deepconf")
    with pytest.raises(RecipeError, match="top_logprobs=5"):
        dx.recipes(load_preset("tiny", {"generation.top_logprobs": 5}))
    with pytest.raises(RecipeError, match="temperature is 0"):
        dx.recipes(load_preset("tiny", {"generation.temperature": 0.0}))
    with pytest.raises(ValueError, match="no held-out problems"):
        ex.candidate_problems([{"id": "c", "domain": "code"}], e)


def test_candidates_are_the_first_of_each_voting_domain_domain_by_domain():
    test = [{"id": f"{d}-{k}", "domain": d} for k in range(3) for d in ("science", "code", "math")]
    got = ex.candidate_problems(test, _experiment(candidates=2))
    assert [p["id"] for p in got] == ["math-0", "math-1", "science-0", "science-1"]
    assert len(ex.candidate_problems(test, _experiment(candidates=0))) == 6  # 0: every one


# ============================================================================== live run: stops and tokens
def test_live_sampler_token_bill_and_stops_match_replay_rule():
    base = _base()
    recipe = dc.DeepConfRecipe(**{**METHOD, "budget": 32})
    sampler = ex._LiveSampler(base.model, base.tokenizer, _problems()[0], GEN, seed=11)
    res = dc.run_online(sampler, "low", recipe, batch_size=4, adaptive=False,
                        grade=lambda a: ts.grade_answer(a, _problems()[0]))
    launched = [c for _, comps in sampler.calls for c in comps]
    assert res.traces_used == len(launched) == 32
    assert res.tokens == sum(len(c.token_ids) for c in launched)  # every generated token counts
    assert sampler.calls[0][0] is None and len(sampler.calls[0][1]) == recipe.n_init  # warm-up: no stop
    assert all(thr == res.threshold for thr, _ in sampler.calls[1:])
    assert res.stopped == sum(c.finish_reason == "early_stop" for c in launched) > 0
    agree = ex.stop_agreement(sampler.calls, recipe.window)
    assert agree["checked"] == 32 - recipe.n_init and agree["disagree"] == 0
    assert agree["agree"] + agree["borderline"] == agree["checked"] and agree["stopped"] == res.stopped
    assert res.correct is not None  # graded through ``grade`` (no gold given)
    # a stopped trace is never longer than the window needs, and it carries no answer
    for c in launched:
        if c.finish_reason == "early_stop":
            assert len(c.token_ids) >= recipe.window and dc.trace_from_completion(c).answer is None


def test_stop_agreement_flags_a_wrong_stop():
    conf = np.array([10, 10, 1, 1, 10], np.float32)
    comp = SimpleNamespace(text="", token_ids=[1] * 5, top_logprobs=np.repeat(-conf[:, None], 20, 1),
                           finish_reason="eos")
    # threshold 5, window 2: the rule stops at token 2 (mean(10, 1) = 5.5 is not below; mean(1, 1) at token 3)
    assert dc.first_stop_index(conf, 5.0, 2) == 3
    assert ex.stop_agreement([(5.0, [comp])], 2)["disagree"] == 1  # it ran to EOS: a missed stop
    stopped = SimpleNamespace(text="", token_ids=[1] * 4, top_logprobs=np.repeat(-conf[:4, None], 20, 1),
                              finish_reason="early_stop")
    assert ex.stop_agreement([(5.0, [stopped]), (None, [comp])], 2) == \
        {"checked": 1, "agree": 1, "borderline": 0, "disagree": 0, "stopped": 1}
    short = SimpleNamespace(text="", token_ids=[1], top_logprobs=np.full((1, 20), -0.1), finish_reason="eos")
    assert ex.stop_agreement([(50.0, [short])], 2)["agree"] == 1  # shorter than the window: never stoppable


# ============================================================================== bad input through the evaluator
def test_evaluate_pools_with_empty_unanswered_and_short_traces():
    recipe, experiment = dc.DeepConfRecipe(**METHOD), _experiment(**{**EXPERIMENT, "n_resamples": 4})
    pool = []
    for i in range(32):
        if i % 4 == 0:
            t = dc.Trace(confidences=[], answer=None, correct=False, finish_reason="length", num_tokens=0)
        elif i % 4 == 1:
            t = dc.Trace(confidences=[9.0, 9.0], answer="7", correct=True)  # shorter than the window (3)
        else:
            t = dc.Trace(confidences=np.full(6, 4.0 + i % 3), answer=None, correct=False)  # no answer
        t.problem_id, t.trace_idx = "p", i
        pool.append(t)
    problem = [{"id": "p", "domain": "math", "answer": "7"}]
    out = ex.evaluate_pools({0: pool, 1: pool}, problem, recipe, experiment, progress=False)
    assert set(out["base"]) == {0, 1} and set(out["problem_id"]) == {"p"}
    assert set(out["series"]) >= {"pass@1", "majority", "online_low", "online_high/budget_only", "consensus_only",
                                  "tail_confidence_weighted@10", "tail_confidence_weighted@10/percentile"}
    maj = out[(out["series"] == "majority") & (out["K"] >= 8)]
    assert (maj["acc"] == 1).all()  # the only answer is right, and 8 draws always hold one
    assert out["tokens"].notna().all() and (out["acc"].between(0, 1)).all()
    # no trace has an answer: every method is wrong, none crashes
    for t in pool:
        t.answer, t.correct = None, False
    assert (ex.evaluate_pools({0: pool}, problem, recipe, experiment, progress=False)["acc"] == 0).all()
    with pytest.raises(ValueError, match="fewer than the largest K"):
        ex.evaluate_pools({0: pool[:10]}, problem, recipe, experiment, progress=False)


@pytest.mark.slow
def test_replay_in_worker_processes_equals_one_process():
    """The GPU machine replays with one spawned process per core; the result must not depend on it."""
    import dataclasses

    rng = np.random.default_rng(0)
    problems = [{"id": f"p{i}", "domain": "math", "answer": "7"} for i in range(3)]
    pools = {b: [dc.Trace(confidences=rng.normal(10, 2, 20), answer=str(rng.integers(5, 9)), problem_id=p["id"],
                          trace_idx=j) for p in problems for j in range(32)] for b in (0, 1)}
    for pool in pools.values():
        for t in pool:
            t.correct = t.answer == "7"
    recipe, experiment = dx.recipes(_preset())
    one = ex.evaluate_pools(pools, problems, recipe, experiment, progress=False)
    two = ex.evaluate_pools(pools, problems, recipe, dataclasses.replace(experiment, replay_workers=2), progress=False)
    pd.testing.assert_frame_equal(one, two)


def test_replay_batch_size_checks_consensus_less_often():
    pool = [dc.Trace(confidences=np.full(8, 10.0), answer="1", correct=True, problem_id="p", trace_idx=i)
            for i in range(40)]
    recipe = dc.DeepConfRecipe(window=4, tail_tokens=4, n_init=16, budget=40)
    one = dc.replay_evaluate(pool, "online_low", 40, n_resamples=2, recipe=recipe)
    eight = dc.replay_evaluate(pool, "online_low", 40, n_resamples=2, recipe=recipe, batch_size=8)
    # unanimous warm-up: beta = 1 at the first check, so sequential stops at 16, batches of 8 too
    assert one.traces_mean == 16 == eight.traces_mean
    # warm-up 15 x "1", 1 x "0": beta = 15/16; each later "1" raises it: 19/20 = 0.95 after 4 more traces
    split = [dc.Trace(confidences=np.full(8, 10.0), answer="0" if i == 3 else "1", correct=True,
                      problem_id="p", trace_idx=i) for i in range(40)]
    seq = dc.replay_online(split, "high", recipe, batch_size=1)
    batched = dc.replay_online(split, "high", recipe, batch_size=8)
    assert (seq.traces_used, batched.traces_used) == (20, 24) and seq.stop_reason == batched.stop_reason == "consensus"
    assert batched.tokens - seq.tokens == 4 * 8  # the in-flight traces the batch could not stop
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        dc.replay_evaluate(pool, "online_low", 40, recipe=recipe, batch_size=0)


# ============================================================================== the driver end to end
def test_run_end_to_end_on_the_fake_reasoner(tmp_path, monkeypatch):
    from falcon_h1r.results import SectionWriter

    preset, bases = _preset(), _bases(3)
    writer = SectionWriter("tiny", dx.SECTION, root=tmp_path)
    res = dx.run(preset, bases=bases, writer=writer, progress=False, overhead=True)
    # screening from the bases' records: the "9" problem (never right) and the always-right one do not qualify
    table = res.screening.set_index("problem_id")
    assert not table.loc["math-test-2", "qualifies"] and not table.loc["math-test-5", "qualifies"]
    assert res.info["n_qualifying"] == 4 == res.info["n_problems"] and res.info["base_seeds"] == [0, 1, 2]
    # one pool per base, kept in _work and read back; the bases' pools differ (their own seeds)
    files = sorted((writer.dir / "_work").glob("pools-*/base-*.parquet"))
    assert len(files) == 3
    back = ts.load_traces(files[0])
    assert len(back) == 4 * 32 and all(t.finish_reason != "early_stop" for t in back)
    assert res.info["pool_tokens"] == sum(t.num_tokens for f in files for t in ts.load_traces(f))
    assert [t.num_tokens for t in back] != [t.num_tokens for t in ts.load_traces(files[1])]
    # outcomes: every base and problem, majority / offline at every K, online at the budgets
    o = res.outcomes
    assert set(o["base"]) == {0, 1, 2} and o.groupby(["series", "K"]).size().eq(12).all()
    assert sorted(o[o["series"] == "majority"]["K"].unique()) == [1, 2, 4, 8, 16]
    assert sorted(o[o["series"] == "online_low"]["K"].unique()) == [8, 16]
    curves = dr.curves(res.report()).set_index(["series", "K"])
    low, maj = curves.loc[("online_low", 16)], curves.loc[("majority", 16)]
    assert low["tokens"] < maj["tokens"] and low["token_saving_vs_majority"] > 0  # early stop and consensus save
    assert curves.loc[("online_low/budget_only", 16), "tokens"] >= low["tokens"]  # without the consensus stop
    assert np.isfinite(curves["acc_ci95"]).all()  # three bases: a finite interval everywhere
    # the live runs: early stops where the replay rule says, token bills of the same order as the replay's
    live = res.live
    assert list(live["variant"]) == ["low", "high"] and (live["stop_disagree"] == 0).all()
    assert (live["tokens"] > 0).all() and (live["replay_tokens"] > 0).all()
    # everything the notebook and the claims read
    summary = json.loads((writer.dir / "summary.json").read_text())
    for key in ("trace_tokens_median", "n_problems", "base_seeds", "max_budget", "majority_minus_pass1",
                "majority_minus_pass1_ci95", "deepconf_low_minus_majority_acc_ci95",
                "deepconf_high_minus_majority_acc_ci95", "deepconf_low_token_saving_vs_majority_ci95",
                "deepconf_high_token_saving_vs_majority_ci95", "consensus_stop_token_saving",
                "confidence_overhead_fraction", "voting_methods_acc_spread", "deepconf_low_confidence_stop_token_saving"):
        assert key in summary, key
    assert summary["base_seeds"] == 3 and summary["max_budget"] == 16 and summary["majority_minus_pass1_unit"] == "bases"
    assert summary["n_problems"] == 4 and not summary["majority_minus_pass1_informative"]  # 4 problems < 30
    assert summary["confidence_overhead_fraction"] == res.overhead["overhead_fraction"] > 0
    again = dx.load(writer.dir)
    pd.testing.assert_frame_equal(again.outcomes, res.outcomes)
    assert dx.headline(again) == dx.headline(res)
    assert again.recipe.budget == 16 and again.recipe.window == 3  # render mode uses the run's own blocks
    assert again.experiment.budgets == [8, 16] and again.experiment.n_resamples == 8
    # a second run finds the pools and generates nothing
    monkeypatch.setattr(dx, "generate_pool", lambda *a, **k: pytest.fail("the pools were cached"))
    dx.run(preset, bases=bases, writer=writer, progress=False, overhead=False)
    # records of the earlier, single-pool version: a clear message, not a crash
    info = json.loads((writer.dir / "run_info.json").read_text())
    info.pop("trace_tokens")
    (writer.dir / "run_info.json").write_text(json.dumps(info))
    with pytest.raises(FileNotFoundError, match="earlier version"):
        dx.load(writer.dir)


def test_pools_resume_base_by_base_at_the_time_budget(tmp_path):
    preset, bases = _preset(), _bases(3)
    folder = tmp_path / "sec"
    problems = _problems()[:2]
    recipe, experiment = dx.recipes(preset)
    work = dx.pool_dir(folder, preset, problems, recipe, experiment)
    with pytest.raises(StageIncomplete, match="1 of 3 bases"):
        dx.base_pools(preset, bases, problems, recipe, experiment, work=work, progress=False, budget_s=0)
    assert len(list(work.glob("*.parquet"))) == 1
    with pytest.raises(StageIncomplete, match="2 of 3 bases"):
        dx.base_pools(preset, bases, problems, recipe, experiment, work=work, progress=False, budget_s=0)
    pools, walls = dx.base_pools(preset, bases, problems, recipe, experiment, work=work, progress=False)
    assert sorted(pools) == [0, 1, 2] and list(walls) == ["pool_base2"]  # only the last was generated now


def test_a_pool_made_chunk_by_chunk_equals_the_pool_made_at_once(tmp_path):
    """A deadline already past: one chunk of problems a call, kept; the pieces join into the same pool."""
    import time

    from falcon_h1r.sections.deepconf_experiment import generate_pool

    base, problems = _base(), _problems()[:4]
    kw = dict(seed=5, batch_size=64, progress=False)  # pool 32: 2 problems a chunk, 2 chunks
    whole = generate_pool(base.model, base.tokenizer, problems, GEN, 32, **kw)
    chunks = tmp_path / "pool.chunks"
    with pytest.raises(StageIncomplete, match="1 of 2 chunks"):
        generate_pool(base.model, base.tokenizer, problems, GEN, 32, chunk_dir=chunks, deadline=time.time() - 1, **kw)
    assert len(list(chunks.glob("chunk-*.parquet"))) == 1
    pieces = generate_pool(base.model, base.tokenizer, problems, GEN, 32, chunk_dir=chunks,
                           deadline=time.time() - 1, **kw)
    assert [(t.problem_id, t.answer, t.num_tokens) for t in pieces] == [(t.problem_id, t.answer, t.num_tokens)
                                                                        for t in whole]
    assert all(np.allclose(a.confidences, b.confidences) for a, b in zip(pieces, whole))


def test_pools_of_some_bases_only_one_process_per_base(tmp_path):
    """--base-seed: each process makes its own base's pool; together they are the whole set, reused later."""
    preset, bases = _preset(), _bases(3)
    problems = _problems()[:2]
    recipe, experiment = dx.recipes(preset)
    work = dx.pool_dir(tmp_path / "sec", preset, problems, recipe, experiment)
    pools, walls = dx.base_pools(preset, bases, problems, recipe, experiment, work=work, progress=False,
                                 only_seeds=[1])
    assert list(pools) == [1] and list(walls) == ["pool_base1"] and len(list(work.glob("*.parquet"))) == 1
    dx.base_pools(preset, bases, problems, recipe, experiment, work=work, progress=False, only_seeds=[0, 2])
    pools, walls = dx.base_pools(preset, bases, problems, recipe, experiment, work=work, progress=False)
    assert sorted(pools) == [0, 1, 2] and walls == {}  # all three were there
    with pytest.raises(ValueError, match="pools_only"):
        dx.run(preset, bases=bases, progress=False, overhead=False, only_seeds=[0])


@pytest.mark.parametrize("argv, message", [
    (["--preset", "tiny", "--pools-only", "--base-seed", "7"], "--base-seed [7]"),
    (["--preset", "tiny", "--records", "--budget-s", "5"], "--records takes no"),
    (["--preset", "tiny", "--pools-only", "--parallel", "--base-seed", "0"], "--parallel starts"),
    (["--preset", "tiny"], "one of the arguments"),
    (["--preset", "nope", "--pools-only"], "nope"),
    (["--preset", "tiny", "--pools-only", "--override", "deepconf_experiments.max_problems=0"], "max_problems"),
    (["--preset", "tiny", "--pools-only", "--override", "window"], "expected KEY=VALUE"),
    # the override changes the bases, and --base-seed is checked against the changed list
    (["--preset", "tiny", "--pools-only", "--override", "eval.base_seeds=[3, 4]", "--base-seed", "0"], "[3, 4]"),
])
def test_cli_rejects_bad_input_with_exit_2(argv, message, capsys):
    try:
        code = dx.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_parallel_pools_pass_the_overrides_to_every_child(monkeypatch):
    from falcon_h1r.sections import per_seed

    launched = []
    monkeypatch.setattr(per_seed, "run_per_seed", lambda module, preset, seeds, **k: launched.append(
        (module, preset, list(seeds), k["seed_flag"], k["args"])) or {s: (0, "") for s in seeds})
    over = ["--override", "eval.base_seeds=[0, 1, 2, 3, 4]", "--override", "deepconf_experiments.max_problems=40"]
    assert dx.main(["--preset", "tiny", "--pools-only", "--parallel", "--budget-s", "60", *over]) == 0
    assert launched == [("falcon_h1r.sections.deepconf", "tiny", [0, 1, 2, 3, 4], "--base-seed",
                         ["--pools-only", "--budget-s", "60.0", *over])]


def test_screen_by_sampling_each_base(tmp_path):
    res = dx.run(_preset(screen="sample", screen_samples=8), bases=_bases(2), progress=False, overhead=False)
    assert (res.screening["n"] == 16).all()  # 8 fresh samples from each of the two bases
    assert not res.screening.set_index("problem_id").loc["math-test-2", "qualifies"]  # "9" is never sampled


def test_run_stops_with_a_clear_message_when_nothing_qualifies(tmp_path):
    with pytest.raises(RuntimeError, match="nothing to vote on"):
        dx.run(_preset(), bases=_bases(2, rates={}), progress=False, overhead=False)
    with pytest.raises(FileNotFoundError, match="no committed DeepConf records"):
        dx.load(tmp_path)


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_overhead_probe_runs_on_both_engines(engine):
    """The bench's probe on a tiny random Falcon-H1 (timings are not checked, the bookkeeping is)."""
    from falcon_h1r.models import build_model

    model = build_model(load_preset("tiny").model, 64, seed=0).eval()
    with torch.no_grad(), torch_threads(1, "cpu"):
        rec = dc.measure_confidence_overhead(model, vocab_size=64, batch_size=4, new_tokens=6, window=3,
                                             prompt_len=5, repeats=1, engine=engine)
    assert rec["engine"] == engine and rec["step_s_without"] > 0 and rec["step_s_with"] > 0
    assert np.isfinite(rec["overhead_fraction"]) and rec["overhead_fraction_isolated"] > 0
    assert rec["controller_form"] == "torch ops"  # on the CPU; CUDA with Triton: "fused Triton kernel"
    if engine == "hf":
        assert rec["controller_in_loop_s"] > 0
        assert rec["overhead_fraction"] == pytest.approx(rec["controller_in_loop_s"] / rec["step_s_without"])
    else:  # the fast engine also times the controller's torch form, in the same runs
        assert len(rec["step_s_runs_with_torch_form"]) == 1 and np.isfinite(rec["overhead_fraction_torch_form"])
        assert rec["overhead_fraction"] == rec["overhead_fraction_repeats"][0]  # one repeat: its paired fraction
        assert rec["overhead_fraction_min_diff"] == pytest.approx(
            (rec["step_s_with"] - rec["step_s_without"]) / rec["step_s_without"])


def test_paired_overhead_is_the_median_of_per_repeat_pairs_and_old_records_are_read_the_same_way():
    """The H200 record that read -2.6 % by the fastest runs: one repeat with the controller was faster than every
    repeat without it. Paired repeat by repeat, the median is +1.0 % (and the torch form's +2.3 %)."""
    without = [1.7632, 1.7656, 1.7753, 1.7692, 1.7717, 1.7618, 1.7834]
    with_ = [1.7833, 1.7841, 1.7860, 1.7839, 1.7162, 1.7833, 1.8015]
    torch_form = [1.8065, 1.8383, 1.8101, 1.8108, 1.7890, 1.8202, 1.8045]
    old = {"engine": "fast", "overhead_fraction": (min(with_) - min(without)) / min(without),
           "overhead_fraction_loop_diff": (min(with_) - min(without)) / min(without),
           "step_s_runs_without": without, "step_s_runs_with": with_, "step_s_runs_with_torch_form": torch_form}
    assert old["overhead_fraction"] < -0.02
    rec = dc.overhead_record(old)
    pairs = sorted((w - o) / o for w, o in zip(with_, without))
    assert rec["overhead_fraction"] == pytest.approx(pairs[3]) == pytest.approx(0.0101, abs=1e-4)
    assert rec["overhead_fraction_range"] == pytest.approx([pairs[0], pairs[-1]])
    assert rec["overhead_fraction_torch_form"] == pytest.approx(0.0235, abs=1e-3)
    assert rec["overhead_fraction_min_diff"] == old["overhead_fraction"]  # kept, under its own name
    assert dc.overhead_record(rec) == rec  # reading a record twice changes nothing
    # an even number of repeats: the middle two averaged; transformers' loop records are left as they are
    assert dc.paired_overhead({"step_s_runs_without": [1.0, 1.0], "step_s_runs_with": [1.01, 1.03]}
                              )["overhead_fraction"] == pytest.approx(0.02)
    hf = {"engine": "hf", "overhead_fraction": 0.05, "step_s_runs_without": [1.0], "step_s_runs_with": [2.0]}
    assert dc.overhead_record(hf) == hf


def test_the_gpu_script_carries_pools_both_ways_and_counts_the_device_commands_start(tmp_path):
    """scripts/gpu_deepconf.sh with its Python stubbed (each call only logged): carried pool parts are unpacked
    into the section's _work and come back as parts; the budget each step gets counts from the device command's
    start (FALCON_H1R_T0, set by the prelude) unless that start is older than the budget (an earlier command's);
    KEY=VALUE arguments reach every step as --override; bad usage and parts that do not unpack stop it with exit 2
    and one line."""
    import os
    import subprocess
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    log = tmp_path / "calls.log"
    fake = tmp_path / "fakepy"
    fake.write_text(f'#!/bin/bash\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    work = tmp_path / "pools" / "_work" / "pools-abc"
    work.mkdir(parents=True)
    (work / "base-0-x.parquet").write_bytes(os.urandom(3000))
    carry = tmp_path / "repo" / ".carry"
    carry.mkdir(parents=True)
    subprocess.run(f"tar -czf - -C {tmp_path / 'pools'} _work | split -b 1000 - {carry}/deepconf05_pools_tiny.tgz.part",
                   shell=True, check=True)

    def run(*args, t0=None, out="out"):
        env = {**os.environ, "PYTHON": str(fake), "OUT": str(tmp_path / out),
               "FALCON_H1R_RESULTS": str(tmp_path / "res"), "DEEPCONF_BUDGET_S": "500", "DEEPCONF_RECORDS_S": "10"}
        env.pop("FALCON_H1R_T0", None)
        if t0 is not None:
            env["FALCON_H1R_T0"] = str(t0)
        return subprocess.run(["bash", str(root / "scripts" / "gpu_deepconf.sh"), *args], cwd=tmp_path / "repo",
                              env=env, capture_output=True, text=True, timeout=60)

    def budgets():
        return [int(line.split("--budget-s ")[1].split()[0]) for line in log.read_text().splitlines()
                if "--budget-s" in line]

    proc = run("tiny", t0=int(time.time()) - 5000)  # a stale start: this command's own start counts
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "res" / "tiny" / "05_deepconf" / "_work" / "pools-abc" / "base-0-x.parquet").read_bytes() == (
        work / "base-0-x.parquet").read_bytes()
    parts = sorted((tmp_path / "out").glob("deepconf05_pools_tiny.tgz.part*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    assert budgets()[0] >= 500 - 120 - 2  # the bases' budget: all of it but the 120 s kept for what follows
    log.unlink()
    assert run("tiny", t0=int(time.time()) - 100, out="out2").returncode == 0
    assert 500 - 100 - 120 - 3 <= budgets()[0] <= 500 - 100 - 120  # the wheel install's 100 s are counted
    log.unlink()
    assert run("tiny", "eval.base_seeds=[0, 1, 2, 3, 4]", out="out3").returncode == 0  # overrides reach every step
    calls = log.read_text().splitlines()
    steps = ["sections.bases", "--pools-only", "--records"]
    assert all(any(step in c and "--override eval.base_seeds=[0, 1, 2, 3, 4]" in c for c in calls) for step in steps)
    for args, message in {(): "usage", ("huge",): "tiny, small or paper", ("tiny", "seeds"): "not KEY=VALUE"}.items():
        proc = run(*args)
        assert proc.returncode == 2 and message in proc.stderr
    (carry / "deepconf05_pools_tiny.tgz.partaa").write_bytes(b"not a tarball")
    proc = run("tiny")
    assert proc.returncode == 2 and "did not unpack" in proc.stderr
