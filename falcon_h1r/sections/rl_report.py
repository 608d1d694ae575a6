"""Notebook 03's tables and headline figures, read back from the section's records.

:func:`falcon_h1r.sections.rl.compute_records` writes the records (on a machine that can compute the
preset); everything here reads them (computed just now, or committed for the preset) and derives the
tables the notebook writes and ``summary.json``'s figures, so a render on a CPU gives the same tables as
the run that computed them. Each function says which library method or record its numbers come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from falcon_h1r import papers
from falcon_h1r.config import to_dict
from falcon_h1r.grpo import RLRecipe
from falcon_h1r.results import read_json
from falcon_h1r.sections.paired import paired_difference
from falcon_h1r.sections.rl import CURRICULA, PAPER_TABLE3_ROW, RLExperimentRecipe

DOMAINS = ["math", "code", "science"]
# Table 2's keys (papers/table2_rl_hparams.yaml) -> RLRecipe's fields
TABLE2_KNOBS = [("group_size", "group_size"), ("temperature", "temperature"), ("clip_ratio_low", "clip_eps_low"),
                ("clip_ratio_high", "clip_eps_high"), ("kl_coef", "kl_coef"), ("entropy_coef", "entropy_coef"),
                ("tis_cap", "tis_cap"), ("learning_rate", "lr"), ("lr_warmup_steps", "warmup_steps"),
                ("train_batch_size", "batch_prompts"), ("max_response_length_k", "max_new_tokens"),
                ("positive_sample_ce_weight", "ce_weight"), ("loss_aggregation", "loss_aggregation"),
                ("advantage", "advantage_std")]
STRATEGY_COLUMNS = ["strategy", "gen_calls", "groups_used", "gen_calls_per_filled_batch", "rollouts_per_filled_batch",
                    "informative_frac", "batch_groups_mean", "batch_groups_min", "evicted", "expired", "duplicated",
                    "mean_staleness", "is_ratio_max"]


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

    sft_eval: dict[str, Any]  # the SFT base's held-out pass@1 (falcon_h1r.evaluation.evaluate), pool sizes
    history: pd.DataFrame  # one row per GRPO step per curriculum (falcon_h1r.grpo.train_grpo)
    evals: pd.DataFrame  # held-out evaluations during the curricula
    stages: pd.DataFrame  # one row per curriculum stage
    pools: pd.DataFrame  # curation's pass-rate rules per stage pool
    strategies: pd.DataFrame  # one row per online-sampling strategy
    attacks: pd.DataFrame  # one row per sandbox attack (empty when the suite is off)
    attacks_summary: dict[str, Any]
    timings: dict[str, Any]


def read_records(section_dir: str | Path, preset_name: str) -> RLRecords:
    """The section's records under ``section_dir``; a clear error when this preset has none."""
    d = Path(section_dir)
    if not (d / "sft_eval.json").exists():
        raise FileNotFoundError(f"no {preset_name}-preset RL records in {d}: this preset's RL runs have not been "
                                f"computed and committed yet; run this notebook at preset {preset_name!r} on a GPU "
                                "(README)")
    return RLRecords(
        sft_eval=read_json(d / "sft_eval.json"),
        history=pd.read_json(d / "curricula_history.jsonl", lines=True),
        evals=pd.read_json(d / "curricula_evals.jsonl", lines=True),
        stages=pd.read_json(d / "curricula_stages.jsonl", lines=True),
        pools=pd.read_json(d / "pools.jsonl", lines=True),
        strategies=pd.read_csv(d / "strategies.csv"),
        attacks=pd.read_json(d / "attacks.jsonl", lines=True) if (d / "attacks.jsonl").exists() else pd.DataFrame(),
        attacks_summary=read_json(d / "attacks_summary.json") if (d / "attacks_summary.json").exists() else {},
        timings=read_json(d / "timings.json"))


# ============================================================================== online sampling
def gen_call_saving(rows: Sequence[dict[str, Any]], strategy: str = "backfill", baseline: str = "reject") -> float:
    """1 - (generation calls per filled batch of ``strategy``) / (the same of ``baseline``)."""
    by = {r["strategy"]: r for r in rows}
    if strategy not in by or baseline not in by:
        raise ValueError(f"need rows for {strategy!r} and {baseline!r}; have {sorted(by)}")
    return 1.0 - by[strategy]["gen_calls_per_filled_batch"] / by[baseline]["gen_calls_per_filled_batch"]


