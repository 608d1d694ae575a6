# %% [markdown]
# # 05 · DeepConf test-time scaling (paper §5, Table 7)
#
# The paper scales test-time compute with **DeepConf** (Fu et al. 2025): sample up to K = 512 reasoning
# traces per problem, score each by its *confidence* (the negative mean of the top-20 log-probs of every
# token, averaged over sliding windows), stop low-confidence traces early, and vote among the survivors.
#
# 1. **The paper's Table 7** (from `papers/`): accuracy and generated tokens at DeepConf@512, with its
#    token-saving arithmetic recomputed.
# 2. **Ours**: DeepConf on this preset's independently trained SFT bases (`eval.base_seeds`) and held-out
#    synthetic problems, run by `falcon_h1r.sections.deepconf.run`: problems screened for 0 < pass rate < 1
#    (pooled over the bases), one pool of complete traces per base and problem (`falcon_h1r.tracestore`),
#    evaluated with the DeepConf paper's protocol (every number a mean over 64 draws of K traces from the pool,
#    `falcon_h1r.deepconf.evaluate_problem`), plus *live* online runs with the early stop inside the decode
#    loop (`falcon_h1r.deepconf.run_online`) and the cost of that stop per decode step
#    (`falcon_h1r.deepconf.measure_confidence_overhead`). Every accuracy and token figure carries a 95 %
#    interval over the bases and problems (`falcon_h1r.stats`, computed in `falcon_h1r.sections.deepconf_report`).
#    **At the tiny and small presets every "ours" number is about those synthetic tasks, not the paper's
#    benchmarks.**
#
# Where each number is computed: the paper's from `falcon_h1r.papers`; ours by `falcon_h1r.sections.deepconf`
# (`run` / `load` for the records, `headline` for `summary.json`, `methods_at_budget` and `savings_notes`) and
# `falcon_h1r.sections.deepconf_report` (curves, premise, savings, keep-rule parity), which name the library
# method behind each.

# %% tags=["parameters"]
preset = "tiny"
overrides = {}

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from falcon_h1r import papers
from falcon_h1r.sections import deepconf as dx
from falcon_h1r.sections import deepconf_report as dr
from falcon_h1r.sections.common import open_section
from falcon_h1r.sections.scoreboard import section_rows

sec = open_section(preset, dx.SECTION, overrides)
cfg, mode, writer = sec.cfg, sec.mode, sec.writer
recipe, experiment = dx.recipes(cfg)
OURS = f"ours, {preset} preset, synthetic tasks"
where = "on this machine" if mode == "compute" else f"from the committed records in {writer.dir}"
display(Markdown(f"Preset **{preset}**: this run will **{mode}** its DeepConf results ({where})."))

# %% [markdown]
# ## The paper's Table 7: DeepConf@512 (the paper's numbers, from `papers/`)
# Online DeepConf with K = 512 traces, 16 warm-up traces, the threshold at the 10th percentile of their
# lowest 2,048-token group confidence; early-stopped traces count in the token totals. (The paper calls this
# setting "aggressive"; in the DeepConf paper's terms a 10th-percentile threshold keeps about 90 % of the
# warm-up traces, which is **DeepConf-high**, the conservative variant. Ours reports both.)

# %%
t7 = papers.load("table7_deepconf")
display(t7.pivot(index="model", columns="benchmark", values=["acc", "tokens_m"]))
avg = papers.deepconf_averages(t7)
writer.table("paper_table7_averages", avg.reset_index(), caption="The paper's Table 7: mean accuracy and tokens "
             "over the four benchmarks (recomputed)")
display(avg)

# %%
s24 = papers.deepconf_token_savings(t7, "Falcon-H1R-7B", "DeepSeek-R1-0528-Qwen3-8B", "aime24")
s25 = papers.deepconf_token_savings(t7, "Falcon-H1R-7B", "DeepSeek-R1-0528-Qwen3-8B", "aime25")
writer.summary({"paper_aime24_token_saving_vs_dsr1": s24, "paper_aime25_token_saving_vs_dsr1": s25})
display(Markdown(f"Falcon-H1R-7B vs DS-R1-0528-Qwen3-8B, recomputed from Table 7: AIME24 **{s24:.1%}** fewer "
                 f"tokens, AIME25 **{s25:.1%}**. The paper's headline quotes 38 % for AIME25: that figure matches "
                 "AIME24."))

