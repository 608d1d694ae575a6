"""Notebook 03's tables and summary figures, read back from the section's records.

:func:`falcon_h1r.sections.rl.compute_records` writes the records (on a machine that can compute the preset);
everything here reads them (computed just now, or committed for the preset) and derives the tables and the
``summary.json`` figures, so a render on a CPU gives the same numbers as the run that computed them. Every
compared number goes through :mod:`falcon_h1r.stats`: held-out pass@1 as ``[bases, problems]`` arrays (RL seed
i is base i, so ``unit="bases"`` and the interval covers retraining), paired by base and problem; the training
dynamics as one number per base; the strategy savings per replay seed with a bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from falcon_h1r import papers
from falcon_h1r.grpo import RLRecipe
from falcon_h1r.results import read_json
from falcon_h1r.sections.rl import CURRICULA, DOMAINS, PAPER_TABLE3_ROW
from falcon_h1r.sections.rl_strategies import ARM_LABELS, REGIMES, strategy_estimates
from falcon_h1r.stats import Estimate, arm_mean, paired_difference, paired_ratio, summary_keys

# Table 2's keys (papers/table2_rl_hparams.yaml) -> RLRecipe's fields
TABLE2_KNOBS = [("group_size", "group_size"), ("temperature", "temperature"), ("clip_ratio_low", "clip_eps_low"),
                ("clip_ratio_high", "clip_eps_high"), ("kl_coef", "kl_coef"), ("entropy_coef", "entropy_coef"),
                ("tis_cap", "tis_cap"), ("learning_rate", "lr"), ("lr_warmup_steps", "warmup_steps"),
                ("train_batch_size", "batch_prompts"), ("max_response_length_k", "max_new_tokens"),
                ("positive_sample_ce_weight", "ce_weight"), ("loss_aggregation", "loss_aggregation"),
                ("advantage", "advantage_std")]
PAPER_COLUMNS = {"math": "aime25", "code": "lcb_v6", "science": "gpqa_d"}  # papers/table3_rl_curricula
DYNAMICS = [("reward_mean", "mean reward"), ("response_len_mean", "response length (tokens)"),
            ("entropy", "entropy (nats)"), ("clip_frac", "clip fraction"), ("is_ratio_mean", "IS ratio mean"),
            ("is_ratio_max", "IS ratio max")]


def recipe_vs_paper(rl: RLRecipe, preset_name: str) -> pd.DataFrame:
    """The paper's Table 2 (``papers/table2_rl_hparams.yaml``; "not given" where it gives no value) beside
    this preset's ``rl`` block."""
    t2 = papers.load("table2_rl_hparams")

    def paper_value(key: str) -> str:
        v = t2.get(key)
        return "not given" if v is None else (f"{v}K tokens" if key.endswith("_k") else str(v))

    return pd.DataFrame([{"knob": ours, "paper (Table 2)": paper_value(theirs),
                          f"ours ({preset_name})": str(getattr(rl, ours))} for theirs, ours in TABLE2_KNOBS])


# ============================================================================== the records
@dataclass
class RLRecords:
    """What :func:`falcon_h1r.sections.rl.compute_records` wrote, read back."""

    sft_eval: dict[str, Any]  # per base: the SFT base's held-out per-problem pass@1, pre-SFT accuracy, pool sizes
    history: pd.DataFrame  # one row per GRPO step per base and curriculum (falcon_h1r.grpo.train_grpo)
    evals: pd.DataFrame  # held-out evaluations during and after the curricula
    stages: pd.DataFrame  # one row per base, curriculum and stage
    pools: pd.DataFrame  # curation's pass-rate rules per base and stage pool
    strategy_runs: pd.DataFrame  # one row per regime, replay seed and strategy
    strategy_regimes: dict[str, Any]
    attacks: pd.DataFrame  # one row per sandbox attack (empty when the suite is off)
    attacks_summary: dict[str, Any]
    timings: dict[str, Any]

    @property
    def bases(self) -> list[int]:
        return [int(b) for b in self.sft_eval["bases"] if str(b) in self.sft_eval["per_base"]]


