# %% [markdown]
# # 02 · Supervised fine-tuning (paper §2)
#
# The paper's SFT recipe (Table 1) and ablation findings, and ours: a Falcon-H1 hybrid of the chosen preset trained
# by SFT on teacher traces for procedurally generated, verifiable problems, then each of the paper's §2 ablations as
# a recipe grid (`falcon_h1r/recipes/sft/*.yaml`), every arm from one common start, several seeds, each axis'
# paired difference with its 95 % interval from the statistical protocol (`falcon_h1r.stats`) and its status from
# the claims scoreboard (`papers/claims.yaml`), beside the paper's finding.
# **At the tiny and small presets every "ours" number is about those synthetic tasks, not the paper's
# benchmarks.** Where each number is computed (one hop: this notebook calls `falcon_h1r.sections.sft`, whose
# functions name the library method they run): `base_training` (`sections.common.get_base_model`: the trainer
# `falcon_h1r.sft.train_sft`, pass@1 by `falcon_h1r.evaluation.evaluate`), `base_accuracy`
# (`evaluation.wilson_interval`), `trainer_checks` (`sft.per_sample_losses`, `distributed.shard_indices`),
# `ablations` (`sections.sft_ablations.run_grid`: the common start and the pools of `sections.sft_ablation_data`,
# curation by `falcon_h1r.curation.curate_sft_records`, the trainer, `evaluation.evaluate_outcomes`),
# `ablation_tables` and `curves` (`sections.sft_findings`: `stats.arm_mean`, `stats.paired_difference`),
# `axis_findings` and `claim_rows` (statuses by `falcon_h1r.claims` from this run's summary), the figures
# (`sections.sft_figures`), `gpu_record` (the records of `bench/train_throughput.py` and `scripts/sft_ddp.py`).

# %% tags=["parameters"]
preset = "tiny"
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from falcon_h1r import papers
from falcon_h1r.sections import sft as S
from falcon_h1r.sections.sft_figures import axis_figure

sec = S.open_section(preset, overrides)
cfg, sizes, mode, writer = sec.cfg, sec.ablations, sec.mode, sec.writer
display(Markdown(f"Preset **{preset}**: this run will **{mode}** its results."))

# %% [markdown]
# ## The paper's SFT recipe (Table 1) and findings: the paper's numbers, from `papers/`

# %%
table1 = papers.load("table1_sft_hparams")
display(pd.DataFrame([{"item": k, "value": v} for k, v in table1.items() if not isinstance(v, (dict, list))]))
display(papers.load("sft_ablation_findings"))

# %% [markdown]
# ## Ours: the preset's hybrids trained from scratch by SFT
# Independently trained bases (`eval.base_seeds`: same tasks and tokenizer, another initialisation and data
# order each). First their sampled pass@1 per domain at the paper's settings (T 0.6, top-p 0.95,
# `eval.n_samples` samples per held-out problem), with a 95 % interval over bases and problems: the testbed is
# meant to put every domain between 20 % and 80 %, so that later effects have room to show. Then the first
# base's greedy accuracy before and after training.

# %%
bases, infos = S.base_training(sec)
base, info = (bases[0] if bases else None), infos[0]
if mode == "compute" and sec.ablations.bases == "committed":
    display(Markdown("**The bases' figures are the committed records** (`sft_ablations.bases: committed`): this run "
                     "computes the ablation grid, which starts from its own common start and never uses the bases."))
if S.is_checkpoint(info):  # the paper preset: a loaded checkpoint, no training of ours to report
    display(Markdown(f"A loaded checkpoint (`{cfg.model.checkpoint}`): its pass@1 on the paper's benchmarks with "
                     "the paper's per-benchmark protocol, beside the paper's own numbers."))
    display(S.checkpoint_benchmarks(sec, base))
