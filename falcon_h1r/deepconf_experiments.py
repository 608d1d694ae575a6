"""The §5 experiment: DeepConf on the preset's own SFT base model and synthetic problems.

Steps (:func:`run`), each a plain function so that tests and other notebooks can call them alone:

1. :func:`screen_problems`: sample a few answers per held-out math/science problem and estimate its
   pass rate. Voting can only change the outcome on problems the model gets right *some* of the time
   (always right: every method is right; never right: no vote can pick the answer), so
   :func:`select_problems` keeps those with 0 < rate < 1, as the DeepConf paper's hard benchmarks are.
2. :func:`generate_pool`: a pool of complete traces per kept problem (the preset's temperature and
   top-p, raw top-20 log-probs), graded, stored with :mod:`falcon_h1r.tracestore`.
3. :func:`evaluate_pool`: the DeepConf paper's protocol, every number a mean over ``n_resamples`` (64)
   draws of K traces from the pool: pass@1, majority@K, offline DeepConf for each trace score at
   eta = 10 and 90 %, online DeepConf-low/high replayed (truncation plus the tau consensus stop).
4. :func:`live_online`: one *live* online run per variant on a few problems, with the
   :class:`falcon_h1r.deepconf.EarlyStopController` inside the generation loop, checked trace by trace
   against the replay's stop rule and compared with the replay's token bill on the same problems.
5. :func:`measure_confidence_overhead`: what the controller costs per decode step.

Codes (problems graded by tests) are left out: DeepConf votes on final answers.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from falcon_h1r.config import GenerationConfig, Preset, RecipeError, parse, to_dict
from falcon_h1r.deepconf import (
    SCORE_OF_METHOD,
    VOTE_DOMAINS,
    AnswerClasses,
    DeepConfRecipe,
    EarlyStopController,
    Trace,
    first_stop_index,
    run_online,
    token_confidence,
    window_means,
)
from falcon_h1r.tracestore import from_completions, grade_answer, group_by_problem, replay_evaluate

SECTION = "05_deepconf"


# ============================================================================== recipe
def experiment_recipe(preset: Preset) -> DeepConfRecipe:
    """The preset's ``deepconf`` block, checked against its generation settings."""
    recipe = preset.section("deepconf", DeepConfRecipe)
    if preset.generation.top_logprobs != recipe.top_k:
        raise RecipeError(f"generation.top_logprobs={preset.generation.top_logprobs} but deepconf.top_k="
                          f"{recipe.top_k}: the confidence is the mean of the top-k log-probs the engine returns; "
                          "set both to 20 (DeepConf's k)")
    if preset.generation.temperature == 0:
        raise RecipeError("generation.temperature is 0: DeepConf votes over sampled traces; use the paper's 0.6")
    return recipe


def k_values(recipe: DeepConfRecipe) -> list[int]:
    """K for the offline curves: powers of two up to the largest budget, plus every budget."""
    ks = {1 << i for i in range(int(math.log2(recipe.max_budget)) + 1)} | set(recipe.budgets) | {recipe.budget}
    return sorted(k for k in ks if k <= recipe.pool)


# ============================================================================== 1. screening
def candidate_problems(sets: dict[str, list[dict[str, Any]]], recipe: DeepConfRecipe, *,
                       benchmarks: Sequence[str] = (), benchmark_dir: str | None = None) -> list[dict[str, Any]]:
    """Held-out (test-split) problems of the voting domains, the first ``candidates`` of each; for a
    loaded checkpoint without synthetic sets (paper preset), the ``benchmarks`` of those domains, read from
    ``benchmark_dir`` (:func:`falcon_h1r.evaluation.load_benchmark`, nothing is downloaded)."""
    out = []
    for domain in recipe.domains:
        pool = [p for p in sets.get("test", []) if p["domain"] == domain]
        out += pool[:recipe.candidates] if recipe.candidates else pool
    if not out and benchmarks:
        from falcon_h1r.evaluation import BENCHMARK_DOMAIN, load_benchmark

        for name in benchmarks:
            if BENCHMARK_DOMAIN.get(name) in recipe.domains:
                rows = load_benchmark(name, benchmark_dir)
                out += rows[:recipe.candidates] if recipe.candidates else rows
    if not out:
        raise ValueError(f"no held-out problems in domains {recipe.domains}; the preset's tasks.domains (or, for a "
                         "checkpoint, eval.benchmarks) must include math or science problems")
    return out