def strategy_savings(strategies: pd.DataFrame) -> dict[str, float]:
    """Backfill's :func:`gen_call_saving` against each other strategy that ran (the rollout buffer's bookkeeping)."""
    saving = {}
    rows = strategies.to_dict("records")
    names = set(strategies["strategy"])
    for other in ("reject", "backfill_nocache", "duplicate"):
        if "backfill" in names and other in names:
            saving[other] = gen_call_saving(rows, "backfill", other)
    return saving


# ============================================================================== Table 3
def table3_tables(evals: pd.DataFrame, sft_eval: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                                            pd.DataFrame]:
    """(the paper's Table 3 with its mean recomputed, ours best per curriculum, ours final, side by side).

    Like the paper's Table 3, "best" is the best held-out evaluation of each run (an optimistic selection
    on the same held-out set); "final" is the last checkpoint's.
    """
    best_rows = [{"run": "SFT baseline", **{d: sft_eval.get(f"pass1_{d}") for d in DOMAINS}}]
    final_rows = [{"run": "SFT baseline", **{d: sft_eval.get(f"pass1_{d}") for d in DOMAINS}}]
    for name in [c for c in CURRICULA if c in set(evals["curriculum"])]:
        e = evals[evals["curriculum"] == name]
        best_rows.append({"run": PAPER_TABLE3_ROW[name], **{d: e[f"pass1_{d}"].max() for d in DOMAINS}})
        final_rows.append({"run": PAPER_TABLE3_ROW[name], **{d: e[f"pass1_{d}"].iloc[-1] for d in DOMAINS}})
    ours_best = pd.DataFrame(best_rows)
    ours_final = pd.DataFrame(final_rows)
    t3 = papers.load("table3_rl_curricula").copy()
    t3["mean_of_3_recomputed"] = papers.rl_curriculum_means(t3).values
    side = t3.merge(ours_best.rename(columns={d: f"ours_{d}" for d in DOMAINS}), on="run", how="left")
    return t3, ours_best, ours_final, side


# ============================================================================== math-only RL against the SFT base
def sft_summary(sft_eval: dict[str, Any]) -> dict[str, Any]:
    """The SFT base's held-out pass@1 (math, all, per domain) as summary figures."""
    return {"sft_heldout_pass1": sft_eval.get("pass1_math"), "sft_heldout_pass1_all": sft_eval["pass1"],
            **{f"sft_heldout_pass1_{d}": sft_eval.get(f"pass1_{d}") for d in DOMAINS}}