def read_records(section_dir: str | Path, preset_name: str) -> RLRecords:
    """The section's records under ``section_dir``; a clear error when this preset has none (or old ones)."""
    d = Path(section_dir)
    if not (d / "sft_eval.json").exists() or "per_base" not in read_json(d / "sft_eval.json"):
        raise FileNotFoundError(f"no {preset_name}-preset RL records of this version in {d}: run notebook 03 at preset "
                                f"{preset_name!r} on a machine that can compute it (README), then commit its records")

    def jsonl(name: str) -> pd.DataFrame:
        p = d / f"{name}.jsonl"
        return pd.read_json(p, lines=True) if p.exists() and p.stat().st_size else pd.DataFrame()

    return RLRecords(
        sft_eval=read_json(d / "sft_eval.json"), history=jsonl("curricula_history"), evals=jsonl("curricula_evals"),
        stages=jsonl("curricula_stages"), pools=jsonl("pools"), strategy_runs=jsonl("strategy_runs"),
        strategy_regimes=read_json(d / "strategy_regimes.json") if (d / "strategy_regimes.json").exists() else {},
        attacks=jsonl("attacks"),
        attacks_summary=read_json(d / "attacks_summary.json") if (d / "attacks_summary.json").exists() else {},
        timings=read_json(d / "timings.json"))


# ============================================================================== held-out outcomes
def final_eval(records: RLRecords, curriculum: str, base: int) -> dict[str, Any] | None:
    """The last evaluation of a curriculum's run from one base (its final checkpoint)."""
    e = records.evals
    if e.empty:
        return None
    e = e[(e["curriculum"] == curriculum) & (e["base"] == base)]
    return None if e.empty else e.sort_values("global_step").iloc[-1].to_dict()


def outcomes(records: RLRecords, arm: str, domains: Sequence[str]) -> np.ndarray | None:
    """``[bases, problems]`` held-out pass@1 of ``arm`` ("sft" or a curriculum's final checkpoint) on the held-out
    problems of ``domains``, in the same problem order for every arm; None when the arm did not run from every base."""
    ids = [i for d in domains for i in records.sft_eval["heldout_ids"][d]]
    rows = []
    for b in records.bases:
        per = records.sft_eval["per_base"][str(b)]["per_problem"] if arm == "sft" else \
            (final_eval(records, arm, b) or {}).get("per_problem")
        if not per:
            return None
        rows.append([float(per[i]) for i in ids])
    return np.array(rows, dtype=float) if ids else None


def heldout_estimates(records: RLRecords) -> dict[str, Estimate]:
    """Every held-out figure the notebook and the claims read, each with its interval over bases:

    ``sft_heldout_pass1_<d>`` and ``curriculum_<c>_<d>`` (and ``_mean3``, the mean of the three domains: with equal
    problems per domain, the mean over all held-out problems); ``<c>_minus_sft_<d>`` (``math_only_minus_sft_math`` is
    the headline); ``code_only_minus_math_only_<d>``; ``math_only_minus_<c>_mean3``; ``<c>_minus_math_only_mean3``;
    ``sft_gain_minus_rl_gain_math`` ((SFT - the untrained start) - (math-only RL - SFT), per problem, with the
    untrained model's held-out greedy accuracy recorded when the base was trained as the start)."""
    out: dict[str, Estimate] = {}
    groups = {**{d: [d] for d in DOMAINS}, "mean3": list(DOMAINS)}
    arms = ["sft"] + [c for c in CURRICULA if outcomes(records, c, ["math"]) is not None]
    data = {(arm, g): outcomes(records, arm, doms) for arm in arms for g, doms in groups.items()}
    for (arm, g), x in data.items():
        if x is not None:
            out[f"sft_heldout_pass1_{g}" if arm == "sft" else f"curriculum_{arm}_{g}"] = arm_mean(x, unit="bases")
    for c in arms[1:]:
        for g in groups:
            out[f"{c}_minus_sft_{g}"] = paired_difference(data[(c, g)], data[("sft", g)], unit="bases")
    if "math_only" in arms:
        for c in arms[1:]:
            if c == "math_only":
                continue
            for g in groups:
                out[f"{c}_minus_math_only_{g}"] = paired_difference(data[(c, g)], data[("math_only", g)], unit="bases")
            out[f"math_only_minus_{c}_mean3"] = paired_difference(data[("math_only", "mean3")], data[(c, "mean3")],
                                                                  unit="bases")
        pre = np.array([[float(records.sft_eval["per_base"][str(b)]["pre_sft_greedy"].get("math", 0.0))]
                        for b in records.bases])
        sft = data[("sft", "math")]
        out["sft_gain_minus_rl_gain_math"] = paired_difference(2 * sft - pre, data[("math_only", "math")], unit="bases")
    return out