@contextlib.contextmanager
def cpu_decode_threads(model: Any, n: int = 1) -> Iterator[None]:
    """Decode with ``n`` torch threads when ``model`` is on the CPU, then restore the setting.

    Why: a tiny model's decode step is a hundred small ops, where OpenMP threads cost more than they
    bring, and on a shared machine spinning threads made it far worse (measured here: 64 traces x 96
    tokens of the tiny model took 2.2 s with one thread and 20-30 s with two while other jobs ran).
    """
    import torch

    if next(model.parameters()).device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _generate(model: Any, *args: Any, **kw: Any) -> list[Any]:
    """The engine ``generation.engine`` asks for (:func:`falcon_h1r.inference.generate`: ``auto`` picks the
    static-cache engine on GPU and transformers' loop on CPU), with one decode thread on CPU."""
    from falcon_h1r.inference import generate

    with cpu_decode_threads(model):
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
def _series(recipe: DeepConfRecipe) -> list[tuple[str, str | None, float | None]]:
    """(label, method, eta) of every offline curve."""
    out: list[tuple[str, str | None, float | None]] = [("majority", "majority", None)]
    for method in recipe.voting_methods:
        if SCORE_OF_METHOD[method] is None:
            continue
        for eta in (recipe.eta_low, recipe.eta_high):
            out.append((f"{method}@{eta:g}", method, eta))
    return out


def evaluate_pool(pool: Sequence[Trace], recipe: DeepConfRecipe, *, seed: int = 0,
                  progress: bool = True) -> pd.DataFrame:
    """Accuracy and generated tokens of every method at every K (``n_resamples`` paired draws each).

    Offline methods pay for all K traces; online ones (K = the budget, K >= n_init) for what they
    generated, early-stopped tokens included. ``tokens`` is summed over problems, per resampling.
    """
    from tqdm.auto import tqdm

    ks = k_values(recipe)
    jobs: list[tuple[str, str, str, float | None, int]] = [("pass@1", "pass@1", "pass@1", None, 1)]
    for label, method, eta in _series(recipe):
        kind = "majority" if method == "majority" else "offline"
        jobs += [(label, kind, method, eta, k) for k in ks]
    budgets = sorted({*recipe.budgets, recipe.budget})
    for variant in ("low", "high"):
        jobs += [(f"online_{variant}", "online", f"online_{variant}", None, b) for b in budgets if b <= recipe.pool]
    classes: dict[str, AnswerClasses] = {}
    rows = []
    for label, kind, method, eta, k in tqdm(jobs, desc="replay (64 resamplings each)", disable=not progress,
                                            leave=False):
        s = replay_evaluate(pool, method, k, eta=eta, seed=seed, recipe=recipe, classes=classes)
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
                gen: GenerationConfig, recipe: DeepConfRecipe, *, seed: int = 0,
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
            rep = replay_evaluate(traces, f"online_{variant}", budget, seed=seed, recipe=recipe,
                                  batch_size=recipe.online_batch_size)
            full = float(np.mean([t.num_tokens for t in traces]))
            row.update(replay_tokens=rep.tokens_mean, replay_tokens_std=rep.tokens_std,
                       replay_traces=rep.traces_mean, replay_acc=rep.acc_mean,
                       live_tokens_per_trace=res.tokens / res.traces_used,
                       replay_tokens_per_trace=rep.tokens_mean / rep.traces_mean, pool_tokens_per_trace=full)
        rows.append(row)
    return pd.DataFrame(rows)


