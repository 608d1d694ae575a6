# %% [markdown]
# # 03 · GRPO reinforcement learning and domain curricula (paper §3)
#
# The paper's RL recipe (Table 2) and curriculum results (Table 3), from `papers/`, beside ours: GRPO
# with the paper's modifications (`falcon_h1r.grpo`: clip-higher, no KL and no reference model,
# truncated importance sampling between the sampler's and the trainer's log-probs, an extra CE loss on
# correct samples), the online sampling strategies for zero-advantage groups
# (`falcon_h1r.rollout_buffer`: backfill with a bounded generation cache, reject, duplicate), and
# verifiable rewards (`falcon_h1r.rewards`: tiered math, sandboxed code, numeric science, a format
# penalty). **At the tiny and small presets every "ours" number is about synthetic tasks and a model
# trained from scratch, not the paper's benchmarks.** RL starts from the preset's cached SFT base model
# (`falcon_h1r.sections.common.get_base_model`).
#
# Where each number is computed (this notebook -> the section function -> the library method):
#
# | numbers | section function | library method |
# |---|---|---|
# | every record (pools, held-out pass@1, attacks, curricula, strategies) | `sections.rl.compute_records` | below |
# | RL pools, pass-rate histograms | `sections.rl.PoolBuilder` | `curation.estimate_pass_rates`, `curation.select_rl_pool` |
# | held-out pass@1 (SFT base, every curriculum evaluation) | `sections.rl.heldout_report` | `evaluation.evaluate` |
# | training dynamics, rewards, clip and IS statistics | `sections.rl.run_curriculum` | `grpo.train_grpo` (`grpo.policy_loss`, `rewards.RewardPool`) |
# | generation calls per filled batch, savings | `sections.rl.compare_strategies`, `sections.rl_report.strategy_savings` | `rollout_buffer.BatchFiller` |
# | sandbox attacks in a training step | `sections.rl_attacks.attack_training_step` | `sandbox.ATTACKS`, `grpo.grpo_update` |
# | Table 2 beside ours | `sections.rl_report.recipe_vs_paper` | `papers.load` |
# | Table 3 beside ours (best, final) | `sections.rl_report.table3_tables` | `papers.rl_curriculum_means` |
# | math-only minus SFT (paired, 95 %), its trajectory | `sections.rl_report.math_only_change` | the records above |
# | the longer math-only run | `sections.rl_report.read_long_run` | its own records |

# %% tags=["parameters"]
preset = "tiny"
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from falcon_h1r import papers
from falcon_h1r.config import load_preset, to_dict
from falcon_h1r.results import SectionWriter
from falcon_h1r.sections.common import run_mode
from falcon_h1r.sections.rl import SECTION, compute_records, load_recipes, ours_label
from falcon_h1r.sections.rl_report import (STRATEGY_COLUMNS, closing_summary, curricula_summary, math_only_change,
                                           read_long_run, read_records, recipe_vs_paper, savings_summary,
                                           sft_summary, strategy_savings, table3_tables)

cfg = load_preset(preset, overrides)
rl, exp = load_recipes(cfg)
mode = run_mode(cfg)
writer = SectionWriter(preset, SECTION, params=cfg.to_dict(), seed=cfg.seed,
                       mode="computed" if mode == "compute" else "rendered")
OURS = ours_label(preset)
display(Markdown(f"Preset **{preset}**: this run will **{mode}** its results "
                 f"({'training now' if mode == 'compute' else 'rendering the committed records in ' + str(writer.dir)})."))

# %% [markdown]
# ## The paper's GRPO setup (Table 2) beside this preset's recipe
# Every trainer knob is an explicit field of the `rl` block of the preset (`falcon_h1r.grpo.RLRecipe`); the
# experiment's sizes (curricula, steps, pools, evaluation, strategies compared) are the `rl_experiments`
# block (`falcon_h1r.sections.rl.RLExperimentRecipe`). The paper's column is from
# `papers/table2_rl_hparams.yaml` ("not given" where the paper gives no value).

# %%
recipe_table = recipe_vs_paper(rl, preset)
writer.table("recipe_vs_paper", recipe_table, caption=f"GRPO knobs: the paper's Table 2 beside ours ({preset} preset)")
display(recipe_table)

# %% [markdown]
# ## Ours: compute (or load) every record
# In compute mode, in order: the RL pools (the curation stage's pass-rate rules against the SFT base);
# the SFT base's held-out pass@1; the sandbox's adversarial suite run through the code reward inside one
# GRPO training step; the five curricula of Table 3, each from the same SFT base (math -> code reuses the
# math-only run as its first stage: same start, pool, seed and steps); the online sampling strategies on
# the math pool (the first `strategy_steps` steps of the math-only run are the backfill run). Each record lands
# in `results/<preset>/03_rl/`; render mode reads them back from there.

