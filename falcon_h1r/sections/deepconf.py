"""Section 05 (paper §5, Table 7): DeepConf on the preset's independently trained SFT bases and synthetic problems.

What notebook 05 calls, and where each of its numbers is computed:

- :func:`recipes`: the preset's ``deepconf:`` block (:class:`falcon_h1r.deepconf.DeepConfRecipe`, the method)
  and ``deepconf_experiments:`` block (:class:`~falcon_h1r.sections.deepconf_experiment.DeepConfExperiment`,
  the experiment's sizes), checked against each other and against the generation settings;
- :func:`run`: screening (pooled over the bases), one trace pool per base (kept under ``_work/`` as Parquet,
  :mod:`falcon_h1r.tracestore`, so a run that stops at its time budget resumes), the replay evaluation
  (:func:`~falcon_h1r.sections.deepconf_experiment.evaluate_pools`, the DeepConf paper's protocol), the live
  online runs (:func:`falcon_h1r.deepconf.run_online`) and the live stop's cost
  (:func:`falcon_h1r.deepconf.measure_confidence_overhead`), all written with :func:`write`; :func:`load` reads
  a committed run back (render mode);
- the numbers with their intervals (:mod:`falcon_h1r.sections.deepconf_report`, over bases and problems with
  :mod:`falcon_h1r.stats`): :func:`headline` for ``summary.json``, the curves, premise, savings and keep-rule
  tables the notebook shows.

``python -m falcon_h1r.sections.deepconf --preset small --pools-only [--budget-s 540] [--parallel]`` generates the
pools alone, base by base (``--parallel``: one process per missing base sharing the GPU, whose decode loop of a
~6M model is launch-bound and leaves it mostly idle); exit 3 when the time budget stopped it: run it again to
continue. ``--records`` then computes the section's records (screen, replay, live runs, overhead; no notebook)
on a machine that can compute the preset, so that notebook 05 renders them on any other (a lent GPU image
without papermill).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from falcon_h1r.config import Preset, RecipeError, parse, to_dict
from falcon_h1r.deepconf import DeepConfRecipe, Trace, measure_confidence_overhead, overhead_record
from falcon_h1r.sections import deepconf_report as report
from falcon_h1r.sections.common import (
    StageIncomplete,
    model_device,
    recipe_hash,
    torch_threads,
)
from falcon_h1r.sections.deepconf_experiment import (
    DeepConfExperiment,
    candidate_problems,
    evaluate_pools,
    generate_pool,
    k_values,
    live_online,
    pool_screens,
    pool_table,
    screen_from_records,
    screen_problems,
    select_problems,
)

SECTION = "05_deepconf"
CAPTION = "Ours ({preset} preset, synthetic tasks)"
OVERHEAD_GPU_TOKENS = 512  # decode steps of the GPU overhead probe (see run())
RECORDS_SHOWN = ("trace_tokens_median", "n_problems", "base_seeds", "max_budget", "pass1", "majority_minus_pass1",
                 "majority_minus_pass1_ci95", "deepconf_low_minus_majority_acc",
                 "deepconf_low_minus_majority_acc_ci95", "deepconf_high_minus_majority_acc",
                 "deepconf_high_minus_majority_acc_ci95", "deepconf_low_token_saving_vs_majority",
                 "deepconf_high_token_saving_vs_majority", "consensus_stop_token_saving",
                 "confidence_overhead_fraction")  # what --records prints when it is done


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
    if experiment.screen == "base_record" and preset.model.checkpoint:
        raise RecipeError("deepconf_experiments.screen: base_record needs trained bases with recorded pass rates; "
                          "a loaded checkpoint has none (use screen: none or sample)")
    return recipe, experiment


# ============================================================================== the whole section
@dataclass
class DeepConfRun:
    """Everything the notebook shows; each table is also a file under results/<preset>/05_deepconf/."""

    screening: pd.DataFrame
    pool: pd.DataFrame  # per base and problem
    outcomes: pd.DataFrame  # per base, problem, series and K (means over the draws)
    live: pd.DataFrame
    info: dict[str, Any]
    recipe: DeepConfRecipe  # the blocks the run used (render mode: from run_info.json)
    experiment: DeepConfExperiment
    overhead: dict[str, Any] | None = None

    @property
    def max_budget(self) -> int:
        return self.experiment.max_budget(self.recipe)

    def report(self) -> report.Outcomes:
        return report.Outcomes(self.outcomes)


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
    """The flat ``summary.json`` figures: the run's sizes, then every estimate with its interval keys."""
    info, rec = run.info, run.recipe
    out: dict[str, Any] = {
        "n_problems": info["n_problems"], "n_candidates": info["n_candidates"], "n_qualifying": info["n_qualifying"],
        "base_seeds": len(info["base_seeds"]), "max_budget": run.max_budget, "pool_traces_per_problem": info["pool_size"],
        "n_resamples": run.experiment.n_resamples, "unqualified_fallback": int(bool(info.get("unqualified_fallback"))),
        "trace_tokens_median": info["trace_tokens"]["median"], "trace_tokens_p10": info["trace_tokens"]["p10"],
        "trace_tokens_p90": info["trace_tokens"]["p90"], "confidence_window": rec.window,
        "windows_per_median_trace": info["trace_tokens"]["median"] / rec.window, "offline_keep_rule": rec.keep_rule,
    }
    out.update(report.headline(run.report(), max_budget=run.max_budget, eta_low=rec.eta_low, eta_high=rec.eta_high,
                               keep_rule=rec.keep_rule, methods=run.experiment.voting_methods))
    if len(run.live):
        counts = live_stop_counts(run.live)
        out["live_stop_agreement"] = counts["agreement"]
        if "live_vs_replay_tokens_ratio" in counts:
            out["live_vs_replay_tokens_ratio"] = counts["live_vs_replay_tokens_ratio"]
    if run.overhead is not None:
        out["confidence_overhead_fraction"] = run.overhead["overhead_fraction"]
        out["confidence_overhead_fraction_isolated"] = run.overhead["overhead_fraction_isolated"]
        if run.overhead.get("overhead_fraction_range"):  # the spread of the per-repeat pairs behind the median
            lo, hi = run.overhead["overhead_fraction_range"]
            out["confidence_overhead_fraction_min"], out["confidence_overhead_fraction_max"] = lo, hi
        if run.overhead.get("overhead_fraction_torch_form") is not None:
            out["confidence_overhead_fraction_torch_form"] = run.overhead["overhead_fraction_torch_form"]
    return out