# %% [markdown]
# ## Ours: the problems, the bases and the trace pools
# Voting can only matter where a model is right *some* of the time, so each held-out math/science problem is
# kept when its pass rate, pooled over the bases, lies strictly between 0 and 1 (the pass rates each base
# recorded at the paper's sampling settings when it was trained, or fresh samples; `deepconf_experiments.screen`).
# Every base then gets its own pool of complete traces on the same problems, so every comparison is paired by
# base and problem. The confidence window and tail are scaled to the traces: the paper's 2,048-token windows
# hold 7-13 disjoint windows of its 15-26K-token traces; the window below is chosen in the preset with the same
# ratio in mind.

# %%
if mode == "compute":
    res = dx.run(cfg, writer=writer)
else:
    res = dx.load(writer.dir)
recipe, experiment = res.recipe, res.experiment  # the blocks the records were made with
info = res.info
summary = dx.headline(res)
tt = info["trace_tokens"]
qual = info["n_qualifying"]
display(Markdown(
    f"**{len(info['base_seeds'])}** independently trained base(s) (seeds {info['base_seeds']}); "
    + (f"**{qual}** of {info['n_candidates']} screened problems have 0 < pass rate < 1; " if qual is not None else "")
    + f"DeepConf runs on **{info['n_problems']}** of them with a pool of **{info['pool_size']}** complete traces per "
    f"base and problem ({info['pool_traces']:,} traces, {info['pool_tokens']:,} tokens). Pool traces: median "
    f"**{tt['median']:.0f}** tokens (p10 {tt['p10']:.0f}, p90 {tt['p90']:.0f}, max {tt['max']:.0f}; "
    f"{tt['length_capped']:.1%} hit the length cap); window **{recipe.window}** tokens, so the median trace holds "
    f"**{summary['windows_per_median_trace']:.1f}** disjoint windows; tail {recipe.tail_tokens} tokens ({OURS})."
    + (" **No problem qualified: the pools use the first screened problems anyway (a smoke run; every method is "
       "then as good as pass@1).**" if info.get("unqualified_fallback") else "")))
sel = res.screening[res.screening["selected"]]
display(sel.groupby("domain").agg(problems=("problem_id", "count"), mean_pass_rate=("pass_rate", "mean")))

# %%
if qual is not None:
    fig, ax = plt.subplots(figsize=(5, 2.6))
    bins = np.linspace(0, 1, 21)
    ax.hist(res.screening["pass_rate"].dropna(), bins=bins, color="0.6", label="screened")
    ax.hist(sel["pass_rate"].dropna(), bins=bins, color="C0", label="kept")
    ax.set(xlabel="pass rate pooled over the bases", ylabel="problems", title=f"Problem screening ({OURS})")
    ax.legend()
    writer.figure("screening", fig)
    plt.show()

# %% [markdown]
# ## First, the premise: does voting beat a single sample here?
# DeepConf makes voting cheaper and filters its votes; that only matters if voting over many traces beats one
# trace. Majority@K minus pass@1, paired by base and problem, with its 95 % interval over both, at every K.

# %%
out = res.report()
prem = dr.premise(out)
display(prem.style.format({c: "{:+.3f}" for c in ("majority_minus_pass1", "majority_minus_pass1_low",
                                                   "majority_minus_pass1_high")}
                          | {"majority_acc": "{:.3f}", "pass1": "{:.3f}", "majority_minus_pass1_ci95": "{:.3f}"})
        .hide(axis="index"))
display(Markdown(dr.premise_sentence(summary, res.max_budget, OURS)))

# %% [markdown]
# Where the premise's size and its interval come from: each base's own difference (the interval above is over
# bases, so bases that disagree widen it), and the (base, problem) pairs binned by their pass@1 in the pool:
# voting lifts a problem whose most frequent answer is right and sinks one whose most frequent answer is wrong,
# so the gain is made in the middle bins and lost where one wrong answer dominates
# (`deepconf_report.premise_by_base`, `deepconf_report.premise_by_pass_rate`).

# %%
by_base = dr.premise_by_base(out, res.max_budget)
display(by_base.style.format(precision=3).hide(axis="index"))
by_rate = dr.premise_by_pass_rate(out, res.max_budget)
display(by_rate.style.format(precision=3, na_rep="-").hide(axis="index"))
writer.table("premise_by_base", by_base, caption=f"Ours ({preset} preset, synthetic tasks): pass@1, majority@"
             f"{res.max_budget} and their difference per base (means over problems)", float_format="%.4f")
