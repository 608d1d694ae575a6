"""The §5 experiment around DeepConf: its recipe (the ``deepconf_experiments:`` block) and its steps.

Steps, each a plain function so that tests and other sections can call them alone (the orchestration at
a preset is :func:`falcon_h1r.sections.deepconf.run`):

1. Screening. Voting can only change the outcome on problems a model gets right *some* of the time (always
   right: every method is right; never right: no vote can pick the answer), so :func:`select_problems` keeps
   those with 0 < pass rate < 1, as the DeepConf paper's hard benchmarks are. The pass rate is pooled over the
   preset's independently trained bases, so every base is scored on the same problems (paired). By default
   (``screen: base_record``) it costs nothing: each base already measured its sampled pass@1 per held-out
   problem at the paper's settings (:func:`screen_from_records`); ``screen: sample`` samples afresh
   (:func:`screen_problems`).
2. :func:`generate_pool`: a pool of complete traces per kept problem and base (the preset's temperature and
   top-p, raw top-20 log-probs), graded with the package's one answer equivalence
   (:func:`falcon_h1r.tracestore.from_completions`), in batches of whole problems of similar difficulty.
3. :func:`evaluate_pools`: the DeepConf paper's protocol on every (base, problem) pool, every number a mean
   over ``n_resamples`` (64) draws of K traces (:func:`falcon_h1r.deepconf.evaluate_problem`, vectorised over
   draws): pass@1, majority@K, each weighted vote, offline DeepConf for each score at eta 10 and 90 under both
   keep rules, online DeepConf-low/-high with and without the consensus stop, and the consensus stop alone.
4. :func:`live_online`: *live* online runs on a few problems of the first base
   (:func:`falcon_h1r.deepconf.run_online`, the :class:`~falcon_h1r.deepconf.EarlyStopController` inside the
   decode loop), checked trace by trace against the replay's stop rule (:func:`stop_agreement`) and compared
   with the replay's token bill on the same problem.

Code problems (graded by tests) are left out: DeepConf votes on final answers.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from falcon_h1r.config import GenerationConfig, RecipeError
from falcon_h1r.deepconf import (
    N_RESAMPLES,
    VOTE_METHODS,
    DeepConfRecipe,
    EarlyStopController,
    Trace,
    draw_orders,
    evaluate_problem,
    first_stop_index,
    group_by_problem,
    online_replay,
    pool_arrays,
    run_online,
    standard_series,
    token_confidence,
    window_means,
)
from falcon_h1r.sections.common import first_per_domain, model_device, torch_threads
from falcon_h1r.tracestore import answer_classes, from_completions, grade_answer

VOTE_DOMAINS = ("math", "science")  # task domains with final answers to vote on (code is graded by tests)
SCREENS = ("base_record", "sample", "none")


# ============================================================================== recipe
@dataclass
class DeepConfExperiment:
    """The ``deepconf_experiments`` block of a preset: what the §5 experiment runs DeepConf on and how many
    traces it spends (the method's own knobs are :class:`falcon_h1r.deepconf.DeepConfRecipe`, the
    ``deepconf:`` block). Defaults are the DeepConf paper's where it has one.

    Fields:
        budgets: the online budgets B swept (each >= ``deepconf.n_init``; ``deepconf.budget`` is always
            added). DeepConf Table 12: 32, 64, 128, 256, 512.
        voting_methods: the votes compared (some of ``VOTE_METHODS``). DeepConf §3.2 / Table 1: all five.
        n_resamples: draws of K traces from each pool that every number is averaged over. DeepConf §4: 64.
        domains: task domains whose held-out problems are voted on (some of ``VOTE_DOMAINS``: code answers
            are graded by tests, not voted on). The Falcon-H1R paper's Table 7: math (AIME, HMMT, AMO).
        screen: how problems are screened for 0 < pass rate < 1, pooled over the bases. ``base_record``: the
            sampled pass@1 each base recorded per held-out problem when it was trained (T 0.6, top-p 0.95,
            ``eval.n_samples`` samples, the first ``eval.problems_per_domain`` test problems of each domain);
            ``sample``: ``screen_samples`` fresh samples per candidate and base; ``none``: the first
            ``max_problems`` candidates, unscreened (a benchmark run whole).
        candidates: problems considered per domain (0: all the screen has).
        screen_samples: samples per candidate and base for ``screen: sample`` (>= 2: one sample cannot show
            0 < rate < 1).
        max_problems: problems kept (round-robin over domains). The DeepConf paper's benchmarks have 30.
        pool_size: complete traces per problem and base (0: the largest budget; >= it, since a resampling
            draws K traces without replacement). The DeepConf paper: 4096 for K <= 512. At K = pool size every
            offline resampling holds the same traces (only the online order differs): the interval then comes
            from the bases and problems, which is what it is meant to cover.
        pool_batch_size: rows per decode batch while generating pools (0: ``generation.batch_size``). Whole
            problems of similar difficulty share a batch, so a batch ends when its longest trace does.
        live_problems: problems of the live online runs (first base; per variant; 0: none).
        live_budget: budget of each live run (0: ``deepconf.budget``).
        replay_workers: processes that replay the pools (0: one per CPU core, at most 16).
        keep_token_ids: store the token ids in the pools (the text can be decoded back).
        allow_unqualified: when no screened problem qualifies, run on the first screened ones anyway.
            Every vote then agrees with pass@1: only for smoke tests of the pipeline; the run's info and
            the notebook say so.
    """

    budgets: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    voting_methods: list[str] = field(default_factory=lambda: list(VOTE_METHODS))
    n_resamples: int = N_RESAMPLES
    domains: list[str] = field(default_factory=lambda: list(VOTE_DOMAINS))
    screen: str = "base_record"
    candidates: int = 0
    screen_samples: int = 8
    max_problems: int = 30
    pool_size: int = 0
    pool_batch_size: int = 0
    live_problems: int = 3
    live_budget: int = 0
    replay_workers: int = 0
    keep_token_ids: bool = False
    allow_unqualified: bool = False

    def __post_init__(self) -> None:
        if not self.budgets or min(self.budgets) < 1:
            raise RecipeError(f"deepconf_experiments.budgets: need budgets >= 1, got {self.budgets}")
        bad = [m for m in self.voting_methods if m not in VOTE_METHODS]
        if bad or "majority" not in self.voting_methods:
            raise RecipeError(f"deepconf_experiments.voting_methods: {bad or self.voting_methods} not accepted; use "
                              f"some of {list(VOTE_METHODS)}, majority included (every comparison is against it)")
        bad = [d for d in self.domains if d not in VOTE_DOMAINS]
        if bad or not self.domains:
            raise RecipeError(f"deepconf_experiments.domains: {bad or self.domains} not accepted; use a non-empty "
                              f"subset of {list(VOTE_DOMAINS)} (code answers are graded by tests, not voted on)")
        if self.screen not in SCREENS:
            raise RecipeError(f"deepconf_experiments.screen: {self.screen!r} not accepted; use one of {list(SCREENS)}")
        if self.n_resamples < 1:
            raise RecipeError(f"deepconf_experiments.n_resamples: must be >= 1, got {self.n_resamples}")
        for name in ("candidates", "live_problems", "live_budget", "pool_size", "pool_batch_size", "replay_workers"):
            if getattr(self, name) < 0:
                raise RecipeError(f"deepconf_experiments.{name}: must be >= 0, got {getattr(self, name)}")
        if self.screen == "sample" and self.screen_samples < 2:
            raise RecipeError(f"deepconf_experiments.screen_samples: must be >= 2 with screen: sample (one sample "
                              f"cannot show 0 < rate < 1); got {self.screen_samples}")
        if self.max_problems < 1:
            raise RecipeError(f"deepconf_experiments.max_problems: must be >= 1, got {self.max_problems}")

    def check(self, recipe: DeepConfRecipe) -> None:
        """What needs both blocks: every budget covers the warm-up, and the pool holds the largest one."""
        for b in [*self.budgets, self.live_budget or recipe.budget]:
            if b < recipe.n_init:
                raise RecipeError(f"deepconf_experiments: every budget (budgets, live_budget) must be >= "
                                  f"deepconf.n_init={recipe.n_init}, got {b}")
        if self.pool_size and self.pool_size < self.max_budget(recipe):
            raise RecipeError(f"deepconf_experiments.pool_size: {self.pool_size} is below the largest budget "
                              f"{self.max_budget(recipe)}; a resampling draws K traces from the pool without "
                              "replacement")

    def max_budget(self, recipe: DeepConfRecipe) -> int:
        return max([recipe.budget, *self.budgets])

    def pool(self, recipe: DeepConfRecipe) -> int:
        """Traces per problem and base in the pool."""
        return self.pool_size or self.max_budget(recipe)

    def all_budgets(self, recipe: DeepConfRecipe) -> list[int]:
        return sorted({*self.budgets, recipe.budget})


def k_values(recipe: DeepConfRecipe, experiment: DeepConfExperiment) -> list[int]:
    """K for the offline curves: powers of two up to the largest budget, plus every budget."""
    top = experiment.max_budget(recipe)
    ks = {1 << i for i in range(int(math.log2(top)) + 1)} | set(experiment.budgets) | {recipe.budget}
    return sorted(k for k in ks if k <= experiment.pool(recipe))


# ============================================================================== 1. screening
def candidate_problems(problems: Sequence[dict[str, Any]], experiment: DeepConfExperiment, *,
                       benchmarks: Sequence[str] = (), benchmark_dir: str | None = None) -> list[dict[str, Any]]:
    """The first ``candidates`` of ``problems`` (held-out ones) in each voting domain, domain by domain
    (:func:`falcon_h1r.sections.common.first_per_domain`); for a loaded checkpoint without synthetic sets
    (paper preset), the ``benchmarks`` of those domains, read from ``benchmark_dir``
    (:func:`falcon_h1r.benchmarks.load_benchmark`, nothing is downloaded)."""
    per_domain = experiment.candidates or len(problems)
    out = [p for domain in experiment.domains for p in first_per_domain(problems, per_domain, [domain])]
    if not out and benchmarks:
        from falcon_h1r.benchmarks import BENCHMARK_DOMAIN, load_benchmark

        for name in benchmarks:
            if BENCHMARK_DOMAIN.get(name) in experiment.domains:
                rows = load_benchmark(name, benchmark_dir)
                out += rows[:experiment.candidates] if experiment.candidates else rows
    if not out:
        raise ValueError(f"no held-out problems in domains {experiment.domains}; the preset's tasks.domains (or, "
                         "for a checkpoint, eval.benchmarks) must include math or science problems")
    return out


def screen_from_records(infos: Sequence[dict[str, Any]], problems: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Pass rate of each problem pooled over the bases' recorded samples (``info["sampled"]``: the sampled
    pass@1 per problem each base measured when it was trained), one column per base too. A problem missing
    from a base's record is left out (it was not among the problems the bases were evaluated on)."""
    rows = []
    for p in problems:
        rates, ns = [], []
        for info in infos:
            sampled = info.get("sampled") or {}
            per = sampled.get("per_problem") or {}
            if p["id"] not in per:
                break
            rates.append(float(per[p["id"]]))
            ns.append(int(sampled.get("n_samples", 0)))
        else:
            n = sum(ns)
            correct = sum(r * k for r, k in zip(rates, ns))
            rows.append({"problem_id": p["id"], "domain": p["domain"], "difficulty": p.get("difficulty", 0), "n": n,
                         "correct": int(round(correct)), "pass_rate": correct / n if n else math.nan,
                         **{f"pass_rate_base{info.get('seed', i)}": r for i, (info, r) in enumerate(zip(infos, rates))}})
    if not rows:
        raise ValueError("no candidate problem appears in the bases' recorded pass rates (info['sampled']"
                         "['per_problem']); use deepconf_experiments.screen: sample, or rebuild the bases")
    return pd.DataFrame(rows)