# %%
if mode == "compute":
    compute_records(cfg, rl, exp, writer)
# Everything below reads the records (computed just now, or committed for this preset).
records = read_records(writer.dir, preset)
sft_eval, timings, pool_table = records.sft_eval, records.timings, records.pools
display(Markdown(f"RL prompt pool: {sft_eval['pool_source']}; sizes used {sft_eval['pool_sizes']}. Held-out: "
                 f"{sft_eval['n_problems']} test problems x {sft_eval['n_samples']} samples. Compute time: "
                 f"{timings['total_s']:.0f} s wall ({', '.join(f'{k} {v:.0f}' for k, v in timings.items() if k.endswith('_s'))})."))
display(Markdown(f"RL pools: pass rates of the checkpoint that starts each stage ({OURS}); `hist_i` = problems with "
                 "i correct rollouts, `decision_*` = the curation stage's §3.1 rules; `fallback_all_rated` = the rules "
                 "left less than one batch, so the stage trained on every rated candidate:"))
display(pool_table)
# %% [markdown]
# ## Security: the sandbox's adversarial suite through the code reward, inside a training step
# Each attack (fork bombs, unbounded allocation, endless loops, sockets, writes and deletes outside the
# work directory, reading environment secrets, shells, ...) is the code answer of one rollout in a group
# that also holds a benign right and a benign wrong answer, so the step really trains on it. An attack
# "escapes" if it gets a reward above 0 or leaves a trace on the host (a changed canary file, a file
# outside its directory, a connection to the host's loopback listener, an echoed secret, a process left
# behind).

# %%
attack_rows, attacks_summary = records.attacks, records.attacks_summary
if len(attack_rows):
    show = attack_rows[["name", "reward", "reason", "expected_reason", "escaped"]].copy()
    show["reason"] = show["reason"].str.slice(0, 60)
    display(show)
    display(Markdown(f"**{attacks_summary['attacks_tried']} attacks tried, {attacks_summary['escapes']} escapes**, "
                     f"{attacks_summary['unexpected_reasons']} with a reason outside the expected class; shared "
                     f"checks: {attacks_summary['shared_checks']}; the training step: pg_loss "
                     f"{attacks_summary['step'].get('pg_loss', float('nan')):.4f} (finite, model updated: "
                     f"{attacks_summary['shared_checks']['model_updated']})."))
else:
    display(Markdown("The attack suite is switched off in this preset's recipe (`rl.attack_suite: false`)."))

# %% [markdown]
# ## Online sampling: generation calls per filled batch
# Zero-advantage groups (all right or all wrong) carry no gradient. The paper drops them and backfills
# the batch from later prompts, keeping the overflow in a bounded cache, and reports **about 30 % fewer
# generation calls** (`papers/rl_sampling_strategies.yaml`) without naming the baseline. Our figure:
# generation calls x batch size / unique informative groups trained on, i.e. what one batch's worth of
# gradient-carrying groups costs. `backfill_nocache` is backfill whose overflow is thrown away (DAPO's
# dynamic sampling); `reject` trains on whatever one call leaves (variable batch); `duplicate` refills
# the batch with copies of positive-advantage rollouts (no new information).

# %%
strategies = records.strategies
display(strategies[[c for c in STRATEGY_COLUMNS if c in strategies.columns]])
saving = strategy_savings(strategies)
paper_pct = papers.load("rl_sampling_strategies")["fewer_generation_calls_pct"]
display(Markdown("Backfill with the cache, fewer generation calls per filled batch than: " +
                 ", ".join(f"**{k}** {v:+.1%}" for k, v in saving.items()) +
                 f" ({OURS}). The paper: about {paper_pct} % fewer (baseline not stated). Read it with the "
                 "`informative_frac` column: with every informative group used once, backfill and reject cost "
                 "the same in expectation, so a gap between them at a few steps is mostly a gap in the sampled "
                 "fraction of informative groups (noise); what the cache itself saves is the overflow that "
                 "backfill without a cache throws away (`evicted`)."))
fig, ax = plt.subplots(figsize=(6, 3))
sns.barplot(data=strategies, x="strategy", y="gen_calls_per_filled_batch", ax=ax, color="tab:blue")
ax.set_ylabel("generation calls per filled batch")
ax.set_title(f"Online sampling strategies ({OURS})", fontsize=10)
writer.figure("strategies_gen_calls", fig)
plt.show()

