"""The §5 experiment around DeepConf: its recipe (the ``deepconf_experiments:`` block) and its steps.

Steps, each a plain function so that tests and other sections can call them alone (the orchestration at
a preset is :func:`falcon_h1r.sections.deepconf.run`):

1. :func:`screen_problems`: sample a few answers per held-out math/science problem and estimate its
   pass rate. Voting can only change the outcome on problems the model gets right *some* of the time
   (always right: every method is right; never right: no vote can pick the answer), so
   :func:`select_problems` keeps those with 0 < rate < 1, as the DeepConf paper's hard benchmarks are.
2. :func:`generate_pool`: a pool of complete traces per kept problem (the preset's temperature and
   top-p, raw top-20 log-probs), graded (:func:`falcon_h1r.tracestore.from_completions`).
3. :func:`evaluate_pool`: the DeepConf paper's protocol (:func:`falcon_h1r.deepconf.replay_evaluate`), every
   number a mean over ``n_resamples`` (64) draws of K traces from the pool: pass@1, majority@K, offline
   DeepConf for each trace score at eta = 10 and 90 %, online DeepConf-low/high replayed (truncation plus
   the tau consensus stop); :func:`savings_table` sets online DeepConf against majority voting.
4. :func:`live_online`: one *live* online run per variant on a few problems
   (:func:`falcon_h1r.deepconf.run_online`, the :class:`~falcon_h1r.deepconf.EarlyStopController` inside the
   generation loop), checked trace by trace against the replay's stop rule (:func:`stop_agreement`) and
   compared with the replay's token bill on the same problems.

Codes (problems graded by tests) are left out: DeepConf votes on final answers.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from falcon_h1r.config import GenerationConfig, RecipeError
from falcon_h1r.deepconf import (
    N_RESAMPLES,
    SCORE_OF_METHOD,
    VOTE_METHODS,
    AnswerClasses,
    DeepConfRecipe,
    EarlyStopController,
    Trace,
    first_stop_index,
    group_by_problem,
    replay_evaluate,
    run_online,
    token_confidence,
    window_means,
)
from falcon_h1r.sections.common import first_per_domain, model_device, torch_threads
from falcon_h1r.tracestore import from_completions, grade_answer

VOTE_DOMAINS = ("math", "science")  # task domains with final answers to vote on (code is graded by tests)


# ============================================================================== recipe
@dataclass
class DeepConfExperiment:
    """The ``deepconf_experiments`` block of a preset: what the §5 experiment runs DeepConf on and how many
    traces it spends (the method's own knobs are :class:`falcon_h1r.deepconf.DeepConfRecipe`, the
    ``deepconf:`` block). Defaults are the DeepConf paper's where it has one.

    Fields:
        budgets: the online budgets B swept (each >= ``deepconf.n_init``; ``deepconf.budget`` is always
            added). DeepConf Table 12: 32, 64, 128, 256, 512.
        voting_methods: the offline votes compared (some of ``VOTE_METHODS``). DeepConf §3.2 / Table 1: all
            five.
        n_resamples: draws of K traces from the pool that every number is averaged over. DeepConf §4: 64.
        domains: task domains whose held-out problems are voted on (some of ``VOTE_DOMAINS``: code answers
            are graded by tests, not voted on). The Falcon-H1R paper's Table 7: math (AIME, HMMT, AMO).
        candidates: held-out problems screened per domain (0: all of the preset's test problems).
        screen_samples: samples per candidate for its pass-rate estimate (>= 2: one sample cannot show
            0 < rate < 1); 0: no screening, the first ``max_problems`` candidates (as a benchmark is run
            whole).
        max_problems: problems kept for the pool. The DeepConf paper's benchmarks have 30 problems.
        pool_size: complete traces per problem (0: twice the largest budget; >= the largest budget, since a
            resampling draws K traces without replacement). The DeepConf paper: 4096 for K <= 512.
        live_problems: problems of the live online run (per variant; 0: none).
        keep_token_ids: store the token ids in ``traces.parquet`` (the text can be decoded back).
        allow_unqualified: when no screened problem qualifies, run on the first screened ones anyway.
            Every vote then agrees with pass@1: only for smoke tests of the pipeline; the run's info and
            the notebook say so.
    """

    budgets: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    voting_methods: list[str] = field(default_factory=lambda: list(VOTE_METHODS))
    n_resamples: int = N_RESAMPLES
    domains: list[str] = field(default_factory=lambda: list(VOTE_DOMAINS))
    candidates: int = 0
    screen_samples: int = 8
    max_problems: int = 30
    pool_size: int = 0
    live_problems: int = 3
    keep_token_ids: bool = True
    allow_unqualified: bool = False

    def __post_init__(self) -> None:
        if not self.budgets or min(self.budgets) < 1:
            raise RecipeError(f"deepconf_experiments.budgets: need budgets >= 1, got {self.budgets}")
        bad = [m for m in self.voting_methods if m not in VOTE_METHODS]
        if bad:
            raise RecipeError(f"deepconf_experiments.voting_methods: {bad} not accepted; use some of "
                              f"{list(VOTE_METHODS)}")
        bad = [d for d in self.domains if d not in VOTE_DOMAINS]
        if bad or not self.domains:
            raise RecipeError(f"deepconf_experiments.domains: {bad or self.domains} not accepted; use a non-empty "
                              f"subset of {list(VOTE_DOMAINS)} (code answers are graded by tests, not voted on)")
        if self.n_resamples < 1:
            raise RecipeError(f"deepconf_experiments.n_resamples: must be >= 1, got {self.n_resamples}")
        for name in ("candidates", "live_problems", "pool_size"):
            if getattr(self, name) < 0:
                raise RecipeError(f"deepconf_experiments.{name}: must be >= 0, got {getattr(self, name)}")
        if self.screen_samples == 1 or self.screen_samples < 0:
            raise RecipeError(f"deepconf_experiments.screen_samples: must be >= 2 (one sample cannot show "
                              f"0 < rate < 1), or 0 for no screening; got {self.screen_samples}")
        if self.max_problems < 1:
            raise RecipeError(f"deepconf_experiments.max_problems: must be >= 1, got {self.max_problems}")

    def check(self, recipe: DeepConfRecipe) -> None:
        """What needs both blocks: every budget covers the warm-up, and the pool holds the largest one."""
        for b in self.budgets:
            if b < recipe.n_init:
                raise RecipeError(f"deepconf_experiments.budgets: every budget must be >= deepconf.n_init="
                                  f"{recipe.n_init}, got {b}")
        if self.pool_size and self.pool_size < self.max_budget(recipe):
            raise RecipeError(f"deepconf_experiments.pool_size: {self.pool_size} is below the largest budget "
                              f"{self.max_budget(recipe)}; a resampling draws K traces from the pool without "
                              "replacement")

    def max_budget(self, recipe: DeepConfRecipe) -> int:
        return max([recipe.budget, *self.budgets])

    def pool(self, recipe: DeepConfRecipe) -> int:
        """Traces per problem in the pool."""
        return self.pool_size or 2 * self.max_budget(recipe)


def k_values(recipe: DeepConfRecipe, experiment: DeepConfExperiment) -> list[int]:
    """K for the offline curves: powers of two up to the largest budget, plus every budget."""
    top = experiment.max_budget(recipe)
    ks = {1 << i for i in range(int(math.log2(top)) + 1)} | set(experiment.budgets) | {recipe.budget}
    return sorted(k for k in ks if k <= experiment.pool(recipe))


# ============================================================================== 1. screening
def candidate_problems(sets: dict[str, list[dict[str, Any]]], experiment: DeepConfExperiment, *,
                       benchmarks: Sequence[str] = (), benchmark_dir: str | None = None) -> list[dict[str, Any]]:
    """Held-out (test-split) problems of the voting domains, the first ``candidates`` of each
    (:func:`falcon_h1r.sections.common.first_per_domain`, domain by domain); for a loaded checkpoint without
    synthetic sets (paper preset), the ``benchmarks`` of those domains, read from ``benchmark_dir``
    (:func:`falcon_h1r.evaluation.load_benchmark`, nothing is downloaded)."""
    test = sets.get("test", [])
    per_domain = experiment.candidates or len(test)
    out = [p for domain in experiment.domains for p in first_per_domain(test, per_domain, [domain])]
    if not out and benchmarks:
        from falcon_h1r.evaluation import BENCHMARK_DOMAIN, load_benchmark

        for name in benchmarks:
            if BENCHMARK_DOMAIN.get(name) in experiment.domains:
                rows = load_benchmark(name, benchmark_dir)
                out += rows[:experiment.candidates] if experiment.candidates else rows
    if not out:
        raise ValueError(f"no held-out problems in domains {experiment.domains}; the preset's tasks.domains (or, "
                         "for a checkpoint, eval.benchmarks) must include math or science problems")
    return out


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
    """Pass rate of each problem from ``n_samples`` sampled answers (graded as the pool will be)."""
    comps = _generate(model, tokenizer, _prompts(tokenizer, problems, n_samples), gen, seed=seed, progress=progress,
                      desc="screen pass rates")
    rows = []
    for p, group in zip(problems, _by_problem(comps, problems, n_samples)):
        traces = from_completions(group, p)
        correct = sum(bool(t.correct) for t in traces)
        rows.append({"problem_id": p["id"], "domain": p["domain"], "difficulty": p["difficulty"], "n": n_samples,
                     "correct": correct, "pass_rate": correct / n_samples,
                     "answered": sum(t.answer is not None for t in traces),
                     "mean_tokens": float(np.mean([t.num_tokens for t in traces]))})
    return pd.DataFrame(rows)


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
                  pool_size: int, *, seed: int = 0, progress: bool = True, keep_token_ids: bool = True) -> list[Trace]:
    """``pool_size`` complete (never early-stopped) graded traces per problem."""
    comps = _generate(model, tokenizer, _prompts(tokenizer, problems, pool_size), gen, seed=seed, progress=progress,
                      desc="trace pool")
    pool: list[Trace] = []
    for p, group in zip(problems, _by_problem(comps, problems, pool_size)):
        for t in from_completions(group, p):
            t.text = None  # the store keeps token ids (decodable), not text
            if not keep_token_ids:
                t.token_ids = None
            pool.append(t)
    return pool


def pool_table(pool: Sequence[Trace]) -> pd.DataFrame:
    """Per problem: traces, accuracy, answered share, tokens, finish reasons, distinct answers."""
    rows = []
    for pid, traces in group_by_problem(pool).items():
        classes = AnswerClasses()
        rows.append({"problem_id": pid, "traces": len(traces),
                     "pass_rate": float(np.mean([bool(t.correct) for t in traces])),
                     "answered": float(np.mean([t.answer is not None for t in traces])),
                     "mean_tokens": float(np.mean([t.num_tokens for t in traces])),
                     "length_capped": float(np.mean([t.finish_reason == "length" for t in traces])),
                     "distinct_answers": len({classes(t.answer) for t in traces} - {None})})
    return pd.DataFrame(rows)

# ============================================================================== 3. replay evaluation
def _series(recipe: DeepConfRecipe, experiment: DeepConfExperiment) -> list[tuple[str, str | None, float | None]]:
    """(label, method, eta) of every offline curve."""
    out: list[tuple[str, str | None, float | None]] = [("majority", "majority", None)]
    for method in experiment.voting_methods:
        if SCORE_OF_METHOD[method] is None:
            continue
        for eta in (recipe.eta_low, recipe.eta_high):
            out.append((f"{method}@{eta:g}", method, eta))
    return out


def evaluate_pool(pool: Sequence[Trace], recipe: DeepConfRecipe, experiment: DeepConfExperiment, *, seed: int = 0,
                  progress: bool = True) -> pd.DataFrame:
    """Accuracy and generated tokens of every method at every K (``n_resamples`` paired draws each).

    Offline methods pay for all K traces; online ones (K = the budget, K >= n_init) for what they
    generated, early-stopped tokens included. ``tokens`` is summed over problems, per resampling.
    """
    from tqdm.auto import tqdm

    ks = k_values(recipe, experiment)
    pool_size = experiment.pool(recipe)
    jobs: list[tuple[str, str, str, float | None, int]] = [("pass@1", "pass@1", "pass@1", None, 1)]
    for label, method, eta in _series(recipe, experiment):
        kind = "majority" if method == "majority" else "offline"
        jobs += [(label, kind, method, eta, k) for k in ks]
    budgets = sorted({*experiment.budgets, recipe.budget})
    for variant in ("low", "high"):
        jobs += [(f"online_{variant}", "online", f"online_{variant}", None, b) for b in budgets if b <= pool_size]
    classes: dict[str, AnswerClasses] = {}
    rows = []
    for label, kind, method, eta, k in tqdm(jobs, desc="replay (64 resamplings each)", disable=not progress,
                                            leave=False):
        s = replay_evaluate(pool, method, k, eta=eta, n_resamples=experiment.n_resamples, seed=seed, recipe=recipe,
                            classes=classes)
        rows.append({"series": label, "kind": kind, "method": method,
                     "score": SCORE_OF_METHOD.get(method) if kind == "offline" else None, "eta": eta, "K": k,
                     "acc": s.acc_mean, "acc_std": s.acc_std, "tokens": s.tokens_mean, "tokens_std": s.tokens_std,
                     "traces_per_problem": s.traces_mean, "n_resamples": s.n_resamples, "n_problems": s.n_problems})
    return pd.DataFrame(rows)


def tokens_at_accuracy(curve: pd.DataFrame, acc: float) -> float | None:
    """Tokens a curve (rows sorted by K, columns ``acc`` and ``tokens``) needs to first reach ``acc``,
    interpolated linearly in log-tokens between its two bracketing points; None if it never does."""
    curve = curve.sort_values("K")
    toks, accs = curve["tokens"].to_numpy(float), curve["acc"].to_numpy(float)
    hit = np.flatnonzero(accs >= acc - 1e-12)
    if hit.size == 0:
        return None
    i = int(hit[0])
    if i == 0 or accs[i] == accs[i - 1]:
        return float(toks[i])
    frac = (acc - accs[i - 1]) / (accs[i] - accs[i - 1])
    return float(np.exp(np.log(toks[i - 1]) + frac * (np.log(toks[i]) - np.log(toks[i - 1]))))


def _saving(tokens: float, reference: float | None) -> float:
    """1 - tokens / reference (NaN without a reference); float noise around 0 is 0."""
    if reference is None or not reference or math.isnan(reference):
        return math.nan
    saving = 1 - tokens / reference
    return 0.0 if abs(saving) < 1e-9 else saving


def savings_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Online DeepConf against majority voting, per budget: the same-budget token saving (the DeepConf
    paper's Table 2 convention) and the saving against the majority@K curve at equal accuracy."""
    maj = curves[curves["series"] == "majority"]
    rows = []
    for _, r in curves[curves["kind"] == "online"].sort_values(["series", "K"]).iterrows():
        same = maj[maj["K"] == r["K"]]
        maj_tokens = float(same["tokens"].iloc[0]) if len(same) else math.nan
        maj_acc = float(same["acc"].iloc[0]) if len(same) else math.nan
        equal = tokens_at_accuracy(maj, r["acc"])
        rows.append({"series": r["series"], "budget": int(r["K"]), "acc": r["acc"], "tokens": r["tokens"],
                     "majority_acc": maj_acc, "majority_tokens": maj_tokens,
                     "saving_same_budget": _saving(r["tokens"], maj_tokens),
                     "majority_tokens_at_equal_acc": equal if equal is not None else math.nan,
                     "saving_at_equal_acc": _saving(r["tokens"], equal)})
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
                gen: GenerationConfig, recipe: DeepConfRecipe, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                progress: bool = True) -> pd.DataFrame:
    """One live online DeepConf run per variant and problem (budget ``recipe.budget``, batches of
    ``online_batch_size``), beside the replay of the same problem's pool at the same budget and batch
    size (mean over ``n_resamples`` draws): tokens, traces, accuracy, and the stop-rule check."""
    from tqdm.auto import tqdm

    budget = recipe.budget
    groups = group_by_problem(pool)
    rows = []
    jobs = [(v, p) for v in ("low", "high") for p in problems]
    for j, (variant, problem) in enumerate(tqdm(jobs, desc="live online DeepConf", disable=not progress,
                                                leave=False)):
        sampler = _LiveSampler(model, tokenizer, problem, gen, seed=seed * 1_000_003 + 7919 * j)
        t0 = time.perf_counter()
        res = run_online(sampler, variant, recipe, budget=budget, problem_id=problem["id"],
                         grade=lambda a, p=problem: grade_answer(a, p))
        wall = time.perf_counter() - t0
        agreement = stop_agreement(sampler.calls, recipe.window)
        row = {"problem_id": problem["id"], "variant": variant, "budget": budget,
               "batch_size": recipe.online_batch_size, "threshold": res.threshold, "traces": res.traces_used,
               "tokens": res.tokens, "stopped": res.stopped, "voters": res.voters, "stop_reason": res.stop_reason,
               "answer": res.answer, "correct": bool(res.correct), "share": res.share, "wall_s": wall,
               **{f"stop_{k}": v for k, v in agreement.items()}}
        traces = groups.get(problem["id"], [])
        if len(traces) >= budget:
            rep = replay_evaluate(traces, f"online_{variant}", budget, n_resamples=n_resamples, seed=seed,
                                  recipe=recipe, batch_size=recipe.online_batch_size)
            full = float(np.mean([t.num_tokens for t in traces]))
            row.update(replay_tokens=rep.tokens_mean, replay_tokens_std=rep.tokens_std,
                       replay_traces=rep.traces_mean, replay_acc=rep.acc_mean,
                       live_tokens_per_trace=res.tokens / res.traces_used,
                       replay_tokens_per_trace=rep.tokens_mean / rep.traces_mean, pool_tokens_per_trace=full)
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["VOTE_DOMAINS", "DeepConfExperiment", "k_values", "candidate_problems", "screen_problems",
           "select_problems", "generate_pool", "pool_table", "evaluate_pool", "tokens_at_accuracy", "savings_table",
           "stop_agreement", "live_online"]