def _select(preset: Preset, bases: Sequence[Any], experiment: DeepConfExperiment, *,
            progress: bool) -> tuple[list[dict[str, Any]], pd.DataFrame, int, bool]:
    """The screened problems the pools are drawn on, the screening table, the candidate count, and whether
    the unqualified fallback was taken."""
    from falcon_h1r.sections.common import held_out

    sets = bases[0].sets
    pool = held_out(sets, preset) if experiment.screen == "base_record" else sets.get("test", [])
    candidates = candidate_problems(pool, experiment, benchmarks=preset.eval.benchmarks,
                                    benchmark_dir=preset.eval.benchmark_dir)
    if experiment.screen == "none":
        selected = candidates[:experiment.max_problems]
        screen = pd.DataFrame({"problem_id": [p["id"] for p in candidates], "domain": [p["domain"] for p in candidates],
                               "difficulty": [p.get("difficulty", 0) for p in candidates], "n": 0,
                               "pass_rate": math.nan, "qualifies": False})
        screen["selected"] = screen["problem_id"].isin([p["id"] for p in selected])
        return selected, screen, len(candidates), False
    if experiment.screen == "base_record":
        screen = screen_from_records([b.info for b in bases], candidates)
        candidates = [p for p in candidates if p["id"] in set(screen["problem_id"])]
    else:
        screen = pool_screens([screen_problems(b.model, b.tokenizer, candidates, preset.generation,
                                               experiment.screen_samples, seed=preset.seed * 10 + 1 + 97 * i,
                                               progress=progress) for i, b in enumerate(bases)])
    selected, screen = select_problems(screen, candidates, experiment.max_problems)
    fallback = not selected and experiment.allow_unqualified
    if fallback:
        selected = candidates[:experiment.max_problems]
        screen["selected"] = screen["problem_id"].isin([p["id"] for p in selected])
    if not selected:
        raise RuntimeError(f"none of the {len(candidates)} screened problems has a pass rate strictly between 0 "
                           "and 1: DeepConf has nothing to vote on. Screen more problems (deepconf_experiments."
                           "candidates, eval.problems_per_domain) or train the bases longer")
    return selected, screen, len(candidates), fallback