else:
    writer.summary(S.base_summary(infos))
    pass1 = S.base_pass1_estimates(infos)
    if pass1:
        per_base = S.base_pass1_table(infos)
        writer.table("base_pass1_sampled", per_base, caption=f"Ours ({preset} preset, synthetic tasks): sampled pass@1 "
                     "per base, domain and difficulty level (T 0.6, top-p 0.95)")
        display(per_base)
        by_level = S.base_pass1_by_level(infos, cfg)
        writer.table("base_pass1_by_level", by_level.reset_index(), caption=f"Ours ({preset} preset, synthetic tasks): "
                     "sampled pass@1 per domain and difficulty level, mean over the bases")
        display(by_level.round(2))
        lines = [f"- **{d}**: {est.describe()}" for d, est in pass1.items()]
        inside = [d for d, est in pass1.items() if 0.2 <= est.mean <= 0.8]
        display(Markdown(f"Sampled pass@1 over {len(infos)} base(s):\n" + "\n".join(lines) + "\n\n"
                         + f"Inside the 20-80 % band the testbed aims for: {', '.join(inside) if inside else 'none'}"
                         + (f"; outside: {', '.join(d for d in pass1 if d not in inside)}." if len(inside) < len(pass1)
                            else ".")))
    if "trace_tokens" in info:
        tt = info["trace_tokens"]
        display(Markdown(f"Teacher traces the bases were trained on: p10 {tt['p10']:.0f}, median {tt['median']:.0f}, "
                         f"p90 {tt['p90']:.0f}, max {tt['max']:.0f} tokens ({tt['n']:,} traces)."))
    accuracy = S.base_accuracy(info)
    acc, math_row, above = accuracy.table, accuracy.math_row, accuracy.above_baseline
    if accuracy.summary:
        writer.summary(accuracy.summary)
    writer.table("base_accuracy", acc, caption=f"Ours ({preset} preset, synthetic tasks): held-out greedy accuracy "
                 f"before/after SFT of a {info['params']:,}-parameter Falcon-H1 hybrid, {info['eval_problems']} problems")
    display(acc)
    display(Markdown(f"Training: {info['steps']} steps in {info['train_wall_s']:.0f} s; "
                     f"majority-answer baseline {info['majority_answer_baseline']:.3f}."
                     + ("" if math_row is None else
                        f" Held-out math: {math_row['after_correct']}/{math_row['n']} correct after training (95 % Wilson "
                        f"interval {math_row['after_ci95_low']:.3f}-{math_row['after_ci95_high']:.3f}), "
                        + ("**above** the majority-answer baseline (the interval excludes it)." if above else
                           "**not clearly above** the majority-answer baseline (the interval reaches it)."))))

    fig, ax = plt.subplots(figsize=(5, 3))
    sns.lineplot(x=info["loss_curve"]["step"], y=info["loss_curve"]["loss"], ax=ax)
    ax.set(xlabel="step", ylabel="train loss (assistant tokens)",
           title=f"Ours: base SFT loss, {preset} preset (synthetic tasks)")
    writer.figure("base_loss", fig)
    plt.show()

# %% [markdown]
# ## The trainer's two guarantees, measured on the base model
# **Packing without cross-contamination.** transformers 5.23 keeps packed samples apart in attention
# (position ids that restart per sample give a block-diagonal mask), but its Mamba-2 torch path refuses
# `seq_idx` (CPU, or a GPU without causal-conv1d for the conv). `falcon_h1r.packed_mamba.enable_packed_mamba`
# supplies segment-aware twins there and keeps mamba-ssm's Triton scan (which honours `seq_idx`) on GPU.
# Below: each sample's loss packed into shared rows vs alone, and what position ids alone would give.
#
# **Balanced data-parallel token normalization.** With a global batch split over 2 ranks by length
# (rank 0 gets the short samples), the weight each supervised token gets in the all-reduced gradient.

# %%
checks = S.trainer_checks(sec, base)
if checks is None:
    display(Markdown("Not measured for a loaded checkpoint (the checks are about our trainer on our base)."
                     if S.is_checkpoint(info) else
                     f"No committed trainer-check record for the {preset} preset yet: run this notebook where "
                     "the preset computes (see README)."))
else:
    packing_check, norm_check = checks["packing"], checks["normalization"]
    display(pd.DataFrame([packing_check]))
    display(pd.DataFrame(norm_check["ranks"]))
    display(Markdown(f"Ours ({preset} preset): packed vs alone differ by at most "
                     f"**{packing_check['max_abs_diff_packed_vs_alone']:.1e}** nats per sample; position ids "
                     f"alone would leak Mamba-2 state (up to "
                     f"{packing_check['max_abs_diff_position_ids_only_vs_alone']:.2f} nats). Under the per-rank "
                     f"token mean a token on rank 0 weighs "
                     f"**{norm_check['per_rank_weight_ratio_rank0_over_rank1']:.2f}x** one on rank 1; balanced "
                     "gives every token the same weight, the global token mean (proved to 1e-6 on 2 gloo processes "
                     "in `tests/test_sft_distributed.py`)."))