writer.table("premise_by_pass_rate", by_rate.astype({"pass_rate_bin": str}), caption=f"Ours ({preset} preset, "
             f"synthetic tasks): (base, problem) pairs binned by pass@1, with majority@{res.max_budget} in each bin",
             float_format="%.4f")
spread = by_base["majority_minus_pass1"]
middle = by_rate.loc[[iv.left >= 0.4 and iv.right <= 0.6 for iv in by_rate["pass_rate_bin"]], "pairs"].sum()
display(Markdown(f"Per base, majority@{res.max_budget} minus pass@1 runs from **{spread.min():+.3f}** to "
                 f"**{spread.max():+.3f}**; {int(middle)} of {int(by_rate['pairs'].sum())} (base, problem) pairs "
                 f"have a pass@1 in (0.4, 0.6], where voting moves a problem most ({OURS})."))

# %% [markdown]
# ### Accuracy against generated tokens
# Majority voting over K traces (K = 1, 2, 4, ...), offline DeepConf (keep the top η % of the K traces by a
# confidence score, then vote weighted by it), online DeepConf-low (η = 10 %) and -high (η = 90 %) replayed
# over the pools (warm-up, threshold, truncation where a trace's window mean first drops below it, and the
# τ = 0.95 consensus stop), the confidence stop alone (hollow: no consensus stop), and the consensus stop alone.
# Tokens are generated tokens per problem. Bars: 95 % intervals over bases and problems.

# %%
curves = dr.curves(out)
SCORE_LABEL = {"mean_confidence_weighted": "mean", "tail_confidence_weighted": "tail",
               "bottom_window_weighted": "bottom-10 %", "min_window_weighted": "lowest group"}
suffix = "" if recipe.keep_rule == "floor" else f"/{recipe.keep_rule}"


def finite(x):
    x = x.astype(float)
    return x.where(np.isfinite(x), 0.0)


def bars(ax, c, fmt, **kw):
    ax.errorbar(c["tokens"], c["acc"], yerr=finite(c["acc_ci95"]), xerr=finite(c["tokens_ci95"]), fmt=fmt,
                capsize=2, elinewidth=0.8, **kw)


maj = curves[curves["series"] == "majority"].sort_values("K")
pass1 = curves[curves["series"] == "pass@1"].iloc[0]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
for ax, eta, variant in zip(axes, (recipe.eta_low, recipe.eta_high), ("low", "high")):
    bars(ax, maj, "k-o", ms=4, label="majority@K")
    for k, x, y in zip(maj["K"], maj["tokens"], maj["acc"]):
        ax.annotate(f"{k}", (x, y), textcoords="offset points", xytext=(0, -12), fontsize=7, ha="center")
    for i, (method, label) in enumerate(SCORE_LABEL.items()):
        c = curves[curves["series"] == f"{method}@{eta:g}{suffix}"].sort_values("K")
        ax.plot(c["tokens"], c["acc"], "-", marker=".", color=f"C{i}", alpha=0.8, label=f"offline, {label}")
        ax.fill_between(c["tokens"], c["acc"] - finite(c["acc_ci95"]), c["acc"] + finite(c["acc_ci95"]),
                        color=f"C{i}", alpha=0.08, lw=0)
    on = curves[curves["series"] == f"online_{variant}"].sort_values("K")
    bars(ax, on, "r*", ms=11, label=f"online DeepConf-{variant} (K = budget)")
    bo = curves[curves["series"] == f"online_{variant}/budget_only"].sort_values("K")
    bars(ax, bo, "o", ms=6, mfc="none", color="r", label="confidence stop alone")
    co = curves[curves["series"] == "consensus_only"].sort_values("K")
    bars(ax, co, "s", ms=5, mfc="none", color="0.3", label="consensus stop alone")
    ax.axhline(pass1["acc"], color="0.5", ls=":", label="pass@1")
    ax.set_xscale("log")
    ax.set(xlabel="generated tokens per problem", title=f"η = {eta:g} % kept")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.2), ncol=3, frameon=False)
axes[0].set_ylabel(f"accuracy (mean over bases, problems, {experiment.n_resamples} draws)")
has_ci = bool(np.isfinite(curves["acc_ci95"].astype(float)).any())
shown = curves[curves["series"] != "pass@1"]["acc"]
axes[0].set_ylim(max(-0.02, shown.min() - 0.1), min(1.02, shown.max() + 0.1))  # intervals may reach past it
fig.suptitle(f"DeepConf: accuracy vs tokens ({OURS}; {len(info['base_seeds'])} base(s) x {info['n_problems']} problems)\n"
             + ("bars and bands: 95 % intervals over bases and problems" if has_ci else "no interval: one base"))