# ============================================================================== 5. overhead
class _TimedStop:
    """An early stop that times the controller it wraps, inside the generation loop (eager loops only:
    the host clock brackets each call, with a device sync on GPU)."""

    def __init__(self, inner: EarlyStopController, sync: Any):
        self.inner, self.sync, self.seconds, self.calls = inner, sync, 0.0, 0

    def reset(self, batch_size: int, device: Any) -> None:
        self.inner.reset(batch_size, device)

    def __call__(self, top_logprobs: Any, running: Any) -> Any:
        self.sync()
        t0 = time.perf_counter()
        out = self.inner(top_logprobs, running)
        self.sync()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def measure_confidence_overhead(model: Any, *, vocab_size: int, batch_size: int, new_tokens: int,
                                window: int, top_k: int = 20, prompt_len: int = 32, repeats: int = 5,
                                temperature: float = 0.6, top_p: float = 0.95, seed: int = 0,
                                engine: str = "auto") -> dict[str, Any]:
    """Decode-step cost of DeepConf's live stop, as a fraction of a decode step (``overhead_fraction``).

    The decode loop runs with and without an :class:`EarlyStopController` whose threshold never fires
    (0: confidences are >= 0), EOS disabled, so both decode the same steps. ``engine`` as
    ``generation.engine`` ("auto": the fast engine on GPU, transformers' loop on CPU):

    * "fast", :class:`falcon_h1r.inference.engine.DecodeEngine`: on GPU the controller is captured inside the
      step's CUDA graph, so its cost is only visible as the difference of the two decode clocks (graph
      capture and prefill excluded): ``(step_with - step_without) / step_without``;
    * "hf", the loop of :mod:`falcon_h1r.inference.hf_loop`: the controller's calls are timed inside the loop
      and divided by the step time without it. (The difference of two whole runs, also reported as
      ``overhead_fraction_loop_diff``, drowns in noise on a shared CPU: +-20 % between identical runs.)

    Each figure is the fastest of ``repeats`` runs (other processes only ever add time). Also: the
    controller alone in a tight eager loop (``overhead_fraction_isolated``).
    """
    import torch

    from falcon_h1r.inference import engine as fast_engine
    from falcon_h1r.inference import resolve_engine
    from falcon_h1r.inference.hf_loop import generate_ids

    device = next(model.parameters()).device
    resolved = resolve_engine(engine, model)
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(2, vocab_size, (batch_size, prompt_len), generator=gen).tolist()
    kw = dict(eos_id=-1, pad_id=0, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def check(rows: list[dict[str, Any]], steps: int) -> None:
        if any(len(r["token_ids"]) != steps for r in rows):
            raise RuntimeError("a row stopped early although EOS and the threshold were disabled")

    in_loop: list[float] = []
    if resolved == "fast":
        eng = fast_engine.DecodeEngine(model, batch_size, prompt_len + new_tokens + 1)

        def decode_step(controller: EarlyStopController | None) -> float:
            rows = eng.generate(prompts, max_new_tokens=new_tokens, early_stop=controller, **kw)
            check(rows, new_tokens)
            return eng.last_timing["decode_s"] / eng.last_timing["steps"]

        decode_step(None)  # warm-up: allocator, kernels, graph capture
        decode_step(EarlyStopController(0.0, window))
        runs: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(repeats):
            runs["without"].append(decode_step(None))
            runs["with"].append(decode_step(EarlyStopController(0.0, window)))
    else:
        def timed(steps: int, controller: Any) -> float:
            sync()
            t0 = time.perf_counter()
            rows = generate_ids(model, prompts, max_new_tokens=steps, early_stop=controller, **kw)
            sync()
            check(rows, steps)
            return time.perf_counter() - t0

        timed(2, None)  # warm-up
        timed(2, EarlyStopController(0.0, window))
        totals: dict[str, list[float]] = {"without": [], "with": [], "one_step": []}
        for _ in range(repeats):
            totals["without"].append(timed(new_tokens, None))
            timer = _TimedStop(EarlyStopController(0.0, window), sync)
            totals["with"].append(timed(new_tokens, timer))
            in_loop.append(timer.seconds / max(1, timer.calls))
            totals["one_step"].append(timed(1, None))
        prefill = min(totals["one_step"])  # prefill and the first sample, the same in both
        runs = {k: [(t - prefill) / max(1, new_tokens - 1) for t in totals[k]] for k in ("without", "with")}
    # min over repeats: other processes only ever add time, so the fastest run is the cleanest estimate
    step_without, step_with = min(runs["without"]), min(runs["with"])
    loop_diff = (step_with - step_without) / step_without

    # the controller alone, on the same shapes, eagerly (an upper bound for the graph-captured step)
    controller = EarlyStopController(0.0, window)
    controller.reset(batch_size, device)
    top = -torch.rand(batch_size, top_k, device=device) * 10
    running = torch.ones(batch_size, dtype=torch.bool, device=device)
    n_calls = 200
    for _ in range(10):
        controller(top, running)
    sync()
    t0 = time.perf_counter()
    for _ in range(n_calls):
        stop = controller(top, running)
    bool(stop.any())
    sync()
    call_s = (time.perf_counter() - t0) / n_calls
    return {
        "engine": resolved, "device": str(device), "batch_size": batch_size, "new_tokens": new_tokens,
        "window": window, "top_k": top_k, "repeats": repeats,
        "method": "decode-clock difference (graph)" if resolved == "fast" else "controller timed inside the loop",
        "step_s_without": step_without, "step_s_with": step_with,
        "overhead_fraction": loop_diff if resolved == "fast" else min(in_loop) / step_without,
        "overhead_fraction_loop_diff": loop_diff,
        "controller_in_loop_s": min(in_loop) if in_loop else None,
        "controller_call_s": call_s, "overhead_fraction_isolated": call_s / step_without,
        "step_s_runs_without": runs["without"], "step_s_runs_with": runs["with"],
    }


# ============================================================================== the whole section
@dataclass
class DeepConfRun:
    """Everything the notebook shows; each table is also a CSV under results/<preset>/05_deepconf/."""

    screening: pd.DataFrame
    pool: pd.DataFrame  # per problem
    curves: pd.DataFrame
    savings: pd.DataFrame
    live: pd.DataFrame
    info: dict[str, Any]
    overhead: dict[str, Any] | None = None
    traces_path: Path | None = None
    recipe: DeepConfRecipe | None = None  # the block the run used (render mode: from run_info.json)


def headline(run: DeepConfRun, recipe: DeepConfRecipe) -> dict[str, Any]:
    """The flat ``summary.json`` figures."""
    c, top = run.curves, recipe.max_budget
    out: dict[str, Any] = {"n_problems": run.info["n_problems"], "pool_traces_per_problem": run.info["pool_size"],
                           "n_candidates": run.info["n_candidates"], "n_qualifying": run.info["n_qualifying"],
                           "max_budget": top, "unqualified_fallback": int(bool(run.info.get("unqualified_fallback")))}

    def acc(series: str, k: int) -> float | None:
        hit = c[(c["series"] == series) & (c["K"] == k)]
        return float(hit["acc"].iloc[0]) if len(hit) else None

    out["pass1"] = acc("pass@1", 1)
    for k in sorted({top, 512} & set(c["K"])):
        out[f"majority_acc_k{k}"] = acc("majority", k)
    out["offline_lowest_group_eta10_acc"] = acc(f"min_window_weighted@{recipe.eta_low:g}", top)
    for variant in ("low", "high"):
        out[f"deepconf_{variant}_acc"] = acc(f"online_{variant}", top)
        s = run.savings[(run.savings["series"] == f"online_{variant}") & (run.savings["budget"] == top)]
        if len(s):
            out[f"deepconf_{variant}_token_saving_vs_majority"] = float(s["saving_same_budget"].iloc[0])
            eq = float(s["saving_at_equal_acc"].iloc[0])  # NaN: majority never reaches that accuracy
            out[f"deepconf_{variant}_token_saving_at_equal_acc"] = None if math.isnan(eq) else eq
    if len(run.live):
        agree = run.live[["stop_checked", "stop_agree", "stop_borderline"]].sum()
        ok = agree["stop_agree"] + agree["stop_borderline"]
        out["live_stop_agreement"] = float(ok / max(1, agree["stop_checked"]))
        if "replay_tokens" in run.live:
            out["live_vs_replay_tokens_ratio"] = float(run.live["tokens"].sum() / run.live["replay_tokens"].sum())
    if run.overhead is not None:
        out["confidence_overhead_fraction"] = run.overhead["overhead_fraction"]
        out["confidence_overhead_fraction_isolated"] = run.overhead["overhead_fraction_isolated"]
    return out


def run(preset: Preset, *, base: Any = None, writer: Any = None, progress: bool = True,
        overhead: bool = True) -> DeepConfRun:
    """The whole section at ``preset``: screen, pool (saved as ``traces.parquet``), replay, live runs and
    (``overhead``) the controller's cost. ``base`` is the preset's SFT base (default
    :func:`falcon_h1r.sections.common.get_base_model`); ``writer`` a :class:`falcon_h1r.results.SectionWriter`
    that receives every table, the trace store and the headline figures."""
    from falcon_h1r.env import device_info, seed_everything
    from falcon_h1r.sections.common import get_base_model
    from falcon_h1r.tracestore import save_traces

    recipe = experiment_recipe(preset)
    base = base if base is not None else get_base_model(preset, progress=progress)
    gen = preset.generation
    seed_everything(preset.seed)
    t0 = time.perf_counter()
    candidates = candidate_problems(base.sets, recipe, benchmarks=preset.eval.benchmarks,
                                    benchmark_dir=preset.eval.benchmark_dir)
    if recipe.screen_samples:
        screen = screen_problems(base.model, base.tokenizer, candidates, gen, recipe.screen_samples,
                                 seed=preset.seed * 10 + 1, progress=progress)
        selected, screen = select_problems(screen, candidates, recipe.max_problems)
    else:  # no screening: the first max_problems candidates, as a benchmark is run whole
        selected = candidates[:recipe.max_problems]
        screen = pd.DataFrame({"problem_id": [p["id"] for p in candidates], "domain": [p["domain"] for p in candidates],
                               "difficulty": [p.get("difficulty", 0) for p in candidates], "n": 0,
                               "pass_rate": math.nan, "qualifies": False})
        screen["selected"] = screen["problem_id"].isin([p["id"] for p in selected])
    t_screen = time.perf_counter() - t0
    fallback = not selected and recipe.allow_unqualified and bool(recipe.screen_samples)
    if fallback:
        selected = candidates[:recipe.max_problems]
        screen["selected"] = screen["problem_id"].isin([p["id"] for p in selected])
    if not selected:
        raise RuntimeError(f"none of the {len(candidates)} screened problems has a pass rate strictly between 0 "
                           f"and 1 over {recipe.screen_samples} samples: DeepConf has nothing to vote on. Screen "
                           "more problems (deepconf.candidates) or samples (deepconf.screen_samples), or train "
                           "the base model longer")
    t1 = time.perf_counter()
    traces = generate_pool(base.model, base.tokenizer, selected, gen, recipe.pool, seed=preset.seed * 10 + 2,
                           progress=progress, keep_token_ids=recipe.keep_token_ids)
    t_pool = time.perf_counter() - t1
    traces_path = None
    if writer is not None:
        traces_path = save_traces(traces, writer.dir / "traces.parquet", with_token_ids=recipe.keep_token_ids)
        writer.outputs.append("traces.parquet")
    t2 = time.perf_counter()
    curves = evaluate_pool(traces, recipe, seed=preset.seed, progress=progress)
    t_eval = time.perf_counter() - t2
    t3 = time.perf_counter()
    live = live_online(base.model, base.tokenizer, selected[:recipe.live_problems], traces, gen, recipe,
                       seed=preset.seed * 10 + 3, progress=progress) if recipe.live_problems else pd.DataFrame()
    t_live = time.perf_counter() - t3
    over = None
    if overhead:
        on_cpu = next(base.model.parameters()).device.type == "cpu"
        with cpu_decode_threads(base.model):
            over = measure_confidence_overhead(
                base.model, vocab_size=base.tokenizer.vocab_size, batch_size=gen.batch_size,
                new_tokens=min(gen.max_new_tokens, 24) if on_cpu else gen.max_new_tokens, window=recipe.window,
                top_k=recipe.top_k, repeats=3 if on_cpu else 7, temperature=gen.temperature, top_p=gen.top_p,
                seed=preset.seed, engine=gen.engine)
    info = {"preset": preset.name, "n_candidates": len(candidates),
            "n_qualifying": int(screen["qualifies"].sum()) if recipe.screen_samples else None,
            "n_problems": len(selected), "pool_size": recipe.pool, "screen_samples": recipe.screen_samples,
            "pool_traces": len(traces), "pool_tokens": int(sum(t.num_tokens for t in traces)),
            "problems": [p["id"] for p in selected], "unqualified_fallback": fallback, "k_values": k_values(recipe),
            "wall_s": {"screen": t_screen, "pool": t_pool, "replay": t_eval, "live": t_live},
            "base_model": str(getattr(base, "path", "")), "device": device_info(), "recipe": to_dict(recipe)}
    result = DeepConfRun(screening=screen, pool=pool_table(traces), curves=curves, savings=savings_table(curves),
                         live=live, info=info, overhead=over, traces_path=traces_path, recipe=recipe)
    if writer is not None:
        write(result, recipe, writer)
    return result


CAPTION = "Ours ({preset} preset, synthetic tasks)"


def write(result: DeepConfRun, recipe: DeepConfRecipe, writer: Any) -> None:
    """Every table as CSV + Markdown, the info and overhead records, and the headline figures."""
    cap = CAPTION.format(preset=writer.preset)
    writer.table("screening", result.screening, caption=f"{cap}: pass rate of each screened held-out problem over "
                 f"{result.info['screen_samples']} samples; DeepConf runs on those with 0 < rate < 1")
    writer.table("pool", result.pool, caption=f"{cap}: the trace pool, per problem", float_format="%.6g")
    writer.table("curves", result.curves, caption=f"{cap}: accuracy and generated tokens (summed over problems) "
                 f"per method and K, mean over {recipe.n_resamples} resamplings of the pool", float_format="%.6g")
    writer.table("savings", result.savings, caption=f"{cap}: online DeepConf vs majority voting", float_format="%.6g")
    if len(result.live):
        writer.table("live_online", result.live, caption=f"{cap}: live online DeepConf (early stop inside the "
                     "generation loop) beside the replay of the same problem's pool", float_format="%.6g")
    writer.json("run_info", result.info)
    if result.overhead is not None:
        writer.json("overhead", result.overhead)
    writer.summary(headline(result, recipe))


def load(directory: str | Path) -> DeepConfRun:
    """A committed run's records (render mode)."""
    from falcon_h1r.results import read_json

    d = Path(directory)
    need = ["screening.csv", "pool.csv", "curves.csv", "savings.csv", "run_info.json"]
    missing = [n for n in need if not (d / n).exists()]
    if missing:
        raise FileNotFoundError(f"no committed DeepConf records in {d} (missing {missing}); run notebook 05 at "
                                "this preset on a machine that can compute it first")
    live = pd.read_csv(d / "live_online.csv") if (d / "live_online.csv").exists() else pd.DataFrame()
    over = read_json(d / "overhead.json") if (d / "overhead.json").exists() else None
    info = read_json(d / "run_info.json")
    return DeepConfRun(screening=pd.read_csv(d / "screening.csv"), pool=pd.read_csv(d / "pool.csv"),
                       curves=pd.read_csv(d / "curves.csv"), savings=pd.read_csv(d / "savings.csv"), live=live,
                       info=info, overhead=over,
                       traces_path=(d / "traces.parquet") if (d / "traces.parquet").exists() else None,
                       recipe=parse(DeepConfRecipe, info["recipe"], "run_info.recipe") if "recipe" in info else None)


__all__ = ["SECTION", "VOTE_DOMAINS", "experiment_recipe", "k_values", "candidate_problems",
           "screen_problems", "select_problems", "generate_pool", "pool_table", "evaluate_pool",
           "tokens_at_accuracy", "savings_table", "stop_agreement", "live_online", "cpu_decode_threads",
           "measure_confidence_overhead",
           "DeepConfRun", "headline", "run", "write", "load"]