def pool_dir(folder: Path, preset: Preset, selected: Sequence[dict[str, Any]], recipe: DeepConfRecipe,
             experiment: DeepConfExperiment) -> Path:
    """Where the pools of this selection live: ``<section folder>/_work/pools-<hash>/`` (shared by the CLI's
    staging copies, never committed). The hash covers what shapes a pool: problems, pool size, batching,
    generation, seed; each file name carries its base's seed and recipe hash."""
    key = recipe_hash([p["id"] for p in selected], experiment.pool(recipe), experiment.pool_batch_size,
                      preset.generation, preset.seed)
    return Path(folder) / "_work" / f"pools-{key}"


def base_pools(preset: Preset, bases: Sequence[Any], selected: Sequence[dict[str, Any]], recipe: DeepConfRecipe,
               experiment: DeepConfExperiment, *, work: Path | None, progress: bool = True,
               budget_s: float | None = None,
               only_seeds: Sequence[int] | None = None) -> tuple[dict[int, list[Trace]], dict[str, float]]:
    """One pool per base (seed -> traces), loaded from ``work`` when there, else generated and saved there.
    With ``budget_s``, stops once that much time has passed (after a base, or, with ``work``, after the chunk
    of problems that passes it, the finished chunks kept) and raises
    :class:`~falcon_h1r.sections.common.StageIncomplete` (run again to continue).
    ``only_seeds`` generates (and returns) the pools of those bases only: one process per base."""
    from falcon_h1r.tracestore import load_traces, save_traces

    deadline = None if budget_s is None else time.time() + budget_s
    pools, walls = {}, {}
    for i, base in enumerate(bases):
        if only_seeds is not None and base.seed not in only_seeds:
            continue
        path = None if work is None else work / f"base-{base.seed}-{base.info.get('recipe_hash', 'x')}.parquet"
        if path is not None and path.exists():
            pools[base.seed] = load_traces(path)
            continue
        if deadline is not None and walls and time.time() > deadline:  # after one generated here
            raise StageIncomplete(f"DeepConf pools: {i} of {len(bases)} bases done at the time budget; run again "
                                  "to continue")
        t1 = time.perf_counter()
        chunks = None if path is None else path.with_suffix(".chunks")
        try:
            pools[base.seed] = generate_pool(base.model, base.tokenizer, selected, preset.generation,
                                             experiment.pool(recipe), seed=preset.seed * 10 + 2 + 97 * base.seed,
                                             batch_size=experiment.pool_batch_size, progress=progress,
                                             keep_token_ids=experiment.keep_token_ids, chunk_dir=chunks,
                                             deadline=deadline if chunks is not None else None)
        except StageIncomplete as exc:
            raise StageIncomplete(f"DeepConf pools: base {base.seed}: {exc}") from None
        walls[f"pool_base{base.seed}"] = time.perf_counter() - t1
        if path is not None:
            save_traces(pools[base.seed], path, with_token_ids=experiment.keep_token_ids)
            shutil.rmtree(chunks, ignore_errors=True)
    return pools, walls


