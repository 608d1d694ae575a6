# %% [markdown]
# # 03 · GRPO reinforcement learning and domain curricula (paper §3)
#
# The paper's RL recipe (Table 2), curriculum results (Table 3), online-sampling finding and training dynamics
# (Fig. 6), from `papers/`, beside ours: GRPO with the paper's modifications (`falcon_h1r.grpo`: clip-higher, no KL
# and no reference model, truncated importance sampling between the sampler's and the trainer's log-probs, an extra
# CE loss on correct samples), the online-sampling strategies for zero-advantage groups (`falcon_h1r.rollout_buffer`),
# verifiable rewards (`falcon_h1r.rewards`: tiered math, code in the hardened sandbox, numeric science, a format
# penalty) and RL pools chosen by the paper's §3.1 pass-rate rules (`falcon_h1r.curation`).
# **At the tiny and small presets every "ours" number is about synthetic tasks and models trained from scratch,
# not the paper's benchmarks.** RL seed i starts from the preset's i-th independently trained SFT base
# (`eval.base_seeds`), so every interval below is over bases: it covers retraining the base as well as the RL run.
#
# Where each number is computed (this notebook -> the section function -> the library method):
#
# | numbers | section function | library method |
# |---|---|---|
# | every record (pools, held-out pass@1, curricula, strategies, attacks) | `sections.rl.compute_records` | below |
# | RL pools per base, pass-rate histograms | `sections.rl.PoolBuilder` | `curation.estimate_pass_rates`, `curation.select_rl_pool` |
# | held-out pass@1 (SFT base, every RL checkpoint) | `sections.rl.Measurer` | `evaluation.evaluate` |
# | training dynamics, rewards, clip and IS statistics | `sections.rl.run_curriculum` | `grpo.train_grpo` (`grpo.policy_loss`, `rewards.RewardPool`) |
# | Table 3 beside ours, paired differences, intervals | `sections.rl_report.heldout_estimates`, `table3_side_by_side` | `stats.arm_mean`, `stats.paired_difference` |
# | dynamics trends (reward, entropy, length, clip) | `sections.rl_report.dynamics_estimates` | `stats.arm_mean`, `stats.paired_ratio` |
# | generation calls per filled batch, savings | `sections.rl_strategies.compare_strategies`, `sections.rl_report.strategy_summary` | `rollout_buffer.simulate_strategy`, `stats.paired_saving` |
# | sandbox attacks in a training step | `sections.rl_attacks.attack_training_step` | `sandbox.ATTACKS`, `grpo.grpo_update` |
# | Table 2 beside ours | `sections.rl_report.recipe_vs_paper` | `papers.load` |
# | claim statuses | `sections.rl_report.claim_rows` | `claims.evaluate` (rules in `papers/claims.yaml`) |

# %% tags=["parameters"]
preset = "tiny"
overrides = {}

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from falcon_h1r import papers
from falcon_h1r.config import to_dict
from falcon_h1r.sections import rl_report as R
from falcon_h1r.sections.common import open_section
from falcon_h1r.sections.rl import CURRICULA, DOMAINS, PAPER_TABLE3_ROW, SECTION, compute_records, load_recipes, ours_label

sec = open_section(preset, SECTION, overrides)
cfg, mode, writer = sec.cfg, sec.mode, sec.writer
rl, exp = load_recipes(cfg)
OURS = ours_label(preset)