# %% [markdown]
# ## Ours: the §2 ablations
# **One common start.** Every arm of every axis fine-tunes the same checkpoint for the same number of steps, and
# that checkpoint has never seen an arm's problems or its teachers' (slipping) traces: the preset's hybrid trained
# from scratch on the base-training split's problems (`sft_ablations.start_corpus`). At tiny that is plain language
# modelling on questions with their final answers (`answers`; tiny sits at the floor by design). At small it is an
# earlier, shorter SFT stage: clean worked solutions of both teachers, half each, in the chat turn (`chat`), with
# its rate held constant after the warm-up (`sft_ablations.start_lr_decay: constant`), i.e. a checkpoint taken in
# the middle of a run that is still learning. The note below says, from their records (numbers and verdicts),
# which starts small tried first and why each was left. Why not the finished SFT base: it
# has already learnt the stepwise teacher's traces, so an arm could only add more of the same (the previous grid
# measured how much extra fine-tuning hurts, and the teacher axis would favour the style the base was trained on);
# one from-scratch run per arm would need a
# base run's tokens for every arm, far past the GPU budget. Each arm then trains `sft_ablations.steps` steps of
# SFT on its own curated traces and is evaluated on the same held-out problems at the paper's sampling settings
# (T 0.6, top-p 0.95). The reference arm every axis varies: one stepwise teacher, n = 4 rollouts, correct traces
# only, difficulty weights on, the paper's Fig. 3 mixture, balanced normalization, and the learning rate the
# learning-rate grid finds best (that grid runs first, as the paper searched its rate first and then fixed it;
# its rates are the paper's 128e-6 to 1024e-6 carried to our width by µP).
#
# **The ablation teacher** slips (one intermediate step wrong, carried to the end) with a chance that grows with
# the level (`sft_ablations.teacher_slip_by_level`), so its verified pass rate falls with difficulty and its wrong
# traces look like real mistakes; a problem's pass rate over 12 rollouts sets its difficulty weight and whether it
# counts as hardest. Rows are appended to a work file as they finish, so an interrupted run resumes.

# %%
abl = S.ablations(sec)
grids, ablation_rows, start = abl.grids, abl.rows, abl.start
if abl.history:
    display(Markdown(abl.history))
if abl.note:
    display(Markdown(abl.note))
else:
    se = start["eval"]
    display(Markdown(f"Ours ({preset} preset): the common start trained {start['steps']} steps x "
                     f"{start['batch_size']} documents ({start['tokens']:,} tokens, loss {start['loss_first']:.2f} -> "
                     f"{start['loss_last']:.2f}, {start['train_wall_s']:.0f} s on {start['device']}); on the "
                     f"{len(se['outcomes'])} held-out problems it scores {se['acc']:.3f} ({start['kind']}). "
                     f"Example document:\n\n```\n{start['example_document'][:300]}\n```"))
    for note in (S.probe_note(start), S.unfinished_grid_note(start, preset)):
        if note:
            display(Markdown(note))

# %%
if grids:
    tables = S.ablation_tables(sec, abl)
    arms, n_heldout = tables.arms, tables.n_heldout
    writer.table("ablation_arms", arms, caption=f"Ours ({preset} preset, synthetic tasks): held-out pass@1 (T 0.6, "
                 f"top-p 0.95) per ablation arm, mean over seeds and {n_heldout} held-out problems, 95 % interval "
                 f"(stats.arm_mean: Student-t over seeds, crossed seeds x problems variance); every arm "
                 f"{sizes.steps} steps from the common start (pass@1 {start['eval']['acc']:.3f})")
    display(arms[["grid", "arm", "acc", "acc_low", "acc_high", "seeds", "informative", "entropy", "lr", "epochs"]])
    writer.summary(tables.summary)
    est = tables.estimates
    lines = [f"- `{k}`: {e.describe()}" for k, e in est.items()]
    summ = tables.summary
    display(Markdown(f"Reference rate (the learning-rate grid's best): {summ.get('ablation_reference_lr_paper', 0) * 1e6:.0f}e-6 "
                     f"in the paper's convention, {summ.get('ablation_reference_lr', 0):.4g} at our width. Every "
                     f"axis' estimate ({int(arms['seeds'].min())} seeds or more per arm that ran, {n_heldout} held-out "
                     "problems):\n" + "\n".join(lines)))

# %% [markdown]
# ### Each axis beside the paper
# For every axis: the paper's finding, each of its claims with our value and 95 % interval, and the status the
# claims scoreboard computes from the summary just written (`papers/claims.yaml`: *reproduced* when the sign is the
# paper's, the interval excludes 0 and the value is informative; *not testable* when a precondition says the testbed
# lacks the mechanism), then a figure with every arm's interval (dotted: the common start).