def _trace_tokens(pools: dict[int, list[Trace]]) -> dict[str, float]:
    tokens = np.array([t.num_tokens for pool in pools.values() for t in pool])
    return {"median": float(np.median(tokens)), "p10": float(np.percentile(tokens, 10)),
            "p90": float(np.percentile(tokens, 90)), "max": float(tokens.max()), "mean": float(tokens.mean()),
            "length_capped": float(np.mean([t.finish_reason == "length" for p in pools.values() for t in p]))}


def run(preset: Preset, *, bases: Sequence[Any] | None = None, writer: Any = None, progress: bool = True,
        overhead: bool = True, budget_s: float | None = None, pools_only: bool = False,
        only_seeds: Sequence[int] | None = None) -> DeepConfRun | None:
    """The whole section at ``preset``: screen, one pool per base (kept in ``<section>/_work/``), replay, live
    runs and (``overhead``) the controller's cost. ``bases`` are the preset's SFT bases (default
    :func:`falcon_h1r.sections.common.get_base_models`); ``writer`` a :class:`falcon_h1r.results.SectionWriter`
    that receives every table and the headline figures (without one, pools are not kept). ``pools_only``
    stops after the pools (returns None); ``only_seeds`` (with ``pools_only``) makes those bases' pools only."""
    from falcon_h1r.env import device_info, seed_everything
    from falcon_h1r.sections.common import get_base_models

    recipe, experiment = recipes(preset)
    bases = list(bases) if bases is not None else get_base_models(preset, progress=progress)
    seed_everything(preset.seed)
    t0 = time.perf_counter()
    selected, screen, n_candidates, fallback = _select(preset, bases, experiment, progress=progress)
    t_screen = time.perf_counter() - t0
    from falcon_h1r.results import section_dir

    folder = writer.dir if writer is not None else section_dir(preset.name, SECTION) if pools_only else None
    work = pool_dir(folder, preset, selected, recipe, experiment) if folder is not None else None
    if only_seeds is not None and not pools_only:
        raise ValueError("only_seeds makes some bases' pools only: it needs pools_only=True")
    pools, pool_walls = base_pools(preset, bases, selected, recipe, experiment, work=work, progress=progress,
                                   budget_s=budget_s, only_seeds=only_seeds)
    if pools_only:
        return None
    t1 = time.perf_counter()
    outcomes = evaluate_pools(pools, selected, recipe, experiment, seed=preset.seed, progress=progress)
    t_replay = time.perf_counter() - t1
    t2 = time.perf_counter()
    first = bases[0]
    live_budget = experiment.live_budget or recipe.budget
    live = live_online(first.model, first.tokenizer, selected[:experiment.live_problems], pools[first.seed],
                       preset.generation, recipe, budget=live_budget, n_resamples=experiment.n_resamples,
                       seed=preset.seed * 10 + 3, progress=progress) if experiment.live_problems else pd.DataFrame()
    t_live = time.perf_counter() - t2
    over = None
    if overhead:
        gen = preset.generation
        on_cpu = model_device(first.model).type == "cpu"
        with torch_threads(1, model_device(first.model)):
            # On a GPU: 512 steps. The controller's cost is the same at every step while a step grows with the
            # context, so a short probe gives the larger (more conservative) fraction.
            over = measure_confidence_overhead(
                first.model, vocab_size=first.tokenizer.vocab_size, batch_size=gen.batch_size,
                new_tokens=min(gen.max_new_tokens, 24 if on_cpu else OVERHEAD_GPU_TOKENS), window=recipe.window,
                top_k=recipe.top_k, repeats=3 if on_cpu else 7, temperature=gen.temperature, top_p=gen.top_p,
                seed=preset.seed, engine=gen.engine)
    info = {"preset": preset.name, "n_candidates": n_candidates,
            "n_qualifying": int(screen["qualifies"].sum()) if "qualifies" in screen else None,
            "n_problems": len(selected), "pool_size": experiment.pool(recipe), "screen": experiment.screen,
            "base_seeds": [b.seed for b in bases], "pool_traces": sum(len(p) for p in pools.values()),
            "pool_tokens": int(sum(t.num_tokens for p in pools.values() for t in p)),
            "trace_tokens": _trace_tokens(pools), "problems": [p["id"] for p in selected],
            "unqualified_fallback": fallback, "k_values": k_values(recipe, experiment),
            "budgets": experiment.all_budgets(recipe), "live_budget": live_budget,
            "wall_s": {"screen": t_screen, **pool_walls, "replay": t_replay, "live": t_live},
            "base_models": [str(getattr(b, "path", "")) for b in bases], "device": device_info(),
            "recipe": to_dict(recipe), "experiment": to_dict(experiment)}
    result = DeepConfRun(screening=screen, pool=pool_table(pools, selected), outcomes=outcomes, live=live, info=info,
                         recipe=recipe, experiment=experiment, overhead=over)
    if writer is not None:
        write(result, writer)
    return result