# ============================================================================== training dynamics
def _window_means(h: pd.DataFrame, col: str) -> tuple[float, float]:
    """Mean of ``col`` over the first and the last tenth of a run's steps (at least one step each), over the
    steps that generated rollouts (a step served from the cache alone has no reward of its own)."""
    h = h.sort_values("global_step")
    if col in ("reward_mean", "response_len_mean"):
        h = h[h["gen_calls"] > 0]
    v = h[col].astype(float).to_numpy()
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan")
    w = max(1, len(v) // 10)
    return float(v[:w].mean()), float(v[-w:].mean())


def dynamics_estimates(records: RLRecords, curriculum: str = "math_only") -> tuple[dict[str, Estimate], dict[str, Any]]:
    """Fig. 6's trends in the math-only runs, one number per base: (estimates, plain measurements).

    Estimates: ``math_only_reward_last_minus_first``, ``math_only_entropy_last_over_first`` (a ratio per base),
    ``math_only_response_tokens_last_minus_first``, ``math_only_response_tokens_last``. Measurements:
    ``math_only_clip_fraction_max`` (largest per-step clip fraction over every step and base),
    ``rl_response_cap_hit_fraction`` (share of the run's responses that hit the length cap),
    ``math_only_is_ratio_max``."""
    h = records.history
    if h.empty or curriculum not in set(h["curriculum"]):
        return {}, {}
    h = h[(h["curriculum"] == curriculum) & (h["stage"] == 1)].copy()
    for col in ("entropy", "clip_frac", "is_ratio_max"):  # absent when no step had a group to train on
        if col not in h.columns:
            h[col] = np.nan
    first, last = {}, {}
    for col in ("reward_mean", "entropy", "response_len_mean"):
        pairs = [_window_means(h[h["base"] == b], col) for b in records.bases if (h["base"] == b).any()]
        first[col] = np.array([p[0] for p in pairs])
        last[col] = np.array([p[1] for p in pairs])
    est = {"math_only_reward_last_minus_first": arm_mean(last["reward_mean"] - first["reward_mean"], unit="bases"),
           "math_only_entropy_last_over_first": paired_ratio(last["entropy"], first["entropy"], unit="bases"),
           "math_only_response_tokens_last_minus_first":
               arm_mean(last["response_len_mean"] - first["response_len_mean"], unit="bases"),
           "math_only_response_tokens_last": arm_mean(last["response_len_mean"], unit="bases")}
    gen = h[h["gen_calls"] > 0]
    plain = {"math_only_clip_fraction_max": _finite(float(h["clip_frac"].max())),
             "rl_response_cap_hit_fraction": float((gen["truncated_frac"] * gen["rollouts_generated"]).sum()
                                                   / max(1.0, gen["rollouts_generated"].sum())),
             "math_only_is_ratio_max": _finite(float(h["is_ratio_max"].max())), "math_only_steps": int(h["step"].max())}
    return est, plain


def per_step_band(history: pd.DataFrame, curriculum: str, col: str) -> pd.DataFrame:
    """Per step of one curriculum: the mean of ``col`` over bases and its 95 % interval over bases
    (``stats.arm_mean`` on one value per base; no interval with one base)."""
    h = history[history["curriculum"] == curriculum]
    rows = []
    for step, g in h.groupby("global_step"):
        v = g[col].astype(float).to_numpy()
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        e = arm_mean(v, unit="bases")
        rows.append({"step": int(step), "mean": e.mean, "low": _finite(e.low), "high": _finite(e.high),
                     "n_bases": len(v)})
    return pd.DataFrame(rows)


def heldout_trajectory(records: RLRecords, curriculum: str = "math_only") -> pd.DataFrame:
    """Held-out math pass@1 of the math-only runs at each evaluation, minus the SFT base's (paired by base and
    problem, interval over bases), beside the training reward since the previous evaluation."""
    e = records.evals
    if e.empty or curriculum not in set(e["curriculum"]):
        return pd.DataFrame()
    e = e[e["curriculum"] == curriculum]
    ids = records.sft_eval["heldout_ids"]["math"]
    sft = outcomes(records, "sft", ["math"])
    h = records.history[records.history["curriculum"] == curriculum]
    rows, prev = [], 0
    for step in sorted(set(e["global_step"])):
        at = e[e["global_step"] == step]
        if set(at["base"]) != set(records.bases):
            continue
        x = np.array([[float(at[at["base"] == b].iloc[0]["per_problem"][i]) for i in ids] for b in records.bases])
        d = paired_difference(x, sft, unit="bases")
        win = h[(h["global_step"] > prev) & (h["global_step"] <= step)]
        rows.append({"step": int(step), "pass1_math": float(x.mean()), "minus_sft": d.mean, "ci95": _finite(d.ci95),
                     "low": _finite(d.low), "high": _finite(d.high), "train_reward": float(win["reward_mean"].mean())})
        prev = step
    return pd.DataFrame(rows)


# ============================================================================== Table 3
def table3_side_by_side(est: dict[str, Estimate]) -> pd.DataFrame:
    """The paper's Table 3 (best value per run, %, papers/table3_rl_curricula) beside ours (held-out pass@1 of each
    curriculum's final checkpoint, mean over bases with its 95 % interval)."""
    t3 = papers.load("table3_rl_curricula").copy()
    t3["mean_of_3"] = papers.rl_curriculum_means(t3).values
    rows = []
    for _, r in t3.iterrows():
        key = "sft" if r["run"] == "SFT baseline" else next((k for k, v in PAPER_TABLE3_ROW.items() if v == r["run"]), None)
        row = {"run": r["run"], **{f"paper_{PAPER_COLUMNS[d]}": r[PAPER_COLUMNS[d]] for d in DOMAINS},
               "paper_mean3": round(float(r["mean_of_3"]), 2)}
        for g in (*DOMAINS, "mean3"):
            e = est.get(f"sft_heldout_pass1_{g}" if key == "sft" else f"curriculum_{key}_{g}")
            row[f"ours_{g}"] = _finite(e.mean) if e is not None else None
            row[f"ours_{g}_ci95"] = _finite(e.ci95) if e is not None else None  # None: no interval (one base)
        rows.append(row)
    return pd.DataFrame(rows)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def differences_table(est: dict[str, Estimate]) -> pd.DataFrame:
    """Every paired difference the notebook shows, with its interval, whether it excludes 0 and whether it is
    informative (the protocol's flag and reason)."""
    rows = []
    for k, e in est.items():
        if "_minus_" in k:
            rows.append({"figure": k, "value": _finite(e.mean), "ci95": _finite(e.ci95), "low": _finite(e.low),
                         "high": _finite(e.high),
                         "bases": e.n_seeds, "problems": e.n_problems, "excludes_0": e.excludes_zero(),
                         "informative": e.informative, "reason": e.reason})
    return pd.DataFrame(rows)


# ============================================================================== pools and strategies
def pool_figures(pools: pd.DataFrame) -> dict[str, Any]:
    """``rl_pool_pass_rate_inside_fraction_<d>`` (share of the problems each first-stage pool trains on with
    0 < pass < k/k, over every base) and ``rl_pool_size_<d>`` (problems per base, mean), per domain measured
    against the SFT bases."""
    out: dict[str, Any] = {}
    if pools.empty:
        return out
    base_rows = pools[pools["measured_on"] == "SFT base"]
    for d, g in base_rows.groupby("domain"):
        used = float(g["used"].sum())
        out[f"rl_pool_pass_rate_inside_fraction_{d}"] = float(g["inside_used"].sum()) / used if used else None
        out[f"rl_pool_size_{d}"] = float(g["used"].mean())
        out[f"rl_pool_fallback_{d}"] = int(g["fallback_all_rated"].astype(bool).sum())
    return out


def strategy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per regime and strategy: seeds, mean generation calls per filled batch (and how many seeds filled no
    batch), the informative share, the mean batch, the waste (evicted, expired, dropped over the cap)."""
    if runs.empty:
        return pd.DataFrame()
    rows = []
    for (regime, arm), g in runs.groupby(["regime", "strategy"], sort=False):
        cost = pd.to_numeric(g["gen_calls_per_filled_batch"], errors="coerce")
        rows.append({"regime": regime, "strategy": arm, "label": ARM_LABELS.get(arm, arm), "seeds": len(g),
                     "seeds_filling_no_batch": int(g["filled_no_batch"].astype(bool).sum()),
                     "gen_calls_per_filled_batch": float(cost.mean()) if cost.notna().any() else None,
                     "gen_calls_per_step": float((g["gen_calls"] / g["steps"]).mean()),
                     "filled_batches_per_step": float((g["filled_batches"] / g["steps"]).mean()),
                     "informative_frac": float(g["informative_frac"].mean()),
                     "batch_groups_mean": float(g["batch_groups_mean"].mean()),
                     "evicted": float(g["evicted"].mean()), "expired": float(g["expired"].mean()),
                     "overflow_dropped": float(g["overflow_dropped"].mean())})
    return pd.DataFrame(rows)


def strategy_summary(runs: pd.DataFrame) -> tuple[dict[str, Estimate], pd.DataFrame]:
    """(summary estimates, the savings table). Keys ``backfill_gen_call_saving_vs_<baseline>_<regime>`` for every
    regime, and ``backfill_gen_call_saving_vs_<baseline>`` (no suffix) = the plentiful regime: the math pool as the
    §3.1 rules select it, the one the RL runs train on."""
    if runs.empty:
        return {}, pd.DataFrame()
    est = strategy_estimates(runs.to_dict("records"))
    out, rows = {}, []
    for key, e in est.items():
        baseline, regime = key.rsplit("_", 1)
        out[f"backfill_gen_call_saving_vs_{key}"] = e
        if regime == "plentiful":
            out[f"backfill_gen_call_saving_vs_{baseline}"] = e
        rows.append({"regime": regime, "backfill vs": baseline, "saving": _finite(e.mean), "ci95_low": _finite(e.low),
                     "ci95_high": _finite(e.high), "seeds": e.n_seeds, "informative": e.informative, "reason": e.reason})
    return out, pd.DataFrame(rows)


def replay_vs_training(records: RLRecords) -> pd.DataFrame:
    """Backfill's generation calls per filled batch on the plentiful regime, replayed (frozen policy) beside what
    the real math-only runs measured while training on the same pool (per base)."""
    runs, st = records.strategy_runs, records.stages
    if runs.empty or st.empty:
        return pd.DataFrame()
    rows = []
    for b in records.bases:
        rep = runs[(runs["regime"] == "plentiful") & (runs["strategy"] == "backfill") & (runs["base"] == b)]
        real = st[(st["curriculum"] == "math_only") & (st["base"] == b) & (st["stage"] == 1)]
        if rep.empty or real.empty:
            continue
        rows.append({"base": b, "replay_gen_calls_per_filled_batch": float(pd.to_numeric(
            rep["gen_calls_per_filled_batch"], errors="coerce").mean()),
            "replay_informative_frac": float(rep["informative_frac"].mean()),
            "training_gen_calls_per_filled_batch": real.iloc[0].get("sampler_gen_calls_per_filled_batch"),
            "training_informative_frac": real.iloc[0].get("sampler_informative_frac")})
    return pd.DataFrame(rows)


# ============================================================================== the summary
# Paired differences written to summary.json (every one is in the notebook's paired_differences table): the
# math-only run against the SFT base per domain, science-only on science, and the comparisons Table 3's findings rest on.
SUMMARY_DIFFERENCES = ("math_only_minus_sft_math", "math_only_minus_sft_code", "math_only_minus_sft_science",
                       "math_only_minus_sft_mean3", "science_only_minus_sft_science", "code_only_minus_sft_code",
                       "code_only_minus_math_only_code", "code_only_minus_math_only_math",
                       "math_only_minus_code_only_mean3", "math_only_minus_science_only_mean3",
                       "math_only_minus_math_code_mixed_mean3", "math_only_minus_math_then_code_mean3",
                       "math_then_code_minus_math_only_mean3", "math_code_mixed_minus_math_only_mean3",
                       "math_then_code_minus_math_only_code", "sft_gain_minus_rl_gain_math")


def summary_figures(records: RLRecords, rl: RLRecipe) -> tuple[dict[str, Any], dict[str, Estimate]]:
    """Every ``summary.json`` figure of notebook 03: (flat summary, every estimate computed). The summary holds the
    arm means, :data:`SUMMARY_DIFFERENCES`, the dynamics and the strategy savings, each with its protocol keys."""
    held = heldout_estimates(records)
    dyn, dyn_plain = dynamics_estimates(records)
    strat, _ = strategy_summary(records.strategy_runs)
    est = {**held, **dyn, **strat}
    shown = {k: e for k, e in est.items() if k not in held or "_minus_" not in k or k in SUMMARY_DIFFERENCES}
    summary: dict[str, Any] = summary_keys(shown)
    summary.update(dyn_plain)
    summary.update(pool_figures(records.pools))
    runs = records.strategy_runs
    for regime in REGIMES:  # the informative share the replay met in each regime (what makes it plentiful or scarce)
        r = runs[(runs["regime"] == regime) & (runs["strategy"] == "backfill")] if not runs.empty else runs
        if len(r):
            summary[f"strategy_{regime}_informative_frac"] = float(r["informative_frac"].mean())
    summary.update({"rl_seeds": len(records.bases), "rl_max_response_tokens": rl.max_new_tokens,
                    "strategy_seeds": int(records.strategy_regimes.get("seeds", 0)),
                    "sandbox_attacks_tried": records.attacks_summary.get("attacks_tried", 0),
                    "sandbox_escapes": records.attacks_summary.get("escapes", 0),
                    # every unit's wall time summed over the pieces and processes that computed it (resumable runs;
                    # processes sharing a GPU overlap, so this is process time), else the one pass's wall time
                    "rl_compute_s": records.timings.get("units_wall_s_sum", records.timings.get("total_s"))})
    return summary, est


def claim_rows(preset: str, section: str, summary: dict[str, Any]) -> pd.DataFrame:
    """This section's claims scoreboard rows, computed from ``summary`` (what the notebook has just written, even
    inside the CLI's staging copy) and the other sections' committed summaries."""
    from falcon_h1r import claims as claims_lib
    from falcon_h1r.sections.scoreboard import SECTION_COLUMNS, load_summaries

    summaries = {**load_summaries(preset), section: summary}
    rows = [r for r in claims_lib.evaluate(claims_lib.load_claims(), summaries) if r["section"] == section]
    return pd.DataFrame([{c: r[c] for c in SECTION_COLUMNS} for r in rows], columns=list(SECTION_COLUMNS))


__all__ = ["DYNAMICS", "PAPER_COLUMNS", "RLRecords", "SUMMARY_DIFFERENCES", "TABLE2_KNOBS", "claim_rows", "differences_table",
           "dynamics_estimates", "final_eval", "heldout_estimates", "heldout_trajectory", "outcomes", "per_step_band",
           "pool_figures", "read_records", "recipe_vs_paper", "replay_vs_training", "strategy_summary",
           "strategy_table", "summary_figures", "table3_side_by_side", "REGIMES"]