# %%
if grids:
    beside = S.axis_findings(sec, abl)
    writer.table("findings_vs_paper", beside, caption=f"The paper's §2 findings (papers/sft_ablation_findings.csv, "
                 f"papers/fig4_dp_balance.yaml) beside ours ({preset} preset, synthetic tasks), statuses by the "
                 f"claims scoreboard")
    for g in grids:
        rows_g = beside[beside.axis == g.name]
        display(Markdown(f"#### {g.name}: {g.question}\n**Paper:** {rows_g['paper_finding'].iloc[0] if len(rows_g) else ''}"))
        display(rows_g[["claim", "ours", "status", "reason"]])
        if not any(r["grid"] == g.name for r in ablation_rows):
            display(Markdown(f"No run of the {g.name} grid has a row yet (the grid is unfinished): no figure."))
            continue
        fig = axis_figure(g, arms, ablation_rows, sizes, start["eval"],
                          f"Ours: {g.name}, {preset} preset (synthetic tasks), 95 % intervals over seeds and problems")
        writer.figure(f"ablation_{g.name}", fig)
        plt.show()

# %% [markdown]
# ### Balanced vs per-rank normalization over training (the Fig. 4 analog)
# 4 data-parallel ranks simulated exactly in one process, length-grouped shards (rank 0 the shortest traces,
# rank 3 the longest): under the per-rank token mean a short trace's token weighs several times a long one's;
# balanced normalization gives every token the global mean's weight. Below: held-out pass@1 at every evaluated
# step with its 95 % interval (5 seeds at small), and how unequal the ranks' token counts were.

# %%
if any(r["grid"] == "normalization" for r in ablation_rows):
    curves = S.curves(abl)
    writer.table("normalization_curves", curves, caption=f"Ours ({preset} preset): held-out pass@1 over SFT steps "
                 "(step 0: the common start), 4 simulated DP ranks, mean over seeds and problems with 95 % interval")
    display(curves)
    summ = tables.summary
    if "dp_tokens_per_rank_max_over_min" in summ:
        display(Markdown(f"Supervised tokens per rank in one step, largest over smallest: median "
                         f"**{summ['dp_tokens_per_rank_max_over_min']:.2f}x** (10th percentile "
                         f"{summ['dp_tokens_per_rank_max_over_min_p10']:.2f}x, mean "
                         f"{summ['dp_tokens_per_rank_max_over_min_mean']:.2f}x) over every step of every run. "
                         "The paper's Fig. 4 (AIME25 avg@16 over the first 3,750 steps, balanced 4-10 points above) "
                         "prints no curve values, so only its range is compared (table above)."))

# %% [markdown]
# ### The section's claims (scoreboard rows, computed from this summary)

# %%
display(S.claim_rows(sec))

# %% [markdown]
# ## Training throughput and MFU (one GPU, 1B-class hybrid vs matched Qwen3)
# From `bench/train_throughput.py`, run on a GPU; off a GPU the committed record is rendered. Never a
# CPU number: MFU is only defined against a GPU's peak.

# %%
bench = S.gpu_record("train_throughput")  # committed under results/small/02_sft/
if bench is None:
    display(Markdown("No committed GPU record yet: run `python bench/train_throughput.py --out "
                     "results/small/02_sft/train_throughput.json` on a GPU."))
else:
    tp = pd.DataFrame(bench["runs"])
    display(Markdown(f"Ours, rendered from the committed record `results/small/02_sft/train_throughput.json`: "
                     f"**{bench['device']['gpu_name']}**, {bench['written_utc']}, random-weight 1B-class models, "
                     f"{tp['batch'][0]} x {tp['seq'][0]} tokens per step, fp32 weights with bf16 autocast."))
    display(tp[["family", "params", "tokens_per_s", "mfu", "achieved_tflops", "peak_mem_gb", "step_s"]])
    if preset == "small":  # a GPU figure belongs to the small results only, never to another preset's summary
        writer.summary({"hybrid_train_mfu": bench["summary"]["hybrid_train_mfu"],
                        "baseline_train_mfu": bench["summary"]["baseline_train_mfu"],
                        "hybrid_train_tok_s": bench["summary"]["hybrid_train_tok_s"]})