def _generate(model: Any, *args: Any, **kw: Any) -> list[Any]:
    """The engine ``generation.engine`` asks for (:func:`falcon_h1r.inference.generate`: ``auto`` picks the
    static-cache engine on GPU and transformers' loop on CPU), with one decode thread on CPU."""
    from falcon_h1r.inference import generate

    with torch_threads(1, model_device(model)):
        return generate(model, *args, **kw)


def _prompts(tokenizer: Any, problems: Sequence[dict[str, Any]], n: int) -> list[str]:
    return [tokenizer.prompt(p["question"]) for p in problems for _ in range(n)]


def _by_problem(completions: Sequence[Any], problems: Sequence[dict[str, Any]], n: int) -> list[list[Any]]:
    if len(completions) != len(problems) * n:
        raise ValueError(f"expected {len(problems) * n} completions, got {len(completions)}")
    return [list(completions[i * n:(i + 1) * n]) for i in range(len(problems))]


def screen_problems(model: Any, tokenizer: Any, problems: Sequence[dict[str, Any]], gen: GenerationConfig,
                    n_samples: int, *, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Pass rate of each problem from ``n_samples`` fresh sampled answers of one model (graded as the pool
    will be)."""
    comps = _generate(model, tokenizer, _prompts(tokenizer, problems, n_samples), gen, seed=seed, progress=progress,
                      desc="screen pass rates")
    rows = []
    for p, group in zip(problems, _by_problem(comps, problems, n_samples)):
        traces = from_completions(group, p)
        correct = sum(bool(t.correct) for t in traces)
        rows.append({"problem_id": p["id"], "domain": p["domain"], "difficulty": p.get("difficulty", 0),
                     "n": n_samples, "correct": correct, "pass_rate": correct / n_samples,
                     "mean_tokens": float(np.mean([t.num_tokens for t in traces]))})
    return pd.DataFrame(rows)


def pool_screens(screens: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per-base screening tables (:func:`screen_problems`) -> one table pooled over the bases."""
    if len(screens) == 1:
        return screens[0]
    cat = pd.concat([s.assign(base=i) for i, s in enumerate(screens)])
    out = cat.groupby(["problem_id", "domain", "difficulty"], sort=False).agg(n=("n", "sum"),
                                                                               correct=("correct", "sum"))
    out = out.reset_index()
    out["pass_rate"] = out["correct"] / out["n"]
    return out


def select_problems(screen: pd.DataFrame, problems: Sequence[dict[str, Any]],
                    max_problems: int) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Problems with 0 < pass rate < 1, at most ``max_problems``, taken round-robin over domains (so a
    domain with many qualifiers cannot crowd out the other). Returns them and ``screen`` with a
    ``qualifies`` and a ``selected`` column."""
    if screen.empty:
        raise ValueError("empty screening table: no problem was screened")
    screen = screen.copy()
    screen["qualifies"] = (screen["pass_rate"] > 0) & (screen["pass_rate"] < 1)
    by_id = {p["id"]: p for p in problems}
    queues = [list(g["problem_id"]) for _, g in screen[screen["qualifies"]].groupby("domain", sort=True)]
    order = [pid for group in itertools.zip_longest(*queues) for pid in group if pid is not None]
    chosen = order[:max_problems]
    screen["selected"] = screen["problem_id"].isin(chosen)
    return [by_id[pid] for pid in chosen], screen


# ============================================================================== 2. pool
def generate_pool(model: Any, tokenizer: Any, problems: Sequence[dict[str, Any]], gen: GenerationConfig,
                  pool_size: int, *, seed: int = 0, batch_size: int = 0, progress: bool = True,
                  keep_token_ids: bool = False, chunk_dir: Path | None = None,
                  deadline: float | None = None) -> list[Trace]:
    """``pool_size`` complete (never early-stopped) graded traces per problem, in the problems' order.

    Problems go to the engine in chunks of whole problems, ordered by difficulty level (trace length grows
    with it), ``batch_size`` rows per decode batch (0: ``gen.batch_size``): a batch runs until its longest trace
    ends, so similar lengths in one batch waste fewer steps. Chunk ``c`` is seeded ``seed * 1000 + c``, so a pool
    made in pieces is the pool made at once: with ``chunk_dir`` each finished chunk is kept there (and read back
    on a rerun), and with ``deadline`` (a ``time.time()``) the run stops after the chunk that passes it (one
    chunk a call at least) and raises :class:`~falcon_h1r.sections.common.StageIncomplete` (call again).
    """
    from tqdm.auto import tqdm

    from falcon_h1r.sections.common import StageIncomplete
    from falcon_h1r.tracestore import load_traces, save_traces

    batch = batch_size or gen.batch_size
    cfg = replace(gen, batch_size=batch)
    per_chunk = max(1, batch // pool_size)
    order = sorted(range(len(problems)), key=lambda i: (problems[i].get("difficulty", 0), i))
    traces: dict[int, list[Trace]] = {}
    chunks = [order[i:i + per_chunk] for i in range(0, len(order), per_chunk)]
    bar = tqdm(chunks, desc=f"trace pool ({pool_size} per problem)", disable=not progress, leave=False)
    made_here = 0
    for c, idx in enumerate(bar):
        chunk = [problems[i] for i in idx]
        kept = None if chunk_dir is None else Path(chunk_dir) / f"chunk-{c:04d}.parquet"
        if kept is not None and kept.exists():
            groups = group_by_problem(load_traces(kept))
            for i, p in zip(idx, chunk):
                traces[i] = groups[p["id"]]
            continue
        if deadline is not None and made_here and time.time() > deadline:  # one chunk a call at least
            raise StageIncomplete(f"trace pool: {c} of {len(chunks)} chunks done at the time budget (kept in "
                                  f"{chunk_dir}); run again to continue")
        comps = _generate(model, tokenizer, _prompts(tokenizer, chunk, pool_size), cfg, seed=seed * 1000 + c,
                          progress=False)
        new = []
        for i, p, group in zip(idx, chunk, _by_problem(comps, chunk, pool_size)):
            ts = from_completions(group, p)
            for t in ts:
                t.text = None  # the store keeps token ids at most (decodable), not text
                if not keep_token_ids:
                    t.token_ids = None
            traces[i] = ts
            new += ts
        if kept is not None:
            save_traces(new, kept, with_token_ids=keep_token_ids)
        made_here += 1
    bar.close()
    return [t for i in range(len(problems)) for t in traces[i]]


def pool_table(pools: dict[int, Sequence[Trace]], problems: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per base and problem: traces, accuracy, answered share, tokens, length-capped share, distinct answers
    (classes of equivalent answers)."""
    by_id = {p["id"]: p for p in problems}
    rows = []
    for seed, pool in pools.items():
        for pid, traces in group_by_problem(pool).items():
            classes = answer_classes(by_id.get(pid))
            tokens = np.array([t.num_tokens for t in traces])
            rows.append({"base": seed, "problem_id": pid, "traces": len(traces),
                         "pass_rate": float(np.mean([bool(t.correct) for t in traces])),
                         "answered": float(np.mean([t.answer is not None for t in traces])),
                         "mean_tokens": float(tokens.mean()), "median_tokens": float(np.median(tokens)),
                         "length_capped": float(np.mean([t.finish_reason == "length" for t in traces])),
                         "distinct_answers": len({classes(t.answer) for t in traces} - {None})})
    return pd.DataFrame(rows)


# ============================================================================== 3. replay evaluation
def _evaluate_one(job: tuple[Any, ...]) -> list[dict[str, Any]]:
    """One (base, problem): its pool as arrays, its draws and every series (runs in a worker process)."""
    seed, base_index, problem_index, base, problem, traces, recipe, series, n_resamples, ks, budgets = job
    arr = pool_arrays(traces, answer_classes(problem), window=recipe.window, tail_tokens=recipe.tail_tokens)
    orders = draw_orders(arr.n, n_resamples, (seed, base_index, problem_index))
    rows = evaluate_problem(arr, orders, recipe, series, ks=ks, budgets=budgets)
    return [{"base": base, "problem_id": problem["id"], **r} for r in rows]


def replay_workers(experiment: DeepConfExperiment) -> int:
    return experiment.replay_workers or max(1, min(16, os.cpu_count() or 1))


def evaluate_pools(pools: dict[int, Sequence[Trace]], problems: Sequence[dict[str, Any]], recipe: DeepConfRecipe,
                   experiment: DeepConfExperiment, *, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Every series of :func:`falcon_h1r.deepconf.standard_series` at every K (offline) and budget (online) on
    each base's pool of each problem: one row per (base, problem, series, K) with the accuracy, generated
    tokens, launched traces, voters and stopped traces, each the mean over ``n_resamples`` draws (draw seed:
    ``(seed, base index, problem index)``). Online runs check consensus after every trace (the paper's
    sequential protocol). Work is spread over :func:`replay_workers` processes."""
    from tqdm.auto import tqdm

    series = standard_series(recipe, experiment.voting_methods)
    ks = k_values(recipe, experiment)
    budgets = experiment.all_budgets(recipe)
    jobs = []
    for b, (base, pool) in enumerate(pools.items()):
        groups = group_by_problem(pool)
        for i, p in enumerate(problems):
            traces = groups.get(p["id"], [])
            if len(traces) < max([*ks, *budgets]):
                raise ValueError(f"base {base}: problem {p['id']} has {len(traces)} pooled traces, fewer than the "
                                 f"largest K / budget {max([*ks, *budgets])}")
            jobs.append((seed, b, i, base, p, traces, recipe, series, experiment.n_resamples, ks, budgets))
    workers = min(replay_workers(experiment), len(jobs))
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc=f"replay ({experiment.n_resamples} draws each)", disable=not progress,
               leave=False)
    if workers <= 1:
        for job in jobs:
            rows += _evaluate_one(job)
            bar.update()
    else:  # spawn: the parent may hold a CUDA context, which a forked child must not inherit
        with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            for out in ex.map(_evaluate_one, jobs, chunksize=max(1, len(jobs) // (4 * workers))):
                rows += out
                bar.update()
    bar.close()
    return pd.DataFrame(rows)


# ============================================================================== 4. live online run
class _LiveSampler:
    """``sample_fn`` for :func:`run_online`: fresh seeds per call, and a log of what each call returned
    and at which threshold, so each trace's live stop can be checked against the replay's rule."""

    def __init__(self, model: Any, tokenizer: Any, problem: dict[str, Any], gen: GenerationConfig, seed: int):
        self.model, self.tokenizer, self.gen = model, tokenizer, gen
        self.prompt = tokenizer.prompt(problem["question"])
        self.seeds = itertools.count(seed)
        self.calls: list[tuple[float | None, list[Any]]] = []

    def __call__(self, n: int, early_stop: EarlyStopController | None) -> list[Any]:
        comps = _generate(self.model, self.tokenizer, [self.prompt] * n, self.gen, seed=next(self.seeds),
                          early_stop=early_stop, progress=False)
        self.calls.append((None if early_stop is None else early_stop.threshold, comps))
        return comps


def stop_agreement(calls: Sequence[tuple[float | None, Sequence[Any]]], window: int,
                   tol: float = 1e-4) -> dict[str, int]:
    """For every trace generated under a threshold: did the live controller stop exactly where the
    replay rule (:func:`first_stop_index` on its stored confidences) would? Disagreements closer than
    ``tol`` to the threshold (float32 vs float64 rounding) are counted apart, as ``borderline``."""
    out = {"checked": 0, "agree": 0, "borderline": 0, "disagree": 0, "stopped": 0}
    for threshold, comps in calls:
        if threshold is None:
            continue
        for c in comps:
            n = len(c.token_ids)
            conf = token_confidence(c.top_logprobs) if n else np.zeros(0, np.float32)
            out["checked"] += 1
            out["stopped"] += c.finish_reason == "early_stop"
            # a stopped trace's last token is the one whose window crossed the threshold
            replay_stop = first_stop_index(conf, threshold, window)
            live_stop = n - 1 if c.finish_reason == "early_stop" else None
            if replay_stop == live_stop:
                out["agree"] += 1
            else:
                wm = window_means(conf, window)
                near = wm.size and float(np.min(np.abs(wm - threshold))) < tol
                out["borderline" if near else "disagree"] += 1
    return out


def live_online(model: Any, tokenizer: Any, problems: Sequence[dict[str, Any]], pool: Sequence[Trace],
                gen: GenerationConfig, recipe: DeepConfRecipe, *, budget: int, n_resamples: int = N_RESAMPLES,
                seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """One live online DeepConf run per variant and problem (``budget``, batches of ``online_batch_size``),
    beside the replay of the same problem's pool at the same budget and batch size (mean over
    ``n_resamples`` draws): tokens, traces, accuracy, and the stop-rule check."""
    from tqdm.auto import tqdm

    groups = group_by_problem(pool)
    rows = []
    jobs = [(v, p) for v in ("low", "high") for p in problems]
    for j, (variant, problem) in enumerate(tqdm(jobs, desc="live online DeepConf", disable=not progress,
                                                leave=False)):
        sampler = _LiveSampler(model, tokenizer, problem, gen, seed=seed * 1_000_003 + 7919 * j)
        t0 = time.perf_counter()
        res = run_online(sampler, variant, recipe, budget=budget, problem_id=problem["id"],
                         classes=answer_classes(problem), grade=lambda a, p=problem: grade_answer(a, p))
        wall = time.perf_counter() - t0
        agreement = stop_agreement(sampler.calls, recipe.window)
        row = {"problem_id": problem["id"], "variant": variant, "budget": budget,
               "batch_size": recipe.online_batch_size, "threshold": res.threshold, "traces": res.traces_used,
               "tokens": res.tokens, "stopped": res.stopped, "voters": res.voters, "stop_reason": res.stop_reason,
               "answer": res.answer, "correct": bool(res.correct), "share": res.share, "wall_s": wall,
               **{f"stop_{k}": v for k, v in agreement.items()}}
        traces = groups.get(problem["id"], [])
        if len(traces) >= budget:
            arr = pool_arrays(traces, answer_classes(problem), window=recipe.window, tail_tokens=recipe.tail_tokens)
            rep = online_replay(arr, draw_orders(arr.n, n_resamples, (seed, j))[:, :budget], recipe, variant,
                                batch_size=recipe.online_batch_size)[budget]
            row.update(replay_tokens=float(rep.tokens.mean()), replay_tokens_std=float(rep.tokens.std()),
                       replay_traces=float(rep.launched.mean()), replay_acc=float(rep.correct.mean()),
                       live_tokens_per_trace=res.tokens / res.traces_used,
                       replay_tokens_per_trace=float(rep.tokens.sum() / rep.launched.sum()),
                       pool_tokens_per_trace=float(arr.tokens.mean()))
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["VOTE_DOMAINS", "SCREENS", "DeepConfExperiment", "k_values", "candidate_problems", "screen_from_records",
           "screen_problems", "pool_screens", "select_problems", "generate_pool", "pool_table", "evaluate_pools",
           "replay_workers", "stop_agreement", "live_online"]
