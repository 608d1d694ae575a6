"""Section 05 (paper §5, Table 7): DeepConf on the preset's own SFT base model and synthetic problems.

What notebook 05 calls, and where each of its numbers is computed:

- :func:`recipes`: the preset's ``deepconf:`` block (:class:`falcon_h1r.deepconf.DeepConfRecipe`, the method)
  and ``deepconf_experiments:`` block (:class:`~falcon_h1r.sections.deepconf_experiment.DeepConfExperiment`,
  the experiment's sizes), checked against each other and against the generation settings;
- :func:`run`: screening, the trace pool (``traces.parquet``, :mod:`falcon_h1r.tracestore`), the replay
  evaluation (:func:`falcon_h1r.deepconf.replay_evaluate`), the live online runs
  (:func:`falcon_h1r.deepconf.run_online`) and the live stop's cost
  (:func:`falcon_h1r.deepconf.measure_confidence_overhead`), all written with :func:`write`;
  :func:`load` reads a committed run back (render mode);
- :func:`headline`: the ``summary.json`` figures; :func:`methods_at_budget`, :func:`savings_notes` and
  :func:`live_stop_counts`: the tables and sentences the notebook shows beside its plots.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from falcon_h1r.config import Preset, RecipeError, parse, to_dict
from falcon_h1r.deepconf import DeepConfRecipe, measure_confidence_overhead
from falcon_h1r.sections.common import model_device, torch_threads
from falcon_h1r.sections.deepconf_experiment import (
    DeepConfExperiment,
    candidate_problems,
    evaluate_pool,
    generate_pool,
    k_values,
    live_online,
    pool_table,
    savings_table,
    screen_problems,
    select_problems,
)

SECTION = "05_deepconf"
CAPTION = "Ours ({preset} preset, synthetic tasks)"


# ============================================================================== recipes
def recipes(preset: Preset) -> tuple[DeepConfRecipe, DeepConfExperiment]:
    """The preset's ``deepconf`` and ``deepconf_experiments`` blocks, checked against each other and against
    its generation settings."""
    recipe = preset.section("deepconf", DeepConfRecipe)
    experiment = preset.section("deepconf_experiments", DeepConfExperiment)
    experiment.check(recipe)
    if preset.generation.top_logprobs != recipe.top_k:
        raise RecipeError(f"generation.top_logprobs={preset.generation.top_logprobs} but deepconf.top_k="
                          f"{recipe.top_k}: the confidence is the mean of the top-k log-probs the engine returns; "
                          "set both to 20 (DeepConf's k)")
    if preset.generation.temperature == 0:
        raise RecipeError("generation.temperature is 0: DeepConf votes over sampled traces; use the paper's 0.6")
    return recipe, experiment


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
    recipe: DeepConfRecipe  # the blocks the run used (render mode: from run_info.json)
    experiment: DeepConfExperiment
    overhead: dict[str, Any] | None = None
    traces_path: Path | None = None

    @property
    def max_budget(self) -> int:
        return self.experiment.max_budget(self.recipe)


def live_stop_counts(live: pd.DataFrame) -> dict[str, Any]:
    """Live traces checked against the replay's stop rule, how many agree (within rounding of the threshold
    included), how many were stopped, and the live / replay token ratio."""
    checked = int(live["stop_checked"].sum())
    ok = int(live["stop_agree"].sum() + live["stop_borderline"].sum())
    out = {"checked": checked, "agree_or_borderline": ok, "borderline": int(live["stop_borderline"].sum()),
           "stopped": int(live["stopped"].sum()), "agreement": float(ok / max(1, checked))}
    if "replay_tokens" in live:
        out["live_vs_replay_tokens_ratio"] = float(live["tokens"].sum() / live["replay_tokens"].sum())
    return out


def headline(run: DeepConfRun) -> dict[str, Any]:
    """The flat ``summary.json`` figures."""
    c, top = run.curves, run.max_budget
    out: dict[str, Any] = {"n_problems": run.info["n_problems"], "pool_traces_per_problem": run.info["pool_size"],
                           "n_candidates": run.info["n_candidates"], "n_qualifying": run.info["n_qualifying"],
                           "max_budget": top, "unqualified_fallback": int(bool(run.info.get("unqualified_fallback")))}

    def acc(series: str, k: int) -> float | None:
        hit = c[(c["series"] == series) & (c["K"] == k)]
        return float(hit["acc"].iloc[0]) if len(hit) else None

    out["pass1"] = acc("pass@1", 1)
    for k in sorted({top, 512} & set(c["K"])):
        out[f"majority_acc_k{k}"] = acc("majority", k)
    out["offline_lowest_group_eta10_acc"] = acc(f"min_window_weighted@{run.recipe.eta_low:g}", top)
    for variant in ("low", "high"):
        out[f"deepconf_{variant}_acc"] = acc(f"online_{variant}", top)
        s = run.savings[(run.savings["series"] == f"online_{variant}") & (run.savings["budget"] == top)]
        if len(s):
            out[f"deepconf_{variant}_token_saving_vs_majority"] = float(s["saving_same_budget"].iloc[0])
            eq = float(s["saving_at_equal_acc"].iloc[0])  # NaN: majority never reaches that accuracy
            out[f"deepconf_{variant}_token_saving_at_equal_acc"] = None if math.isnan(eq) else eq
    if len(run.live):
        counts = live_stop_counts(run.live)
        out["live_stop_agreement"] = counts["agreement"]
        if "live_vs_replay_tokens_ratio" in counts:
            out["live_vs_replay_tokens_ratio"] = counts["live_vs_replay_tokens_ratio"]
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

    recipe, experiment = recipes(preset)
    base = base if base is not None else get_base_model(preset, progress=progress)
    gen = preset.generation
    pool_size = experiment.pool(recipe)
    seed_everything(preset.seed)
    t0 = time.perf_counter()
    candidates = candidate_problems(base.sets, experiment, benchmarks=preset.eval.benchmarks,
                                    benchmark_dir=preset.eval.benchmark_dir)
    if experiment.screen_samples:
        screen = screen_problems(base.model, base.tokenizer, candidates, gen, experiment.screen_samples,
                                 seed=preset.seed * 10 + 1, progress=progress)
        selected, screen = select_problems(screen, candidates, experiment.max_problems)
    else:  # no screening: the first max_problems candidates, as a benchmark is run whole
        selected = candidates[:experiment.max_problems]
        screen = pd.DataFrame({"problem_id": [p["id"] for p in candidates], "domain": [p["domain"] for p in candidates],
                               "difficulty": [p.get("difficulty", 0) for p in candidates], "n": 0,
                               "pass_rate": math.nan, "qualifies": False})
        screen["selected"] = screen["problem_id"].isin([p["id"] for p in selected])
    t_screen = time.perf_counter() - t0
    fallback = not selected and experiment.allow_unqualified and bool(experiment.screen_samples)
    if fallback:
        selected = candidates[:experiment.max_problems]
        screen["selected"] = screen["problem_id"].isin([p["id"] for p in selected])
    if not selected:
        raise RuntimeError(f"none of the {len(candidates)} screened problems has a pass rate strictly between 0 "
                           f"and 1 over {experiment.screen_samples} samples: DeepConf has nothing to vote on. Screen "
                           "more problems (deepconf_experiments.candidates) or samples "
                           "(deepconf_experiments.screen_samples), or train the base model longer")
    t1 = time.perf_counter()
    traces = generate_pool(base.model, base.tokenizer, selected, gen, pool_size, seed=preset.seed * 10 + 2,
                           progress=progress, keep_token_ids=experiment.keep_token_ids)
    t_pool = time.perf_counter() - t1
    traces_path = None
    if writer is not None:
        traces_path = save_traces(traces, writer.dir / "traces.parquet", with_token_ids=experiment.keep_token_ids)
        writer.outputs.append("traces.parquet")
    t2 = time.perf_counter()
    curves = evaluate_pool(traces, recipe, experiment, seed=preset.seed, progress=progress)
    t_eval = time.perf_counter() - t2
    t3 = time.perf_counter()
    live = live_online(base.model, base.tokenizer, selected[:experiment.live_problems], traces, gen, recipe,
                       n_resamples=experiment.n_resamples, seed=preset.seed * 10 + 3,
                       progress=progress) if experiment.live_problems else pd.DataFrame()
    t_live = time.perf_counter() - t3
    over = None
    if overhead:
        device = model_device(base.model)
        on_cpu = device.type == "cpu"
        with torch_threads(1, device):
            over = measure_confidence_overhead(
                base.model, vocab_size=base.tokenizer.vocab_size, batch_size=gen.batch_size,
                new_tokens=min(gen.max_new_tokens, 24) if on_cpu else gen.max_new_tokens, window=recipe.window,
                top_k=recipe.top_k, repeats=3 if on_cpu else 7, temperature=gen.temperature, top_p=gen.top_p,
                seed=preset.seed, engine=gen.engine)
    info = {"preset": preset.name, "n_candidates": len(candidates),
            "n_qualifying": int(screen["qualifies"].sum()) if experiment.screen_samples else None,
            "n_problems": len(selected), "pool_size": pool_size, "screen_samples": experiment.screen_samples,
            "pool_traces": len(traces), "pool_tokens": int(sum(t.num_tokens for t in traces)),
            "problems": [p["id"] for p in selected], "unqualified_fallback": fallback,
            "k_values": k_values(recipe, experiment),
            "wall_s": {"screen": t_screen, "pool": t_pool, "replay": t_eval, "live": t_live},
            "base_model": str(getattr(base, "path", "")), "device": device_info(), "recipe": to_dict(recipe),
            "experiment": to_dict(experiment)}
    result = DeepConfRun(screening=screen, pool=pool_table(traces), curves=curves, savings=savings_table(curves),
                         live=live, info=info, recipe=recipe, experiment=experiment, overhead=over,
                         traces_path=traces_path)
    if writer is not None:
        write(result, writer)
    return result


def write(result: DeepConfRun, writer: Any) -> None:
    """Every table as CSV + Markdown, the info and overhead records, and the headline figures."""
    cap = CAPTION.format(preset=writer.preset)
    writer.table("screening", result.screening, caption=f"{cap}: pass rate of each screened held-out problem over "
                 f"{result.info['screen_samples']} samples; DeepConf runs on those with 0 < rate < 1")
    writer.table("pool", result.pool, caption=f"{cap}: the trace pool, per problem", float_format="%.6g")
    writer.table("curves", result.curves, caption=f"{cap}: accuracy and generated tokens (summed over problems) "
                 f"per method and K, mean over {result.experiment.n_resamples} resamplings of the pool",
                 float_format="%.6g")
    writer.table("savings", result.savings, caption=f"{cap}: online DeepConf vs majority voting", float_format="%.6g")
    if len(result.live):
        writer.table("live_online", result.live, caption=f"{cap}: live online DeepConf (early stop inside the "
                     "generation loop) beside the replay of the same problem's pool", float_format="%.6g")
    writer.json("run_info", result.info)
    if result.overhead is not None:
        writer.json("overhead", result.overhead)
    writer.summary(headline(result))


def _blocks_of(info: dict[str, Any]) -> tuple[DeepConfRecipe, DeepConfExperiment]:
    """The two blocks a run recorded. Runs made before the method/experiment split kept both in one
    ``recipe`` mapping; its keys are shared out by field name."""
    if "experiment" in info:
        return (parse(DeepConfRecipe, info["recipe"], "run_info.recipe"),
                parse(DeepConfExperiment, info["experiment"], "run_info.experiment"))
    merged = info["recipe"]
    names = {f.name for f in fields(DeepConfRecipe)}
    recipe = parse(DeepConfRecipe, {k: v for k, v in merged.items() if k in names}, "run_info.recipe")
    experiment = parse(DeepConfExperiment, {k: v for k, v in merged.items() if k not in names}, "run_info.recipe")
    return recipe, experiment


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
    recipe, experiment = _blocks_of(info)
    return DeepConfRun(screening=pd.read_csv(d / "screening.csv"), pool=pd.read_csv(d / "pool.csv"),
                       curves=pd.read_csv(d / "curves.csv"), savings=pd.read_csv(d / "savings.csv"), live=live,
                       info=info, recipe=recipe, experiment=experiment, overhead=over,
                       traces_path=(d / "traces.parquet") if (d / "traces.parquet").exists() else None)


# ============================================================================== what the notebook shows
def methods_at_budget(run: DeepConfRun) -> pd.DataFrame:
    """Every method at K = the largest budget (online: that budget), with its tokens over majority@K's."""
    c, top = run.curves, run.max_budget
    maj = c[c["series"] == "majority"]
    at_top = c[c["K"] == top].copy()
    at_top = at_top[["series", "acc", "acc_std", "tokens", "traces_per_problem"]]
    at_top["tokens_vs_majority"] = at_top["tokens"] / float(maj.loc[maj["K"] == top, "tokens"].iloc[0])
    return at_top