fig7 = S.gpu_record("liger_fig7")  # bench/train_throughput.py --fig7: Liger on vs off (paper Fig. 7)
if fig7 is None:
    display(Markdown("No committed Fig. 7 record yet: `python bench/train_throughput.py --fig7 --out "
                     "results/small/02_sft/train_throughput.json` on a GPU."))
    if preset == "small":  # said explicitly, so the claims scoreboard reads "not run", never a stale number
        writer.summary({"liger_fig7_measured": 0, "liger_step_time_ratio": None, "liger_peak_mem_ratio": None})
else:
    display(Markdown(fig7["note"]))
    if preset == "small":
        writer.summary({"liger_fig7_measured": 1, **fig7["summary"]})
zero3 = S.gpu_record("zero3_checkpoint_sft")  # scripts/sft_ddp.py worker --from-checkpoint ... --zero 3
if zero3 is not None:
    display(pd.DataFrame([{k: v for k, v in zero3.items() if not isinstance(v, (dict, list))}]).T.rename(
        columns={0: "ZeRO-3 SFT from a checkpoint (one GPU)"}))
gpu_checks = S.gpu_record("gpu_checks")
if gpu_checks is not None:
    pk = gpu_checks["packing"]
    display(Markdown(f"GPU checks ({gpu_checks['gpu']}, committed record): packed vs alone per-sample losses differ "
                     f"by {pk['packed_vs_alone_fp32_max_abs']:.1e} in fp32 with mamba-ssm's Triton scan honouring "
                     f"`seq_idx` ({pk['segmented_torch_scan_calls']} calls to our torch twin); transformers' fused "
                     f"training kernel without causal-conv1d fails with `{pk['library_fused_train_step']}` "
                     f"(why the trainer routes around it); DeepSpeed ZeRO-2 vs DDP loss curves on 1 GPU differ by at "
                     f"most {gpu_checks['deepspeed_zero2_vs_ddp_1gpu']['max_rel_loss_diff']:.1%} (bf16)."))

# %% [markdown]
# ## Multi-GPU checks (DeepSpeed ZeRO-2 and ZeRO-3, N GPUs vs 1 GPU at the same global batch)
# From `scripts/sft_ddp.py check`, rendered from their committed records: `multi_gpu_check.json` (ZeRO-2) and
# `multi_gpu_zero3.json` (ZeRO-3). The curves should match; per-rank peak memory shows what ZeRO-3 partitions.

# %%
for record, key, zero in (("multi_gpu_check", "multi_gpu", 2), ("multi_gpu_zero3", "multi_gpu_zero3", 3)):
    mg = S.gpu_record(record)
    if mg is None:
        display(Markdown(f"No `{record}.json` yet: run `python scripts/sft_ddp.py check --preset small --gpus 2 "
                         f"--engine deepspeed --zero {zero} --out results/small/02_sft/{record}.json` on a machine "
                         "with 2 or more GPUs."))
        continue
    n = mg["gpus"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(mg["loss_1gpu"], label="1 GPU (gradient accumulation)")
    ax.plot(mg[f"loss_{n}gpu"], "--", label=f"{n} GPUs, ZeRO-{mg['zero']}")
    ax.set(xlabel="step", ylabel="train loss", title=f"Ours: {mg['preset']} preset SFT, same global batch")
    ax.legend()
    if preset == "small":
        writer.figure(f"{key}_loss", fig)
    plt.show()
    peaks = [r.get("peak_mem_gb") for r in mg.get("per_rank", []) if r.get("peak_mem_gb") is not None]
    display(Markdown(f"ZeRO-{mg['zero']} on {n} GPUs: max relative loss difference {mg['max_rel_loss_diff']:.2e} "
                     f"(curves match: **{mg['curves_match']}**); per-GPU throughput "
                     f"{mg[f'tokens_per_s_per_gpu_{n}gpu']:,.0f} tokens/s on {n} GPUs vs "
                     f"{mg['tokens_per_s_per_gpu_1gpu']:,.0f} on 1"
                     + (f"; peak memory per rank {', '.join(f'{x:.1f}' for x in peaks)} GB." if peaks else ".")))
    if preset == "small":
        writer.summary({f"{key}_max_rel_loss_diff": mg["max_rel_loss_diff"],
                        f"{key}_tok_s_per_gpu": mg[f"tokens_per_s_per_gpu_{n}gpu"],
                        **({f"{key}_gpus": n, f"{key}_peak_mem_gb_max": max(peaks) if peaks else None}
                           if zero == 3 else {})})

# %%
writer.provenance()
