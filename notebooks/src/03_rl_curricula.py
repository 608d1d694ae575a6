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

# %% tags=["parameters"]
preset = "tiny"
overrides = {}

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display
from tqdm.auto import tqdm

from falcon_h1r import papers
from falcon_h1r.config import load_preset, to_dict
from falcon_h1r.grpo import (CURRICULA, PAPER_TABLE3_ROW, PoolBuilder, RLRecipe, attack_training_step, cached,
                             compare_strategies, fresh_copy, gen_call_saving, heldout_eval, heldout_problems,
                             paired_difference, per_problem_rates, run_curriculum)
from falcon_h1r.results import read_json
from falcon_h1r.results import SectionWriter
from falcon_h1r.sections.common import recipe_hash, run_mode

cfg = load_preset(preset, overrides)
rl = cfg.section("rl", RLRecipe)
mode = run_mode(cfg)
writer = SectionWriter(preset, "03_rl", params=cfg.to_dict(), seed=cfg.seed,
                       mode="computed" if mode == "compute" else "rendered")
OURS = f"ours, {preset} preset, synthetic tasks"
display(Markdown(f"Preset **{preset}**: this run will **{mode}** its results "
                 f"({'training now' if mode == 'compute' else 'rendering the committed records in ' + str(writer.dir)})."))

# %% [markdown]
# ## The paper's GRPO setup (Table 2) beside this preset's recipe
# Every knob is an explicit field of the `rl` block of the preset (`falcon_h1r.grpo.RLRecipe`); the
# paper's column is from `papers/table2_rl_hparams.yaml` ("not given" where the paper gives no value).

# %%
t2 = papers.load("table2_rl_hparams")
pairs = [("group_size", "group_size"), ("temperature", "temperature"), ("clip_ratio_low", "clip_eps_low"),
         ("clip_ratio_high", "clip_eps_high"), ("kl_coef", "kl_coef"), ("entropy_coef", "entropy_coef"),
         ("tis_cap", "tis_cap"), ("learning_rate", "lr"), ("lr_warmup_steps", "warmup_steps"),
         ("train_batch_size", "batch_prompts"), ("max_response_length_k", "max_new_tokens"),
         ("positive_sample_ce_weight", "ce_weight"), ("loss_aggregation", "loss_aggregation"),
         ("advantage", "advantage_std")]


def paper_value(key):
    v = t2.get(key)
    return "not given" if v is None else (f"{v}K tokens" if key.endswith("_k") else str(v))