fig.tight_layout()
writer.figure("accuracy_vs_tokens", fig)
plt.show()

# %%
top = res.max_budget
at_top = dx.methods_at_budget(res, curves)
writer.table(f"methods_at_k{top}", at_top, caption=f"Ours ({preset} preset, synthetic tasks): every method at "
             f"K = {top} (online: budget {top}), mean with 95 % interval over bases and problems, and against "
             f"majority@{top} (paired)", float_format="%.4g")
display(at_top.style.format({c: "{:.3f}" for c in at_top.columns if c.startswith("acc")}
                            | {"tokens": "{:,.0f}", "tokens_ci95": "{:,.0f}", "traces": "{:.1f}", "voters": "{:.1f}",
                               "token_saving_vs_majority": "{:+.1%}", "token_saving_vs_majority_ci95": "{:.1%}"},
                            na_rep="–").hide(axis="index"))
spread = summary.get("voting_methods_acc_spread")
if spread is not None:
    display(Markdown(f"The five votes without filtering (majority; mean, tail, bottom-10 % and lowest-group "
                     f"weighted) at K = {top}: best minus worst accuracy **{spread:+.3f}** ± "
                     + (f"{summary['voting_methods_acc_spread_ci95']:.3f}" if summary.get("voting_methods_acc_spread_ci95")
                        is not None else "n/a") + f" ({OURS})."))

# %% [markdown]
# ### How many traces the filter keeps: our rule and the official code's
# The DeepConf paper's text keeps "the top η %"; its official analysis code (which made the paper's numbers)
# keeps every trace whose score reaches `np.percentile(scores, 100 - η)`, one more than ⌊η K / 100⌋ for most K,
# and more on ties. `deepconf.keep_rule` picks the headline's rule; both are reported.

# %%
parity = dr.keep_rule_parity(out, (recipe.eta_low, recipe.eta_high), top)
display(parity)
display(Markdown(f"This run's headline uses the **{recipe.keep_rule}** rule; the DeepConf paper's numbers used the "
                 "official code's **percentile** rule. Kept traces at K = "
                 f"{top}: {', '.join(f'η {r.eta:g}: {r.kept_floor:.1f} (floor) vs {r.kept_percentile:.1f} (percentile)' for r in parity.drop_duplicates('eta').itertuples())}."
                 if len(parity) else "No filtered series at this K."))

# %% [markdown]
# ### Token savings of online DeepConf, and of each stop
# *Same budget* is the DeepConf paper's Table 2 convention (online tokens against majority@K at the same K).
# *At equal accuracy* compares with the tokens majority voting needs to first reach the same accuracy on its K
# curve (log-interpolated, per base; empty where it never does). The confidence stop alone (budget-only) and the
# consensus stop alone are measured apart, so each one's saving is known.

# %%
sav = dr.savings(out, [s for s in out.series() if s.startswith(("online_", "consensus_only"))])
cols = ["series", "budget", "acc", "majority_acc", "acc_minus_majority", "acc_minus_majority_ci95", "tokens",
        "majority_tokens", "saving_same_budget", "saving_same_budget_ci95", "saving_at_equal_acc",
        "saving_at_equal_acc_ci95"]
display(sav[cols].style.format({c: "{:.3f}" for c in ("acc", "majority_acc")}
                               | {c: "{:+.3f}" for c in ("acc_minus_majority",)} | {"acc_minus_majority_ci95": "{:.3f}"}
                               | {c: "{:,.0f}" for c in ("tokens", "majority_tokens")}
                               | {c: "{:.1%}" for c in ("saving_same_budget", "saving_same_budget_ci95",
                                                         "saving_at_equal_acc", "saving_at_equal_acc_ci95")},
                               na_rep="–").hide(axis="index"))
for note in dx.savings_notes(res, summary, OURS):
    display(Markdown(note))

# %% [markdown]
# ### The live early stop
# Online runs per variant on a few problems of the first base, generating for real: 16 warm-up traces, then
# batches of `online_batch_size` traces with `EarlyStopController` inside the decode loop. Every trace generated
# under the threshold is checked against the replay's rule (it must stop exactly at the first token whose window
# mean is below the threshold, or run to its end if none is). Beside each run: the replay of the same problem's
# pool at the same budget and batch size (mean over 64 draws). A live run is one draw, so its tokens scatter
# around the replay's mean.