def math_only_change(evals: pd.DataFrame, history: pd.DataFrame,
                     sft_eval: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """Held-out math pass@1 of the math-only run minus the SFT base's, paired by problem with a 95 % interval,
    at the last evaluation (summary figures) and at every evaluation (the trajectory table, beside the training
    reward since the previous evaluation: on all rollouts and on prompts never generated before). None when
    the math-only curriculum did not run."""
    if "math_only" not in set(evals["curriculum"]):
        return None
    mo = evals[evals["curriculum"] == "math_only"]
    last = mo.iloc[-1]
    math_ids = [k for k in sft_eval["per_problem"] if k.startswith("math-")]
    diff, ci, n = paired_difference(last["per_problem"], sft_eval["per_problem"], math_ids)
    h = history[history["curriculum"] == "math_only"]
    summary = {"math_only_heldout_pass1": last["pass1_math"], "math_only_heldout_pass1_best": mo["pass1_math"].max(),
               "math_only_minus_sft_math": diff, "math_only_minus_sft_math_ci95": ci,
               "math_only_minus_sft_math_n": n,
               "math_only_reward_first": float(h["reward_mean"].iloc[0]),
               "math_only_reward_last": float(h["reward_mean"].iloc[-1])}
    traj, prev = [], 0
    for _, e in mo.iterrows():
        d_, ci_, n_ = paired_difference(e["per_problem"], sft_eval["per_problem"], math_ids)
        win = h[(h["global_step"] > prev) & (h["global_step"] <= e["global_step"])]
        row = {"step": int(e["global_step"]), "pass1_math": e["pass1_math"], "minus_sft": d_, "ci95": ci_, "n": n_,
               "train_reward": win["reward_mean"].mean()}
        if "reward_first_seen" in win.columns and win["first_seen_prompts"].sum() > 0:
            w = win.dropna(subset=["reward_first_seen"])
            row["train_reward_first_seen"] = float((w["reward_first_seen"] * w["first_seen_prompts"]).sum()
                                                   / w["first_seen_prompts"].sum())
            row["first_seen_prompts"] = int(win["first_seen_prompts"].sum())
        traj.append(row)
        prev = e["global_step"]
    return summary, pd.DataFrame(traj)


# ============================================================================== headline figures
def curricula_summary(ours_best: pd.DataFrame, ours_final: pd.DataFrame) -> dict[str, Any]:
    """``curriculum_<name>_<domain>_best`` and ``..._final`` from :func:`table3_tables`' rows."""
    summary = {}
    for table, suffix in ((ours_best, "best"), (ours_final, "final")):
        for _, row in table.iloc[1:].iterrows():
            key = [k for k, v in PAPER_TABLE3_ROW.items() if v == row["run"]][0]
            for d in DOMAINS:
                summary[f"curriculum_{key}_{d}_{suffix}"] = row[d]
    return summary


def savings_summary(saving: dict[str, float]) -> dict[str, float]:
    """``backfill_gen_call_saving_vs_<baseline>`` from :func:`strategy_savings`."""
    names = {"reject": "reject", "backfill_nocache": "nocache", "duplicate": "duplicate"}
    return {f"backfill_gen_call_saving_vs_{names[k]}": saving[k] for k in names if k in saving}


def closing_summary(summary: dict[str, Any], records: RLRecords) -> dict[str, float | None]:
    """The summary with the attack suite's counts and the compute time added, every value a float (or None)."""
    summary = {**summary, "sandbox_attacks_tried": records.attacks_summary.get("attacks_tried", 0),
               "sandbox_escapes": records.attacks_summary.get("escapes", 0),
               "rl_compute_s": records.timings["total_s"]}
    return {k: (None if v is None else float(v)) for k, v in summary.items()}


# ============================================================================== the longer math-only run
LONG_RUN = "math_only_long"
LONG_SUMMARY_KEYS = ("sft_heldout_pass1", "math_only_heldout_pass1", "math_only_minus_sft_math",
                     "math_only_minus_sft_math_ci95", "math_only_minus_sft_math_n")


@dataclass
class LongRun:
    """The record set of one longer math-only run of this notebook, kept beside its records."""

    summary: dict[str, Any]  # its summary.json
    trajectory: pd.DataFrame  # its math_only_trajectory.csv
    recipe_changes: dict[str, tuple[Any, Any]]  # field -> (this preset's value, the long run's value)

    def headline(self) -> dict[str, Any]:
        """``long_<figure>`` for this notebook's summary."""
        out = {f"long_{k}": self.summary[k] for k in LONG_SUMMARY_KEYS}
        out["long_steps"] = int(self.trajectory["step"].max())
        return out


def read_long_run(section_dir: str | Path, rl: RLRecipe, exp: RLExperimentRecipe) -> LongRun | None:
    """``<section>/math_only_long/`` (made with ``scripts/gpu_rl_probe.sh``), or None when absent.

    Its recipe is compared field by field with this preset's ``rl`` and ``rl_experiments`` blocks; its
    provenance may predate the split of the two (every field then sat in ``rl``)."""
    d = Path(section_dir) / LONG_RUN
    if not ((d / "summary.json").exists() and (d / "math_only_trajectory.csv").exists()):
        return None
    params = read_json(d / "provenance.json")["parameters"]
    theirs = {**params.get("rl", {}), **params.get("rl_experiments", {})}
    ours = {**to_dict(rl), **to_dict(exp)}
    changes = {k: (v, theirs[k]) for k, v in ours.items() if k in theirs and theirs[k] != v}
    return LongRun(read_json(d / "summary.json"), pd.read_csv(d / "math_only_trajectory.csv"), changes)


__all__ = ["DOMAINS", "LONG_RUN", "LongRun", "RLRecords", "STRATEGY_COLUMNS", "TABLE2_KNOBS", "closing_summary",
           "curricula_summary", "gen_call_saving", "math_only_change", "read_long_run", "read_records",
           "recipe_vs_paper", "savings_summary", "sft_summary", "strategy_savings", "table3_tables"]