recipe_table = pd.DataFrame([{"knob": ours, "paper (Table 2)": paper_value(theirs), f"ours ({preset})": str(getattr(rl, ours))}
                             for theirs, ours in pairs])
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
timings = {}
if mode == "compute":
    t_all = time.time()
    if cfg.device == "cpu" or not torch.cuda.is_available():
        torch.set_num_threads(1)  # microscopic models: one thread is as fast and does not fight other work
    from falcon_h1r.env import pick_device
    from falcon_h1r.rewards import RewardPool, load_llm_judge
    from falcon_h1r.sections.common import get_base_model

    device = pick_device(cfg.device)
    base = get_base_model(cfg)
    tok = base.tokenizer
    judge = load_llm_judge(rl.rewards.science_judge_model) if rl.rewards.science_judge == "llm" else None
    reward_pool = RewardPool(rl.rewards, judge=judge)
    heldout = heldout_problems(base.sets, rl)
    gen_cfg = rl.sampling(cfg.generation)
    eval_cfg = cfg.generation  # paper §4.1: T 0.6, top-p 0.95
    # With rl.resumable, run state goes to a git-ignored folder keyed by the recipe: rerunning the notebook
    # after an interruption (e.g. a GPU command's time limit) continues where it stopped.
    work = (writer.dir / "_work" / recipe_hash(rl, cfg.model, cfg.tasks, cfg.train, cfg.generation, cfg.seed)
            if rl.resumable else None)
    timings["setup_s"] = time.time() - t_all

    t0 = time.time()
    builder = PoolBuilder(cfg, base.sets, rl, seed=cfg.seed, progress=True)
    needed = sorted({d for c in rl.curricula for stage in CURRICULA[c] for d in stage} | {"math"})
    pools, pool_reports = builder.from_base(base.model, tok, needed, cache=work / "pools_base.json" if work else None)
    timings["pools_s"] = time.time() - t0

    t0 = time.time()

    def sft_heldout():
        sft_model = fresh_copy(base.model, rl.trainer_dtype).to(device)
        rep = heldout_eval(sft_model, tok, heldout, eval_cfg, n_samples=rl.eval_samples, pool=reward_pool,
                           seed=cfg.seed + 7, progress=True)
        return {**rep.flat(), "mean_response_tokens": rep.mean_response_tokens, "per_problem": per_problem_rates(rep),
                "n_problems": rep.n_problems, "n_samples": rl.eval_samples}

    sft_eval = {**cached(work / "sft_eval.json" if work else None, sft_heldout),
                "pool_sizes": {d: len(v) for d, v in pools.items()},
                "pool_source": "falcon_h1r.curation: its held-out 'rl' split, SFT duplicates removed, pass-rate rules"}
    writer.json("sft_eval", sft_eval)
    timings["sft_eval_s"] = time.time() - t0

    t0 = time.time()
    if rl.attack_suite:
        from falcon_h1r.sandbox import isolation_report

        attacks = cached(work / "attacks.json" if work else None, lambda: {
            **attack_training_step(fresh_copy(base.model, rl.trainer_dtype).to(device), tok, rl, device=device),
            "isolation": isolation_report()})
        writer.records("attacks", attacks["rows"])
        writer.json("attacks_summary", {k: v for k, v in attacks.items() if k != "rows"})
    timings["attacks_s"] = time.time() - t0

    runs, stage_cache = {}, {}
    for name in tqdm(rl.curricula, desc="curricula"):
        t0 = time.time()
        runs[name] = run_curriculum(name, base.model, tok, pools, rl, builder=builder, gen_cfg=gen_cfg,
                                    eval_gen_cfg=eval_cfg, heldout=heldout, reward_pool=reward_pool, seed=cfg.seed,
                                    device=device, progress=True, stage_cache=stage_cache, run_root=work)
        timings[f"curriculum_{name}_s"] = time.time() - t0
    del stage_cache
    writer.records("curricula_history", [{"curriculum": n, **r} for n, run in runs.items() for r in run["history"]])
    writer.records("curricula_evals", [{"curriculum": n, **e} for n, run in runs.items() for e in run["evals"]])
    writer.records("curricula_stages", [{"curriculum": n, **{k: v for k, v in s.items() if k != "pool_reports"}}
                                        for n, run in runs.items() for s in run["stages"]])
    writer.records("pools", pool_reports + [r for run in runs.values() for s in run["stages"] for r in s["pool_reports"]
                                            if not s.get("reused_from")])

    t0 = time.time()
    reuse = {}
    if "math_only" in runs and rl.strategy == "backfill":
        reuse["backfill"] = runs["math_only"]["runs"][0]  # the same run: math pool, seed, backfill
    strategy_rows = compare_strategies(base.model, tok, pools["math"], rl, gen_cfg=gen_cfg, reward_pool=reward_pool,
                                       seed=cfg.seed, device=device, reuse=reuse, run_root=work)
    writer.table("strategies", pd.DataFrame(strategy_rows),
                 caption=f"Online sampling strategies on the math pool ({OURS}), {rl.strategy_steps} steps each")
    timings["strategies_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_all
    timings["process_cpu_s"] = time.process_time()  # this kernel's CPU time (sandbox processes not included)
    timings["reward_pool"] = {"graded": reward_pool.calls, "sandbox_runs": reward_pool.sandbox_runs}
    writer.json("timings", timings)

# Everything below reads the records (computed just now, or committed for this preset).
if not (writer.dir / "sft_eval.json").exists():
    raise FileNotFoundError(f"no {preset}-preset RL records in {writer.dir}: this preset's RL runs have not been "
                            f"computed and committed yet; run this notebook at preset {preset!r} on a GPU (README)")
sft_eval = read_json(writer.dir / "sft_eval.json")
history = pd.read_json(writer.dir / "curricula_history.jsonl", lines=True)
evals = pd.read_json(writer.dir / "curricula_evals.jsonl", lines=True)
stages = pd.read_json(writer.dir / "curricula_stages.jsonl", lines=True)
pool_table = pd.read_json(writer.dir / "pools.jsonl", lines=True)
strategies = pd.read_csv(writer.dir / "strategies.csv")
attack_rows = pd.read_json(writer.dir / "attacks.jsonl", lines=True) if (writer.dir / "attacks.jsonl").exists() else pd.DataFrame()
attacks_summary = read_json(writer.dir / "attacks_summary.json") if (writer.dir / "attacks_summary.json").exists() else {}
timings = read_json(writer.dir / "timings.json")
display(Markdown(f"RL prompt pool: {sft_eval['pool_source']}; sizes used {sft_eval['pool_sizes']}. Held-out: "
                 f"{sft_eval['n_problems']} test problems x {sft_eval['n_samples']} samples. Compute time: "
                 f"{timings['total_s']:.0f} s wall ({', '.join(f'{k} {v:.0f}' for k, v in timings.items() if k.endswith('_s'))})."))
hist_cols = [c for c in pool_table.columns if c.startswith("hist_")]
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
cols = ["strategy", "gen_calls", "groups_used", "gen_calls_per_filled_batch", "rollouts_per_filled_batch",
        "informative_frac", "batch_groups_mean", "batch_groups_min", "evicted", "expired", "duplicated",
        "mean_staleness", "is_ratio_max"]
display(strategies[[c for c in cols if c in strategies.columns]])
saving = {}
rows = strategies.to_dict("records")
names = set(strategies["strategy"])
for other in ("reject", "backfill_nocache", "duplicate"):
    if "backfill" in names and other in names:
        saving[other] = gen_call_saving(rows, "backfill", other)
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
domains = ["math", "code", "science"]
best_rows = [{"run": "SFT baseline", **{d: sft_eval.get(f"pass1_{d}") for d in domains}}]
final_rows = [{"run": "SFT baseline", **{d: sft_eval.get(f"pass1_{d}") for d in domains}}]
for name in [c for c in CURRICULA if c in set(evals["curriculum"])]:
    e = evals[evals["curriculum"] == name]
    best_rows.append({"run": PAPER_TABLE3_ROW[name], **{d: e[f"pass1_{d}"].max() for d in domains}})
    final_rows.append({"run": PAPER_TABLE3_ROW[name], **{d: e[f"pass1_{d}"].iloc[-1] for d in domains}})
ours_best = pd.DataFrame(best_rows)
ours_final = pd.DataFrame(final_rows)
t3 = papers.load("table3_rl_curricula").copy()
t3["mean_of_3_recomputed"] = papers.rl_curriculum_means(t3).values
side = t3.merge(ours_best.rename(columns={d: f"ours_{d}" for d in domains}), on="run", how="left")
writer.table("paper_table3", t3, caption="The paper's Table 3 (best value per RL run); mean recomputed here")
writer.table("table3_ours_best", ours_best, caption=f"Best held-out pass@1 per domain per curriculum ({OURS})")
writer.table("table3_ours_final", ours_final, caption=f"Final-checkpoint held-out pass@1 per curriculum ({OURS})")
writer.table("table3_side_by_side", side, caption=f"The paper's Table 3 (AIME25 / LCB v6 / GPQA-D, %) beside "
             f"ours (math / code / science held-out pass@1, {OURS})")
display(Markdown("**The paper's Table 3** (from `papers/`, %) beside **ours** (fractions, " + OURS + "):"))
display(side)
display(Markdown(f"Final checkpoints ({OURS}):"))
display(ours_final)
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
summary = {"sft_heldout_pass1": sft_eval.get("pass1_math"), "sft_heldout_pass1_all": sft_eval["pass1"],
           **{f"sft_heldout_pass1_{d}": sft_eval.get(f"pass1_{d}") for d in domains}}
if "math_only" in set(evals["curriculum"]):
    mo = evals[evals["curriculum"] == "math_only"]
    last = mo.iloc[-1]
    math_ids = [k for k in sft_eval["per_problem"] if k.startswith("math-")]
    diff, ci, n = paired_difference(last["per_problem"], sft_eval["per_problem"], math_ids)
    summary.update({"math_only_heldout_pass1": last["pass1_math"], "math_only_heldout_pass1_best": mo["pass1_math"].max(),
                    "math_only_minus_sft_math": diff, "math_only_minus_sft_math_ci95": ci,
                    "math_only_minus_sft_math_n": n})
    h = history[history["curriculum"] == "math_only"]
    summary["math_only_reward_first"] = float(h["reward_mean"].iloc[0])
    summary["math_only_reward_last"] = float(h["reward_mean"].iloc[-1])
    display(Markdown(f"Math held-out pass@1: SFT **{sft_eval.get('pass1_math'):.3f}** -> math-only RL "
                     f"**{last['pass1_math']:.3f}**; paired change **{diff:+.3f} ± {ci:.3f}** (95 %, {n} problems, "
                     f"{OURS}). Mean training reward, first step {summary['math_only_reward_first']:.3f}, last "
                     f"{summary['math_only_reward_last']:.3f}. "
                     + ("**Not a measurable change**: the interval includes 0, so the rise in training reward on the "
                        "pool did not carry over to held-out problems at this scale." if abs(diff) <= ci else
                        f"The interval excludes 0: a measurable {'gain' if diff > 0 else 'loss'} on held-out problems.")))
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
    traj = pd.DataFrame(traj)
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
for _, row in ours_best.iloc[1:].iterrows():
    key = [k for k, v in PAPER_TABLE3_ROW.items() if v == row["run"]][0]
    for d in domains:
        summary[f"curriculum_{key}_{d}_best"] = row[d]
for _, row in ours_final.iloc[1:].iterrows():
    key = [k for k, v in PAPER_TABLE3_ROW.items() if v == row["run"]][0]
    for d in domains:
        summary[f"curriculum_{key}_{d}_final"] = row[d]
if "reject" in saving:
    summary["backfill_gen_call_saving_vs_reject"] = saving["reject"]
if "backfill_nocache" in saving:
    summary["backfill_gen_call_saving_vs_nocache"] = saving["backfill_nocache"]
if "duplicate" in saving:
    summary["backfill_gen_call_saving_vs_duplicate"] = saving["duplicate"]
# %% [markdown]
# ## A longer math-only run (its own record set)
# The curricula above run 40 steps each. On the small preset the math-only run then had seen each pool problem
# about three times, its training reward rose only on problems seen again, and held-out math did not move.
# `math_only_long/` (beside this notebook's records) holds one more run of this notebook, math-only, with a
# 4x larger pool (12,000 candidates), 200 steps at the same learning rate, and a held-out evaluation every 50
# steps; it was made with `scripts/gpu_rl_probe.sh` and its full recipe is in its `provenance.json`. Its SFT
# base is the same recipe's base rebuilt on another GPU machine, so it is compared with its own SFT score.

# %%
long_dir = writer.dir / "math_only_long"
if (long_dir / "summary.json").exists() and (long_dir / "math_only_trajectory.csv").exists():
    long_sum = read_json(long_dir / "summary.json")
    long_traj = pd.read_csv(long_dir / "math_only_trajectory.csv")
    long_rl = read_json(long_dir / "provenance.json")["parameters"]["rl"]
    display(Markdown("Recipe differences from this preset's `rl` block: " + ", ".join(
        f"`{k}` {rl_value} -> {long_rl[k]}" for k, rl_value in to_dict(rl).items()
        if k in long_rl and long_rl[k] != rl_value) + "."))
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
    for k in ("sft_heldout_pass1", "math_only_heldout_pass1", "math_only_minus_sft_math",
              "math_only_minus_sft_math_ci95", "math_only_minus_sft_math_n"):
        summary[f"long_{k}"] = long_sum[k]
    summary["long_steps"] = int(long_traj["step"].max())
    d, ci = long_sum["math_only_minus_sft_math"], long_sum["math_only_minus_sft_math_ci95"]
    display(Markdown(f"After {summary['long_steps']} steps: held-out math {long_sum['sft_heldout_pass1']:.3f} -> "
                     f"{long_sum['math_only_heldout_pass1']:.3f}, a paired change of **{d:+.3f} ± {ci:.3f}** "
                     f"(95 %, {int(long_sum['math_only_minus_sft_math_n'])} problems): "
                     + ("the interval excludes 0." if abs(d) > ci else "the interval includes 0.")))
else:
    display(Markdown("No `math_only_long/` record set beside this notebook's records (only the small preset has one)."))

summary["sandbox_attacks_tried"] = attacks_summary.get("attacks_tried", 0)
summary["sandbox_escapes"] = attacks_summary.get("escapes", 0)
summary["rl_compute_s"] = timings["total_s"]
summary = {k: (None if v is None else float(v)) for k, v in summary.items()}
writer.summary(summary)
display(pd.DataFrame([{"figure": k, "value": v} for k, v in summary.items()]))
writer.provenance({"rl_recipe": to_dict(rl), "timings": timings})