# %%
live = res.live
if len(live):
    cols = ["problem_id", "variant", "threshold", "traces", "stopped", "tokens", "replay_tokens", "replay_tokens_std",
            "live_tokens_per_trace", "replay_tokens_per_trace", "pool_tokens_per_trace", "stop_reason", "correct",
            "stop_checked", "stop_agree", "stop_borderline", "stop_disagree"]
    display(live[[c for c in cols if c in live]])
    n = dx.live_stop_counts(live)
    ratio = n.get("live_vs_replay_tokens_ratio")
    display(Markdown(f"Live stops that match the replay rule: **{n['agree_or_borderline']} / {n['checked']}** traces "
                     f"({n['borderline']} within rounding of the threshold); {n['stopped']} traces were stopped "
                     "early." + (f" Live tokens / replay mean: **{ratio:.2f}**" if ratio is not None else "")
                     + f" ({OURS})."))

# %% [markdown]
# ### Cost of the live stop per decode step
# The decode loop with and without the controller (threshold set so that it never fires, so both decode the
# same steps). On GPU with the fast engine (`falcon_h1r.inference.engine`) the controller is captured in the step's
# CUDA graph and its cost is the difference of the two decode clocks, paired repeat by repeat (each repeat decodes
# without, with, and with the torch form back to back) and the median over repeats taken
# (`falcon_h1r.deepconf.overhead.paired_overhead`); in transformers' loop (CPU) its calls are timed inside the
# loop, because two whole runs on a shared CPU differ by more than the controller costs.
# Target on GPU: at most 3 % of a decode step (`bench/deepconf_overhead.py` measures the same). A CPU figure
# says nothing about the GPU target. On CUDA the controller is one fused Triton kernel
# (`falcon_h1r.deepconf.stop_kernel`); records made since then also time its torch form in the same runs.

# %%
over = res.overhead
if over is None:
    display(Markdown("No overhead record for this preset yet: run `bench/deepconf_overhead.py`."))
else:
    display(pd.DataFrame([{k: v for k, v in over.items() if not isinstance(v, list)}]).T.rename(columns={0: "value"}))
    loop_diff = over.get("overhead_fraction_min_diff", over.get("overhead_fraction_loop_diff"))
    spread = (f", median of {len(over['overhead_fraction_repeats'])} paired repeats ranging "
              f"{over['overhead_fraction_range'][0]:+.1%} to {over['overhead_fraction_range'][1]:+.1%}"
              if over.get("overhead_fraction_range") else "")
    display(Markdown(f"Controller cost: **{over['overhead_fraction']:.1%}** of a decode step "
                     f"({over.get('method', 'loop difference')}{spread}; {over['engine']} engine, {over['device']}, "
                     f"batch {over['batch_size']}, {over['step_s_without'] * 1e3:.2f} ms per step without it). The "
                     f"difference of the fastest runs was {loop_diff:+.1%}; the controller call alone, eagerly, "
                     f"{over['overhead_fraction_isolated']:.1%}. Controller form: "
                     f"{over.get('controller_form', 'torch ops (recorded before the fused kernel)')}"
                     + (f"; its torch form in the same runs: {over['overhead_fraction_torch_form']:.1%}"
                        if over.get("overhead_fraction_torch_form") is not None else "")
                     + f" ({OURS})."))

# %% [markdown]
# ## What can be read from this run, and the claims it tests
# An estimate is *not informative* when it rests on fewer than 3 bases or 30 problems, or its interval is
# infinite or of zero width (`falcon_h1r.stats`); such a number is never a headline and never reproduces a
# claim. The claims below are computed by rule from `summary.json` (`papers/claims.yaml`).

# %%
writer.summary(summary)
flags = {k[:-len("_informative")]: v for k, v in summary.items() if k.endswith("_informative")}
weak = [k for k, ok in flags.items() if not ok]
reasons = sorted({part for k in weak for part in (summary.get(f"{k}_reason") or "").split("; ") if part})
display(Markdown(f"{len(flags) - len(weak)} of {len(flags)} estimates are informative at this preset"
                 + (f"; the others are not: {'; '.join(reasons)}." if weak else ".")))
display(section_rows(preset, dx.SECTION))

# %%
writer.provenance({"deepconf_run": {k: v for k, v in info.items() if k != "problems"}})