def write(result: DeepConfRun, writer: Any) -> None:
    """Every table (CSV + Markdown; the outcomes as Parquet), the info and overhead records, the headline."""
    cap = CAPTION.format(preset=writer.preset)
    n_res = result.experiment.n_resamples
    writer.table("screening", result.screening, caption=f"{cap}: pass rate of each screened held-out problem, pooled "
                 f"over the bases ({result.info['screen']}); DeepConf runs on those with 0 < rate < 1")
    writer.table("pool", result.pool, caption=f"{cap}: the trace pools, per base and problem", float_format="%.6g")
    path = writer.dir / "outcomes.parquet"
    result.outcomes.to_parquet(path, index=False)
    writer.outputs.append(path.name)
    out = result.report()
    writer.table("curves", report.curves(out), caption=f"{cap}: accuracy and generated tokens per problem, per method "
                 f"and K (mean over bases and problems of the mean over {n_res} draws, 95 % interval over bases and "
                 "problems), and against majority@K (paired)", float_format="%.6g")
    writer.table("premise", report.premise(out), caption=f"{cap}: majority@K minus pass@1 (paired by base and "
                 "problem)", float_format="%.6g")
    online = [s for s in out.series() if s.startswith(("online_", "consensus_only"))]
    writer.table("savings", report.savings(out, online), caption=f"{cap}: online DeepConf and the two stops apart "
                 "against majority voting", float_format="%.6g")
    writer.table("keep_rule_parity", report.keep_rule_parity(out, (result.recipe.eta_low, result.recipe.eta_high),
                                                             result.max_budget),
                 caption=f"{cap}: offline filtering at K = {result.max_budget} under the floor rule (ours) and the "
                 "official code's percentile rule", float_format="%.6g")
    if len(result.live):
        writer.table("live_online", result.live, caption=f"{cap}: live online DeepConf (early stop inside the "
                     "decode loop) beside the replay of the same problem's pool", float_format="%.6g")
    writer.json("run_info", result.info)
    if result.overhead is not None:
        writer.json("overhead", result.overhead)
    writer.summary(headline(result))


def _blocks_of(info: dict[str, Any]) -> tuple[DeepConfRecipe, DeepConfExperiment]:
    """The two blocks a run recorded (fields a later version dropped are ignored)."""
    names = {f.name for f in fields(DeepConfExperiment)}
    return (parse(DeepConfRecipe, info["recipe"], "run_info.recipe"),
            parse(DeepConfExperiment, {k: v for k, v in info["experiment"].items() if k in names},
                  "run_info.experiment"))


