"""Notebook 03's comparison of the online-sampling strategies for zero-advantage groups (paper §3): backfill with
the bounded generation cache, backfill without it (DAPO's dynamic sampling), reject (a variable batch) and
duplicate, at equal trained groups per step (reject and duplicate are capped at the batch size), in two regimes.

What is measured: generation calls per filled batch (``falcon_h1r.rollout_buffer.summarize``: calls / (unique
informative groups used / batch size)), per strategy and seed, over ``rl_experiments.strategy_steps`` batches; the
savings ``1 - backfill / other`` per seed, with a percentile bootstrap over seeds (``falcon_h1r.stats.paired_saving``,
many seeds, so the bootstrap is the protocol's choice). A strategy that fills no batch reports that
(``filled_batches`` 0, its cost None), never an infinite cost, and a saving against it is not informative.

How: the groups are replayed from each SFT base's measured pass rates (the k rollouts at T 0.6 / top-p 0.95 that
select the RL pool), one seed per replay, seed s on base s mod the number of bases
(:class:`falcon_h1r.rollout_buffer.ReplaySampler`). Why not training runs: the strategies differ only in what they
do with the groups a call returns, so the cost is a property of the stream of groups; replaying it costs no GPU
time, which buys many seeds, and every strategy of a seed sees the same groups (paired). What the replay leaves
out: the policy does not learn during it (the frozen-policy limit); the real math-only runs' backfill bookkeeping
is shown beside it as a check (notebook 03).

The two regimes:

- ``plentiful``: the math pool as the §3.1 rules select it from the base (partly solved problems: most groups
  informative), the start of RL;
- ``scarce``: the base's rated math candidates that it solved k/k or 0/k (their groups replay all right or all
  wrong) plus as many partly solved ones as give an expected informative share of
  ``rl_experiments.scarce_informative_frac``, as late in the paper's training when most prompts are solved
  every time.

Which comparison the paper's "about 30 % fewer generation calls" is: the paper credits the saving to the bounded
cache paired with backfill, so it is backfill with the cache against backfill without it (``vs_nocache``, the
claim tested in ``papers/claims.yaml``). Backfill against reject is also shown; with reject capped at the batch
size both use every informative group they get while informative groups are scarce, so they differ only where one
call holds more informative groups than a batch.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

from falcon_h1r.grpo import RLRecipe
from falcon_h1r.rollout_buffer import informative_probability, simulate_strategy
from falcon_h1r.stats import Estimate, paired_saving

REGIMES = ("plentiful", "scarce")
BASELINES = {"backfill_nocache": "nocache", "reject": "reject", "duplicate": "duplicate"}  # arm -> key suffix
ARM_LABELS = {"backfill": "backfill + bounded cache", "backfill_nocache": "backfill, no cache",
              "reject": "reject (variable batch)", "duplicate": "duplicate"}


def arm_settings(rl: RLRecipe, arm: str) -> tuple[str, int]:
    """(the rollout buffer's strategy, cache size) of one compared arm."""
    if arm == "backfill_nocache":
        return "backfill", 0
    return arm, rl.cache_size if arm == "backfill" else 0


def regime_pools(report: dict[str, Any], *, group_size: int, scarce_informative_frac: float,
                 seed: int) -> dict[str, dict[str, Any]]:
    """The two regimes' pools from one base's math pool report (:class:`falcon_h1r.sections.rl.PoolBuilder`:
    every rated candidate's correct count, and the ids the rules kept): ``{regime: {"ids", "rates",
    "expected_informative_frac", ...}}``; a regime that cannot be built from these rates is absent."""
    k = int(report["k"])
    rates = {pid: c / k for pid, c in report["rates"].items()}
    out: dict[str, dict[str, Any]] = {}

    def entry(ids: list[str]) -> dict[str, Any]:
        exp_inf = sum(informative_probability(rates[i], group_size) for i in ids) / len(ids)
        return {"ids": ids, "rates": {i: rates[i] for i in ids}, "n_problems": len(ids),
                "expected_informative_frac": exp_inf, "k": k}

    used = [i for i in report.get("used_ids", []) if i in rates]
    if used:
        out["plentiful"] = entry(used)
    extremes = sorted(i for i, c in report["rates"].items() if c in (0, k))
    partial = sorted(i for i, c in report["rates"].items() if 0 < c < k)
    random.Random(f"{seed}-scarce").shuffle(partial)
    if extremes and partial:
        mean_inf = sum(informative_probability(rates[i], group_size) for i in partial) / len(partial)
        t = scarce_informative_frac
        n_partial = len(partial) if mean_inf <= t else min(len(partial), max(1, round(t * len(extremes) / (mean_inf - t))))
        out["scarce"] = entry(extremes + partial[:n_partial])
        out["scarce"]["same_as_plentiful"] = set(out["scarce"]["ids"]) == set(used)  # too few partly solved ones
    return out


def compare_strategies(pool_rows: Sequence[dict[str, Any]], rl: RLRecipe, exp: Any, *,
                       progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every compared strategy, seed and regime on replayed outcomes: (one row per run, the regimes' record).

    ``pool_rows`` are the section's pool reports (one per base and domain, ``measured_on`` "SFT base"); seed s
    replays base s mod the number of bases. ``exp`` is the ``rl_experiments`` recipe."""
    from tqdm.auto import tqdm

    reports = {r["base"]: r for r in pool_rows if r["domain"] == "math" and r["measured_on"] == "SFT base"}
    if not reports:
        raise ValueError("no math pool measured against an SFT base: the strategy comparison replays its pass rates")
    bases = sorted(reports)
    regimes = {b: regime_pools(reports[b], group_size=rl.group_size,
                               scarce_informative_frac=exp.scarce_informative_frac, seed=b) for b in bases}
    rows = []
    total = len(REGIMES) * exp.strategy_seeds
    with tqdm(total=total, desc="sampling strategies (replay)", disable=not progress, leave=False) as bar:
        for regime in REGIMES:
            for s in range(exp.strategy_seeds):
                b = bases[s % len(bases)]
                reg = regimes[b].get(regime)
                bar.update(1)
                if reg is None:
                    continue
                pool = [{"id": i, "domain": "math"} for i in reg["ids"]]
                for arm in exp.strategies_compared:
                    strategy, cache = arm_settings(rl, arm)
                    res = simulate_strategy(strategy, pool, reg["rates"], group_size=rl.group_size,
                                            batch_prompts=rl.batch_prompts, gen_prompts_per_call=rl.gen_prompts_per_call,
                                            steps=exp.strategy_steps, cache_size=cache, cache_max_age=rl.cache_max_age,
                                            max_gen_calls=rl.max_gen_calls_per_step, seed=1000 * s + b)
                    rows.append({"regime": regime, "seed": s, "base": b, "strategy": arm, **res})
    record = {"bases": bases, "group_size": rl.group_size, "batch_prompts": rl.batch_prompts,
              "gen_prompts_per_call": rl.gen_prompts_per_call, "cache_size": rl.cache_size,
              "cache_max_age": rl.cache_max_age, "max_gen_calls_per_step": rl.max_gen_calls_per_step,
              "seeds": exp.strategy_seeds, "steps": exp.strategy_steps,
              "scarce_informative_frac_target": exp.scarce_informative_frac,
              "regimes": {str(b): {r: {k: v for k, v in reg.items() if k not in ("ids", "rates")}
                                   for r, reg in regimes[b].items()} for b in bases}}
    return rows, record


def _per_seed(rows: Sequence[dict[str, Any]], regime: str, arm: str) -> dict[int, float]:
    out = {}
    for r in rows:
        if r["regime"] == regime and r["strategy"] == arm:
            v = r.get("gen_calls_per_filled_batch")
            out[int(r["seed"])] = float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else math.nan
    return out


def saving_estimate(rows: Sequence[dict[str, Any]], regime: str, baseline: str, arm: str = "backfill") -> Estimate | None:
    """``1 - cost(arm) / cost(baseline)`` per seed (cost: generation calls per filled batch), paired by seed, with a
    percentile bootstrap over seeds; None when either arm did not run in this regime."""
    a, b = _per_seed(rows, regime, arm), _per_seed(rows, regime, baseline)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return paired_saving([a[s] for s in seeds], [b[s] for s in seeds], method="bootstrap", unit="seeds")


def strategy_estimates(rows: Sequence[dict[str, Any]]) -> dict[str, Estimate]:
    """Backfill's saving against every other arm that ran, per regime: ``{"<baseline>_<regime>": Estimate}``."""
    out = {}
    for regime in REGIMES:
        for arm, suffix in BASELINES.items():
            est = saving_estimate(rows, regime, arm)
            if est is not None:
                out[f"{suffix}_{regime}"] = est
    return out


__all__ = ["ARM_LABELS", "BASELINES", "REGIMES", "arm_settings", "compare_strategies", "regime_pools",
           "saving_estimate", "strategy_estimates"]