def pm(x, ci, digits=3):
    """``0.412 ± 0.031``; ``n/a`` for a missing value, no ± where there is no interval (one base)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" + (f" ± {ci:.{digits}f}" if ci is not None and math.isfinite(ci) else " (no interval)")


def yerr(lows, highs, means):
    """Matplotlib error bars from interval ends (zero length where there is no interval)."""
    lo = [m - l if l is not None and math.isfinite(l) else 0.0 for m, l in zip(means, lows)]
    hi = [h - m if h is not None and math.isfinite(h) else 0.0 for m, h in zip(means, highs)]
    return np.array([lo, hi])


display(Markdown(f"Preset **{preset}**: this run will **{mode}** its results "
                 f"({'training now' if mode == 'compute' else 'rendering the committed records in ' + str(writer.dir)})."))

# %% [markdown]
# ## The paper's GRPO setup (Table 2) beside this preset's recipe
# Every trainer knob is an explicit field of the `rl` block of the preset (`falcon_h1r.grpo.RLRecipe`); the
# experiment's sizes (curricula, steps, pools, evaluation, strategies compared) are the `rl_experiments` block
# (`falcon_h1r.sections.rl.RLExperimentRecipe`). The paper's column is from `papers/table2_rl_hparams.yaml`
# ("not given" where the paper gives no value).

# %%
recipe_table = R.recipe_vs_paper(rl, preset)
writer.table("recipe_vs_paper", recipe_table, caption=f"GRPO knobs: the paper's Table 2 beside ours ({preset} preset)")
display(recipe_table)

# %% [markdown]
# ## Ours: compute (or load) every record
# In compute mode, for each SFT base in turn: its RL pools (the §3.1 pass-rate rules against that base), its
# held-out pass@1, then the five curricula of Table 3 from it (math -> code continues that base's math-only run,
# with the code pool re-measured against the math checkpoint). Then the sandbox attack suite through the code
# reward in one GRPO step, and the online-sampling strategies on replayed outcomes. With
# `rl_experiments.resumable` the run keeps its state in the preset's cache, and with `rl_experiments.budget_s`
# it stops at the next step past the budget (run the notebook again to continue). Render mode reads the
# committed records.

# %%
if mode == "compute":
    compute_records(cfg, rl, exp, writer)
records = R.read_records(writer.dir, preset)
bases, timings = records.bases, records.timings
display(Markdown(f"**{len(bases)} RL seed(s)**, one per SFT base (base seeds {bases}); held-out: "
                 f"{records.sft_eval['n_problems']} test problems x {records.sft_eval['n_samples']} samples per checkpoint. "
                 f"Compute time {timings['total_s']:.0f} s on {timings.get('device', '?')} in the pass that wrote the "
                 "records ("
                 + ", ".join(f"{k} {v:.0f}" for k, v in timings.items() if k.endswith('_s') and k != 'total_s') + ")"
                 + (f"; every unit's own wall time summed over the pieces and processes that computed it: "
                    f"{timings['units_wall_s_sum']:.0f} s" if "units_wall_s_sum" in timings else "") + "."
                 + ("" if len(bases) >= 3 else " **Fewer than 3 bases: every interval below is not informative "
                                               "(smoke scale).**")))

# %% [markdown]
# ## RL pools with signal (paper §3.1)
# Each stage's pool is chosen by the paper's rules from the pass rates of the checkpoint that starts it (k
# rollouts at T 0.6 / top-p 0.95): k/k dropped, 1..k-1 kept, 0/k kept unless the rollouts all ran out of
# tokens or repeat one wrong answer. GRPO learns only from groups that are neither all right nor all wrong, so
# the share of trained problems strictly inside (0, k/k) is what the pools must have, in every domain.
# `fallback_all_rated`: the rules left less than one batch and the stage trained on every rated candidate.

# %%
pools = records.pools
pool_cols = ["base", "domain", "measured_on", "rated", "kept", "used", "inside_used", "inside_fraction",
             "fallback_all_rated", "pass_rate_mean"] + [c for c in pools.columns if c.startswith("decision_")]
display(pools[[c for c in pool_cols if c in pools.columns]])
pool_fig = R.pool_figures(pools)
display(Markdown("Share of the problems each first-stage pool trains on with 0 < pass < k/k (all bases): " + ", ".join(
    f"**{d}** {pool_fig[f'rl_pool_pass_rate_inside_fraction_{d}']:.2f}" for d in DOMAINS
    if pool_fig.get(f"rl_pool_pass_rate_inside_fraction_{d}") is not None) + f" ({OURS})."))
k = int(pools["k"].max())
first = pools[pools["measured_on"] == "SFT base"]
fig, axes = plt.subplots(1, len(DOMAINS), figsize=(13, 3.2), sharey=True)
for ax, d in zip(axes, DOMAINS):
    g = first[first["domain"] == d]
    if g.empty:
        continue
    counts = np.array([[row[f"hist_{i}"] for i in range(k + 1)] for _, row in g.iterrows()], dtype=float)
    mean = counts.mean(axis=0)
    err = counts.std(axis=0, ddof=1) if len(counts) > 1 else np.zeros_like(mean)
    ax.bar(range(k + 1), mean, yerr=err, capsize=3, color=["tab:gray"] + ["tab:blue"] * (k - 1) + ["tab:gray"])
    ax.set(title=f"{d}: rated candidates", xlabel=f"correct of {k} (SFT base)")
axes[0].set_ylabel("problems (mean over bases, ± sd)")
fig.suptitle(f"Pass-rate histograms of the RL candidates ({OURS}); blue bins carry gradient", fontsize=10)
fig.tight_layout()
writer.figure("rl_pass_rate_histograms", fig)
plt.show()

# %% [markdown]
# ## Security: the sandbox's adversarial suite through the code reward, inside a training step
# Each attack (fork bombs, unbounded allocation, endless loops, sockets, writes outside the work directory,
# reading environment secrets, shells, ...) is the code answer of one rollout in a group that also holds a benign
# right and a benign wrong answer, so the step really trains on it. The expected value each program is graded
# against is a fresh token no attack can see. An attack "escapes" if it gets a reward above 0 or leaves a trace on
# the host.

# %%
attack_rows, attacks_summary = records.attacks, records.attacks_summary
if len(attack_rows):
    show = attack_rows[["name", "reward", "reason", "expected_reason", "escaped"]].copy()
    show["reason"] = show["reason"].str.slice(0, 60)
    display(show)
    display(Markdown(f"**{attacks_summary['attacks_tried']} attacks tried, {attacks_summary['escapes']} escapes**, "
                     f"{attacks_summary['unexpected_reasons']} with a reason outside the expected class; shared "
                     f"checks: {attacks_summary['shared_checks']}."))
else:
    display(Markdown("The attack suite is switched off in this preset's recipe (`rl_experiments.attack_suite: false`)."))

# %% [markdown]
# ## Curricula: held-out pass@1 per domain, beside the paper's Table 3
# Each curriculum starts from each SFT base and runs `rl_experiments.steps` steps a stage. Ours is the final
# checkpoint's held-out pass@1 (mean over bases, 95 % interval over bases and problems, `stats.arm_mean`); the
# paper's Table 3 is the best value of each run (%, its AIME25 / LCB v6 / GPQA-D), which would be an optimistic
# selection on our held-out set, so we do not select.

# %%
held = R.heldout_estimates(records)
side = R.table3_side_by_side(held)
writer.table("table3_side_by_side", side, caption=f"The paper's Table 3 (AIME25 / LCB v6 / GPQA-D, %, best per run) "
             f"beside ours (held-out math / code / science pass@1 of the final checkpoint, mean over bases ± 95 %; {OURS})")
display(side)
runs_done = [c for c in CURRICULA if f"curriculum_{c}_math" in held]
labels = ["SFT base"] + [PAPER_TABLE3_ROW[c] for c in runs_done]
keys = ["sft_heldout_pass1"] + [f"curriculum_{c}" for c in runs_done]
fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
for ax, g in zip(axes, (*DOMAINS, "mean3")):
    es = [held[f"{key}_{g}"] for key in keys]
    means = [e.mean for e in es]
    ax.bar(range(len(es)), means, yerr=yerr([e.low for e in es], [e.high for e in es], means), capsize=4,
           color=["tab:gray"] + ["tab:blue"] * (len(es) - 1))
    ax.set_xticks(range(len(es)), labels, rotation=35, ha="right", fontsize=8)
    ax.set_title({"mean3": "mean of the 3"}.get(g, g), fontsize=10)
axes[0].set_ylabel("held-out pass@1 (95 % over bases)")
fig.suptitle(f"Table 3 analog ({OURS})", fontsize=10)
fig.tight_layout()
writer.figure("table3_ours", fig)
plt.show()

# %% [markdown]
# ## What each curriculum changed: paired differences
# Every comparison the paper's Table 3 findings rest on, paired by base and held-out problem
# (`stats.paired_difference`, Student-t over bases with the problem-sampling term). "informative" is the
# protocol's flag: fewer than 3 bases, fewer than 30 problems or an interval of zero width is not evidence.

# %%
diffs = R.differences_table(held)
writer.table("paired_differences", diffs, caption=f"Held-out pass@1 differences, paired by base and problem ({OURS})")
display(diffs)
mo = held.get("math_only_minus_sft_math")
if mo is not None:
    verdict = ("the interval excludes 0: a measurable " + ("gain" if mo.mean > 0 else "loss") if mo.excludes_zero()
               else "the interval includes 0: not a measurable change")
    display(Markdown(f"Math-only RL minus the SFT base on held-out math: **{pm(mo.mean, mo.ci95)}** ({mo.n_seeds} "
                     f"bases x {mo.n_problems} problems); {verdict}"
                     + ("" if mo.informative else f"; not informative ({mo.reason})") + f". The paper: +3.5 points on "
                     f"AIME25 (79.6 -> 83.1). {OURS}."))

# %% [markdown]
# ## Training dynamics (the paper's Fig. 6 shows these for its final math-only run)
# The paper's trends (`papers/rl_final_run.yaml`): mean reward rising, response length growing then settling
# (around 20K tokens), entropy stable, PG clip fraction below 1 %. Ours, for the math-only runs: per step, the mean
# over bases with a 95 % band over bases (none with one base): mean reward of the rollouts sampled at that step,
# mean response length, entropy of the sampled distribution, the fraction of tokens whose clipped branch is
# active, and the importance ratio pi_trainer / pi_sampler before the cap of 2 (the sampler may differ from the
# trainer in precision, and cached rollouts are older than the policy). Below: held-out math pass@1 at each
# evaluation of the math-only runs, minus the SFT base's.

# %%
fig6 = papers.load("rl_final_run")
history = records.history
fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
for ax, (col, label) in zip(axes.flat, R.DYNAMICS):
    if col in history.columns:
        band = R.per_step_band(history, "math_only", col)
        if len(band):
            ax.plot(band["step"], band["mean"], marker="o", ms=3)
            ok = band["low"].notna() & band["high"].notna()
            ax.fill_between(band["step"][ok], band["low"][ok].astype(float), band["high"][ok].astype(float), alpha=0.25)
    ax.set(title=label, xlabel="step")
fig.suptitle(f"Math-only GRPO dynamics ({OURS}); paper Fig. 6: reward {fig6['mean_reward_trend']}, entropy "
             f"{fig6['entropy_trend']}, clip fraction < {fig6['pg_clip_fraction_max_pct']} %, length settles near "
             f"{fig6['mean_response_length_k_settled']}K", fontsize=10)
fig.tight_layout()
writer.figure("training_dynamics", fig)
plt.show()

dyn, dyn_plain = R.dynamics_estimates(records)
paper_trend = {"math_only_reward_last_minus_first": f"rising ({fig6['mean_reward_trend']})",
               "math_only_entropy_last_over_first": f"stable ({fig6['entropy_trend']})",
               "math_only_response_tokens_last_minus_first": "grows, then settles",
               "math_only_response_tokens_last": f"about {fig6['mean_response_length_k_settled']}K tokens"}
dyn_table = pd.DataFrame([{"figure": k, "paper": paper_trend[k], "ours": pm(e.mean, e.ci95),
                           "informative": e.informative, "reason": e.reason} for k, e in dyn.items()]
                         + [{"figure": k, "paper": "< 1 %" if "clip" in k else "", "ours": "n/a" if v is None else f"{v:.4g}",
                             "informative": None, "reason": "a measurement (no interval)"}
                            for k, v in dyn_plain.items()])
writer.table("dynamics_vs_paper", dyn_table, caption=f"Fig. 6 trends: the paper's beside ours (last tenth of the "
             f"steps against the first tenth, one value per base; {OURS})")
display(dyn_table)

traj = R.heldout_trajectory(records)
if len(traj):
    writer.table("math_only_trajectory", traj, caption=f"Math-only GRPO: held-out math pass@1 minus the SFT base's "
                 f"(paired by base and problem, 95 %) at each evaluation, and the training reward since the previous "
                 f"one ({OURS})")
    display(traj)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.errorbar(traj["step"], traj["minus_sft"], yerr=yerr(traj["low"], traj["high"], traj["minus_sft"]), marker="o",
                capsize=4)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="GRPO step", ylabel="held-out math pass@1 minus SFT",
           title=f"Math-only RL, held-out math ({OURS})")
    writer.figure("heldout_trajectory", fig)
    plt.show()

# %% [markdown]
# ## Online sampling: generation calls per filled batch
# Zero-advantage groups (all right or all wrong) carry no gradient. The paper drops them and backfills the batch
# from later prompts, keeping the overflow in a bounded cache (Kimi k1.5 style), and reports **about 30 % fewer
# generation calls** (`papers/rl_sampling_strategies.yaml`). It credits the saving to the cache paired with
# backfill, so **the paper's comparison is backfill with the cache against backfill without it** (DAPO's dynamic
# sampling, whose overflow is thrown away): that is the claim tested. Reject (train on what one call leaves, a
# variable batch) and duplicate (top the batch up with copies of positive-advantage rollouts) are shown too. Every
# strategy trains on at most one batch of groups a step (reject and duplicate are capped at the batch size).
# Measured on the groups each SFT base produces (its measured pass rates replayed, a frozen policy; seed s on base
# s mod the number of bases, every strategy of a seed on the same groups) in two regimes: **plentiful**, the math
# pool as the §3.1 rules select it, where most groups are informative, and **scarce**, a pool where most groups
# are all right or all wrong, as late in training. The figure: generation calls x batch size / unique informative
# groups trained on (a strategy that filled no batch is reported as such, never as an infinite cost); savings
# `1 - backfill / other` per seed, with a percentile bootstrap over seeds (`stats.paired_saving`).

# %%
strat_table = R.strategy_table(records.strategy_runs)
strat_est, savings = R.strategy_summary(records.strategy_runs)
if len(strat_table):
    regimes = records.strategy_regimes
    reg_rows = [{"base": b, "regime": r, **v} for b, rs in regimes["regimes"].items() for r, v in rs.items()]
    display(Markdown(f"Regimes ({OURS}); group size {regimes['group_size']}, batch {regimes['batch_prompts']} "
                     f"prompts, {regimes['gen_prompts_per_call']} prompts a call, cache {regimes['cache_size']} groups "
                     f"(max age {regimes['cache_max_age']} steps), {regimes['seeds']} seeds x {regimes['steps']} batches:"))
    display(pd.DataFrame(reg_rows))
    writer.table("strategies", strat_table, caption=f"Online sampling strategies on replayed outcomes ({OURS})")
    display(strat_table)
    writer.table("strategy_savings", savings, caption=f"Backfill's saving in generation calls per filled batch, "
                 f"percentile bootstrap over seeds ({OURS})")
    display(savings)
    paper_pct = papers.load("rl_sampling_strategies")["fewer_generation_calls_pct"]
    head = strat_est.get("backfill_gen_call_saving_vs_nocache")
    if head is not None:
        display(Markdown(f"The paper's comparison (backfill with vs without the cache, plentiful regime): "
                         f"**{pm(head.mean, head.ci95)}** fewer calls per filled batch (95 % {head.low:+.3f} .. "
                         f"{head.high:+.3f}, {head.n_seeds} seeds); the paper: about {paper_pct} %. {OURS}."))
    check = R.replay_vs_training(records)
    if len(check):
        display(Markdown("The replay against the real math-only runs (backfill, the same pool, a learning policy at "
                         "the RL temperature):"))
        display(check)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
    for ax, regime in zip(axes, R.REGIMES):
        sub = records.strategy_runs[records.strategy_runs["regime"] == regime]
        arms = [a for a in exp.strategies_compared if a in set(sub["strategy"])]
        means, lows, highs = [], [], []
        for a in arms:
            v = pd.to_numeric(sub[sub["strategy"] == a]["gen_calls_per_filled_batch"], errors="coerce").dropna().to_numpy()
            means.append(v.mean() if len(v) else float("nan"))
            lo, hi = np.percentile(v, [2.5, 97.5]) if len(v) > 1 else (None, None)
            lows.append(lo)
            highs.append(hi)
        ax.bar(range(len(arms)), means, yerr=yerr(lows, highs, means), capsize=4, color="tab:blue")
        ax.set_xticks(range(len(arms)), arms, rotation=20, fontsize=8)
        ax.set_title(f"{regime} regime (bars: 2.5-97.5 % of seeds)", fontsize=10)
    axes[0].set_ylabel("generation calls per filled batch")
    fig.suptitle(f"Online sampling strategies ({OURS})", fontsize=10)
    fig.tight_layout()
    writer.figure("strategies_gen_calls", fig)
    plt.show()
else:
    display(Markdown("No strategy comparison in this preset's recipe (`rl_experiments.strategies_compared` is empty)."))

# %% [markdown]
# ## Summary and the claims scoreboard rows of this section
# Every figure below is computed from the records above; every estimate carries its interval, its number of
# bases (or seeds) and the protocol's informative flag. The statuses are computed by rule from `papers/claims.yaml`
# (`falcon_h1r.claims`), never typed.

# %%
summary, _ = R.summary_figures(records, rl)
(writer.dir / "summary.json").unlink(missing_ok=True)  # the figures of this run only (no stale keys)
writer.summary(summary)
headline = [k for k in summary if k in {"rl_seeds", "math_only_minus_sft_math", "math_only_minus_sft_math_ci95",
                                        "rl_pool_pass_rate_inside_fraction_code", "backfill_gen_call_saving_vs_nocache",
                                        "backfill_gen_call_saving_vs_nocache_ci95", "backfill_gen_call_saving_vs_reject",
                                        "backfill_gen_call_saving_vs_reject_ci95"}]
display(pd.DataFrame([{"figure": k, "value": summary[k]} for k in headline]))
claims_table = R.claim_rows(preset, SECTION, summary)
writer.table("claims", claims_table, caption=f"Section 03's claims: statuses computed by rule ({OURS})")
display(claims_table)
writer.provenance({"rl_recipe": to_dict(rl), "rl_experiments": to_dict(exp), "timings": timings})