def load(directory: str | Path) -> DeepConfRun:
    """A committed run's records (render mode)."""
    from falcon_h1r.results import read_json

    d = Path(directory)
    need = ["screening.csv", "pool.csv", "outcomes.parquet", "run_info.json"]
    missing = [n for n in need if not (d / n).exists()]
    if missing:
        raise FileNotFoundError(f"no committed DeepConf records in {d} (missing {missing}); run notebook 05 at "
                                "this preset on a machine that can compute it first")
    info = read_json(d / "run_info.json")
    if "experiment" not in info or "trace_tokens" not in info:
        raise FileNotFoundError(f"the DeepConf records in {d} were made by an earlier version of this section (no "
                                "per-base outcomes); run notebook 05 at this preset on a machine that can compute it")
    live = pd.read_csv(d / "live_online.csv") if (d / "live_online.csv").exists() else pd.DataFrame()
    # read the way records are made now (the paired median of the per-repeat step times: overhead_record)
    over = overhead_record(read_json(d / "overhead.json")) if (d / "overhead.json").exists() else None
    recipe, experiment = _blocks_of(info)
    return DeepConfRun(screening=pd.read_csv(d / "screening.csv"), pool=pd.read_csv(d / "pool.csv"),
                       outcomes=pd.read_parquet(d / "outcomes.parquet"), live=live, info=info, recipe=recipe,
                       experiment=experiment, overhead=over)


# ============================================================================== what the notebook shows
def methods_at_budget(run: DeepConfRun, curves: pd.DataFrame) -> pd.DataFrame:
    """Every method at K = the largest budget (online: that budget): accuracy, tokens per problem, traces and
    voters, and against majority@K, each with its interval."""
    cols = ["series", "acc", "acc_ci95", "tokens", "tokens_ci95", "traces", "voters", "acc_minus_majority",
            "acc_minus_majority_ci95", "token_saving_vs_majority", "token_saving_vs_majority_ci95"]
    at = curves[curves["K"] == run.max_budget]
    return at[[c for c in cols if c in at]].reset_index(drop=True)


def savings_notes(run: DeepConfRun, summary: dict[str, Any], source: str) -> list[str]:
    """One sentence per DeepConf variant at the largest budget, and one per stop, from the summary keys."""
    top = run.max_budget

    def pm(key: str, pct: bool = True) -> str:
        v, h = summary.get(key), summary.get(f"{key}_ci95")
        if v is None:
            return "n/a"
        fmt = (lambda x: f"{x:+.1%}") if pct else (lambda x: f"{x:+.3f}")
        text = fmt(v) + (f" ± {abs(h):.1%}" if pct and h is not None else f" ± {h:.3f}" if h is not None else "")
        return text + ("" if summary.get(f"{key}_informative") else " (not informative)")

    def equal_acc(v: str) -> str:
        key = f"deepconf_{v}_token_saving_at_equal_acc"
        if summary.get(key) is not None and summary.get(f"{key}_informative"):
            return pm(key)
        return f"not read here ({summary.get(f'{key}_reason') or 'no finite value'})"

    notes = []
    for v in ("low", "high"):
        notes.append(f"DeepConf-{v} at budget {top}: accuracy minus majority@{top} "
                     f"{pm(f'deepconf_{v}_minus_majority_acc', pct=False)}; tokens saved against majority@{top} "
                     f"{pm(f'deepconf_{v}_token_saving_vs_majority')} (the confidence stop alone "
                     f"{pm(f'deepconf_{v}_confidence_stop_token_saving')}, the consensus stop on top of it "
                     f"{pm(f'deepconf_{v}_consensus_extra_saving')}); at equal accuracy on majority's K curve: "
                     f"{equal_acc(v)} ({source}).")
    notes.append(f"The consensus stop alone (tau = {run.recipe.tau:g}, unweighted majority, no confidence stop): "
                 f"tokens saved {pm('consensus_stop_token_saving')}, accuracy minus majority@{top} "
                 f"{pm('consensus_stop_minus_majority_acc', pct=False)} ({source}).")
    return notes