# %% [markdown]
# ## Curricula: best held-out pass@1 per domain, beside the paper's Table 3
# Each curriculum starts from the same SFT base. Before each stage the stage's pool is re-measured
# against the checkpoint that starts it (the curation stage's pass rates, paper: 8 samples at T 0.6 /
# top-p 0.95) and filtered with the paper's RL rules; for math -> code that is the re-measurement of code
# difficulty after the math stage (the pool table above). Like the paper's Table 3, each cell is the best evaluation of the run (an
# optimistic selection on the same held-out set); the final-checkpoint values follow.

# %%
t3, ours_best, ours_final, side = table3_tables(records.evals, sft_eval)
writer.table("paper_table3", t3, caption="The paper's Table 3 (best value per RL run); mean recomputed here")
writer.table("table3_ours_best", ours_best, caption=f"Best held-out pass@1 per domain per curriculum ({OURS})")
writer.table("table3_ours_final", ours_final, caption=f"Final-checkpoint held-out pass@1 per curriculum ({OURS})")
writer.table("table3_side_by_side", side, caption=f"The paper's Table 3 (AIME25 / LCB v6 / GPQA-D, %) beside "
             f"ours (math / code / science held-out pass@1, {OURS})")
display(Markdown("**The paper's Table 3** (from `papers/`, %) beside **ours** (fractions, " + OURS + "):"))
display(side)
display(Markdown(f"Final checkpoints ({OURS}):"))
display(ours_final)
stages = records.stages
display(stages[[c for c in ["curriculum", "stage", "domains", "pool", "remeasured", "reused_from", "sampler_gen_calls",
                            "sampler_groups_used", "sampler_informative_frac", "wall_s"] if c in stages.columns]])

# %% [markdown]
# ## Did math-only RL improve on the SFT checkpoint?
# Paired by held-out math problem: the change in per-problem pass rate from the SFT base to the final
# math-only checkpoint, with its 95 % interval. With `rl.eval_every` > 0 the same comparison follows at
# every evaluation (the trajectory table), beside the training reward over the steps since the previous
# evaluation: on all rollouts, and on the rollouts of prompts the run had never generated before
# (`reward_first_seen`; a rise there, unlike a rise on prompts seen again, is a rise on new problems).

# %%
summary = sft_summary(sft_eval)
change = math_only_change(records.evals, records.history, sft_eval)
if change is not None:
    mo_summary, traj = change
    summary.update(mo_summary)
    diff, ci, n = (mo_summary[k] for k in ("math_only_minus_sft_math", "math_only_minus_sft_math_ci95",
                                          "math_only_minus_sft_math_n"))
    display(Markdown(f"Math held-out pass@1: SFT **{sft_eval.get('pass1_math'):.3f}** -> math-only RL "
                     f"**{mo_summary['math_only_heldout_pass1']:.3f}**; paired change **{diff:+.3f} ± {ci:.3f}** (95 %, "
                     f"{n} problems, {OURS}). Mean training reward, first step {summary['math_only_reward_first']:.3f}, "
                     f"last {summary['math_only_reward_last']:.3f}. "
                     + ("**Not a measurable change**: the interval includes 0, so the rise in training reward on the "
                        "pool did not carry over to held-out problems at this scale." if abs(diff) <= ci else
                        f"The interval excludes 0: a measurable {'gain' if diff > 0 else 'loss'} on held-out problems.")))
    writer.table("math_only_trajectory", traj, caption=f"Math-only GRPO: held-out math pass@1 minus the SFT base's "
                 f"(paired, 95 %) at each evaluation, and the training reward since the previous one ({OURS})")
    display(traj)

# %% [markdown]
# ## Training dynamics (the paper's Fig. 6 shows these for its final math-only run)
# The paper's qualitative trends (`papers/rl_final_run.yaml`): mean reward rising, response length
# settling (around 20K tokens), entropy stable, PG clip fraction below 1 %. Ours, per curriculum and step:
# mean reward of the rollouts sampled at that step (a gap: the step was served from the cache alone),
# mean response length, entropy of the sampled distribution, the fraction of tokens whose clipped branch
# is active, and the importance ratio pi_trainer / pi_sampler before the cap of 2 (mean and max: the
# sampler may differ from the trainer in precision or engine, and cached rollouts are older than the
# policy). Math -> code's first stage is the math-only run, so their first steps coincide.

# %%
history, evals = records.history, records.evals
fig6 = papers.load("rl_final_run")
panels = [("reward_mean", "mean reward"), ("response_len_mean", "response length (tokens)"),
          ("entropy", "entropy (nats)"), ("clip_frac", "clip fraction"),
          ("is_ratio_mean", "IS ratio mean"), ("is_ratio_max", "IS ratio max")]
fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
for ax, (col, label) in zip(axes.flat, panels):
    if col in history.columns:
        sns.lineplot(data=history, x="global_step", y=col, hue="curriculum", style="curriculum", ax=ax, marker="o",
                     markersize=3)
    ax.set_title(label, fontsize=10)
    ax.set_xlabel("step")
    if ax is not axes.flat[0] and ax.get_legend():
        ax.get_legend().remove()
fig.suptitle(f"GRPO training dynamics ({OURS}); paper Fig. 6 trends: reward {fig6['mean_reward_trend']}, "
             f"entropy {fig6['entropy_trend']}, clip fraction < {fig6['pg_clip_fraction_max_pct']} %", fontsize=10)
fig.tight_layout()
writer.figure("training_dynamics", fig)
plt.show()

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, e in evals.groupby("curriculum"):
    ax.plot(e["global_step"], e["pass1"], marker="o", label=name)
ax.axhline(sft_eval["pass1"], color="gray", ls="--", label="SFT base")
ax.set_xlabel("step")
ax.set_ylabel("held-out pass@1 (all domains)")
ax.set_title(f"Held-out pass@1 during RL ({OURS})", fontsize=10)
ax.legend(fontsize=7)
writer.figure("heldout_pass1", fig)
plt.show()

# %% [markdown]
# ## Headline figures

# %%
summary.update(curricula_summary(ours_best, ours_final))
summary.update(savings_summary(saving))
# %% [markdown]
# ## A longer math-only run (its own record set)
# The curricula above run 40 steps each. On the small preset the math-only run then had seen each pool problem
# about three times, its training reward rose only on problems seen again, and held-out math did not move.
# `math_only_long/` (beside this notebook's records) holds one more run of this notebook, math-only, with a
# 4x larger pool (12,000 candidates), 200 steps at the same learning rate, and a held-out evaluation every 50
# steps; it was made with `scripts/gpu_rl_probe.sh` and its full recipe is in its `provenance.json`. Its SFT
# base is the same recipe's base rebuilt on another GPU machine, so it is compared with its own SFT score.

# %%
long_run = read_long_run(writer.dir, rl, exp)
if long_run is not None:
    long_sum, long_traj = long_run.summary, long_run.trajectory
    display(Markdown("Recipe differences from this preset's `rl` and `rl_experiments` blocks: " + ", ".join(
        f"`{k}` {ours} -> {theirs}" for k, (ours, theirs) in long_run.recipe_changes.items()) + "."))
    display(long_traj)
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    ax[0].errorbar(long_traj["step"], long_traj["minus_sft"], yerr=long_traj["ci95"], marker="o", capsize=4)
    ax[0].axhline(0, color="grey", lw=0.8)
    ax[0].set(xlabel="GRPO step", ylabel="held-out math pass@1 minus SFT", title="paired change, 95 % interval")
    ax[1].plot(long_traj["step"], long_traj["train_reward"], marker="o", label="all rollouts")
    if "train_reward_first_seen" in long_traj:
        ax[1].plot(long_traj["step"], long_traj["train_reward_first_seen"], marker="s", label="prompts never seen before")
    ax[1].set(xlabel="GRPO step (end of window)", ylabel="mean training reward", title="training reward per window")
    ax[1].legend()
    fig.suptitle(f"Math-only GRPO, {int(long_traj['step'].max())} steps ({OURS})")
    fig.tight_layout()
    writer.figure("math_only_long_trajectory", fig)
    plt.show()
    summary.update(long_run.headline())
    d, ci = long_sum["math_only_minus_sft_math"], long_sum["math_only_minus_sft_math_ci95"]
    display(Markdown(f"After {summary['long_steps']} steps: held-out math {long_sum['sft_heldout_pass1']:.3f} -> "
                     f"{long_sum['math_only_heldout_pass1']:.3f}, a paired change of **{d:+.3f} ± {ci:.3f}** "
                     f"(95 %, {int(long_sum['math_only_minus_sft_math_n'])} problems): "
                     + ("the interval excludes 0." if abs(d) > ci else "the interval includes 0.")))
else:
    display(Markdown("No `math_only_long/` record set beside this notebook's records (only the small preset has one)."))

summary = closing_summary(summary, records)
writer.summary(summary)
display(pd.DataFrame([{"figure": k, "value": v} for k, v in summary.items()]))
writer.provenance({"rl_recipe": to_dict(rl), "rl_experiments": to_dict(exp), "timings": timings})