def savings_notes(run: DeepConfRun, source: str) -> list[str]:
    """One sentence per DeepConf variant at the largest budget: its accuracy and tokens against majority
    voting at the same budget, and at equal accuracy on majority's K curve (``source`` labels the numbers)."""
    sav, top = run.savings, run.max_budget
    largest_k = int(run.curves.loc[run.curves["series"] == "majority", "K"].max())
    notes = []
    for v in ("low", "high"):
        r = sav[(sav["series"] == f"online_{v}") & (sav["budget"] == top)].iloc[0]
        if math.isnan(r["saving_at_equal_acc"]):
            eq = f"; majority voting never reaches its accuracy at K up to {largest_k}"
        elif r["saving_at_equal_acc"] >= 0:
            eq = f"; at equal accuracy it needs **{r['saving_at_equal_acc']:.1%}** fewer tokens than majority voting"
        else:
            eq = (f"; but majority voting reaches the same accuracy with {r['majority_tokens_at_equal_acc']:,.0f} "
                  f"tokens, {r['tokens'] / r['majority_tokens_at_equal_acc']:.1f}x fewer")
        notes.append(f"DeepConf-{v} at budget {top}: accuracy {r['acc']:.3f} vs majority@{top} "
                     f"{r['majority_acc']:.3f}, {r['saving_same_budget']:.1%} fewer tokens than majority@{top}{eq} "
                     f"({source}).")
    return notes


__all__ = ["SECTION", "DeepConfExperiment", "recipes", "DeepConfRun", "headline", "run", "write", "load",
           "live_stop_counts", "methods_at_budget", "savings_notes"]