def _pools_in_parallel(preset: str, seeds: Sequence[int], budget_s: float | None,
                       override_args: Sequence[str] = ()) -> int:
    """One ``--pools-only --base-seed S`` process per base, sharing the device; the combined exit status."""
    from falcon_h1r.sections.per_seed import combined_exit, run_per_seed

    budget = [] if budget_s is None else ["--budget-s", str(budget_s)]
    codes = {s: rc for s, (rc, _) in run_per_seed("falcon_h1r.sections.deepconf", preset, seeds,
                                                  seed_flag="--base-seed",
                                                  args=["--pools-only", *budget, *override_args]).items()}
    print(f"DeepConf pools, one process per base: exit {codes}", file=sys.stderr)
    return combined_exit(codes)


def main(argv: list[str] | None = None) -> int:
    """``--pools-only``: generate the preset's missing DeepConf pools within ``--budget-s`` (``--parallel``: one
    process per base). ``--records``: the section's records, computed without the notebook. ``--override
    KEY=VALUE`` (repeatable): a preset value for this run, as ``falcon-h1r reproduce --override``."""
    from falcon_h1r.config import load_preset, parse_overrides
    from falcon_h1r.sections.common import base_seeds

    ap = argparse.ArgumentParser(prog="python -m falcon_h1r.sections.deepconf", description=main.__doc__)
    ap.add_argument("--preset", required=True)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--pools-only", action="store_true", help="only generate the pools (the rest: notebook 05)")
    what.add_argument("--records", action="store_true", help="compute the section's records into "
                      "results/PRESET/05_deepconf (pools reused; no notebook: render it with falcon-h1r reproduce)")
    ap.add_argument("--budget-s", type=float, default=None, help="stop after the base that passes this many seconds")
    ap.add_argument("--parallel", action="store_true", help="with --pools-only: one process per base")
    ap.add_argument("--base-seed", type=int, action="append", default=None, metavar="SEED",
                    help="with --pools-only: this base's pool only (repeatable)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="a preset value (YAML)")
    args = ap.parse_args(argv)
    if args.records and (args.parallel or args.base_seed or args.budget_s is not None):
        ap.error("--records takes no --parallel, --base-seed or --budget-s (generate the pools first with "
                 "--pools-only)")
    if args.parallel and args.base_seed:
        ap.error("--parallel starts one process per base itself; give it no --base-seed")
    try:
        overrides = parse_overrides(args.override)
        preset = load_preset(args.preset, overrides)
        recipes(preset)
        seeds = base_seeds(preset)
        unknown = sorted(set(args.base_seed or []) - set(seeds))
        if unknown:
            raise RecipeError(f"--base-seed {unknown}: the {args.preset} preset's bases are eval.base_seeds "
                              f"{list(seeds)}")
    except (RecipeError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if args.records:
        from falcon_h1r.sections.common import open_section

        sec = open_section(args.preset, SECTION, overrides)
        if sec.mode != "compute":
            print(f"error: this machine cannot compute the {args.preset} preset (no usable CUDA GPU); --records "
                  "needs one", file=sys.stderr)
            return 2
        res = run(sec.cfg, writer=sec.writer)
        sec.writer.provenance()  # where the records were computed: a later render here keeps it as computed_run
        head = headline(res)
        shown = {k: head.get(k) for k in RECORDS_SHOWN if k in head}
        print(f"DeepConf records in {sec.writer.dir} ({time.perf_counter() - t0:.0f} s): {shown}", file=sys.stderr)
        return 0
    if args.parallel and len(seeds) > 1:
        from falcon_h1r.sections.per_seed import override_args

        return _pools_in_parallel(args.preset, seeds, args.budget_s, override_args(args.override))
    try:
        run(preset, pools_only=True, budget_s=args.budget_s, only_seeds=args.base_seed)
    except StageIncomplete as exc:
        print(f"incomplete after {time.perf_counter() - t0:.0f} s: {exc}", file=sys.stderr)
        return 3
    print(f"DeepConf pools complete ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


__all__ = ["SECTION", "DeepConfExperiment", "recipes", "DeepConfRun", "headline", "run", "write", "load",
           "pool_dir", "base_pools", "live_stop_counts", "methods_at_budget", "savings_notes", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
