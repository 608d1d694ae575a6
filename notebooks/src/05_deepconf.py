# %% [markdown]
# # 05 · DeepConf test-time scaling (paper §5, Table 7)
#
# The paper scales test-time compute with **DeepConf** (Fu et al. 2025): sample up to K = 512 reasoning
# traces per problem, score each by its *confidence* (the negative mean of the top-20 log-probs of every
# token, averaged over sliding windows), stop low-confidence traces early, and vote among the survivors.
#
# 1. **The paper's Table 7** (from `papers/`): accuracy and generated tokens at DeepConf@512, with its
#    token-saving arithmetic recomputed.
# 2. **Ours**: DeepConf on this preset's own SFT base model (`falcon_h1r.sections.common.get_base_model`) and
#    held-out synthetic problems, run by `falcon_h1r.sections.deepconf.run`: a pool of complete traces per
#    problem (`traces.parquet`, `falcon_h1r.tracestore`), evaluated with the DeepConf paper's protocol
#    (`falcon_h1r.deepconf.replay_evaluate`: every number a mean over 64 resamplings of the pool), plus one
#    *live* online run per variant with the early stop inside the generation loop
#    (`falcon_h1r.deepconf.run_online`), and the cost of that stop per decode step
#    (`falcon_h1r.deepconf.measure_confidence_overhead`). **At the tiny and small presets every "ours" number is
#    about those synthetic tasks, not the paper's benchmarks.**
#
# Where each number is computed: the paper's from `falcon_h1r.papers`; ours by `falcon_h1r.sections.deepconf`
# (`run` / `load` for the tables, `headline` for `summary.json`, `methods_at_budget`, `savings_notes` and
# `live_stop_counts` for the tables and sentences below), which names the library method behind each.

# %% tags=["parameters"]
preset = "tiny"
overrides = {}

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from falcon_h1r import papers
from falcon_h1r.config import load_preset
from falcon_h1r.results import SectionWriter
from falcon_h1r.sections import deepconf as dx
from falcon_h1r.sections.common import run_mode

cfg = load_preset(preset, overrides)
recipe, experiment = dx.recipes(cfg)
mode = run_mode(cfg)
writer = SectionWriter(preset, "05_deepconf", params=cfg.to_dict(), seed=cfg.seed,
                       mode="computed" if mode == "compute" else "rendered")
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
# ## Ours: DeepConf on the preset's base model
# Which problems: voting can only matter where the model is right *some* of the time, so each held-out
# math/science problem is screened with a few samples and kept when 0 < pass rate < 1 (the paper's hard
# benchmarks are of that kind). Then a pool of complete traces per kept problem, the replay evaluation,
# the live runs and the overhead probe. At the tiny preset this takes about a minute on two CPU cores.

# %%
if mode == "compute":
    res = dx.run(cfg, writer=writer)
else:
    res = dx.load(writer.dir)
recipe, experiment = res.recipe, res.experiment  # the blocks the records were made with
info = res.info
qualifying = info["n_qualifying"]
screened = info["screen_samples"] > 0
pool_text = (f"a pool of **{info['pool_size']}** complete traces each ({info['pool_traces']:,} traces, "
             f"{info['pool_tokens']:,} tokens)")
if screened:
    display(Markdown(
        f"Screened **{info['n_candidates']}** held-out problems with {info['screen_samples']} samples each: "
        f"**{qualifying}** have 0 < pass rate < 1; DeepConf runs on **{info['n_problems']}** of them with {pool_text}."
        + (" **No problem qualified: the pool uses the first screened problems anyway (a smoke run; every method "
           "is then as good as pass@1).**" if info.get("unqualified_fallback") else "")))
else:
    display(Markdown(f"No screening at this preset: DeepConf runs on the first **{info['n_problems']}** problems "
                     f"with {pool_text}."))
sel = res.screening[res.screening["selected"]]
display(sel.groupby("domain").agg(problems=("problem_id", "count"), mean_pass_rate=("pass_rate", "mean")))

# %%
if screened:
    bins = np.linspace(0, 1, res.screening["n"].max() + 2)
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.hist(res.screening["pass_rate"], bins=bins, color="0.6", label="screened")
    ax.hist(sel["pass_rate"], bins=bins, color="C0", label="kept")
    ax.set(xlabel="pass rate over the screening samples", ylabel="problems", title=f"Problem screening ({OURS})")
    ax.legend()
    writer.figure("screening", fig)
    plt.show()

# %% [markdown]
# ### Accuracy against generated tokens
# Majority voting over K traces (K = 1, 2, 4, ...), offline DeepConf (keep the top η % of the K traces by
# a confidence score, then vote weighted by it), and online DeepConf-low (η = 10 %) and -high (η = 90 %)
# replayed over the pool: warm-up traces, the stop threshold, truncation of every later trace where its
# window mean first drops below it, and the τ = 0.95 consensus stop. Tokens are summed over the problems.

# %%
curves = res.curves
SCORE_LABEL = {"mean_confidence_weighted": "mean", "tail_confidence_weighted": "tail",
               "bottom_window_weighted": "bottom-10 %", "min_window_weighted": "lowest group"}
maj = curves[curves["series"] == "majority"].sort_values("K")
pass1 = float(curves.loc[curves["series"] == "pass@1", "acc"].iloc[0])
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, eta, online in zip(axes, (recipe.eta_low, recipe.eta_high), ("online_low", "online_high")):
    ax.plot(maj["tokens"], maj["acc"], "k-o", ms=4, label="majority@K")
    for k, x, y in zip(maj["K"], maj["tokens"], maj["acc"]):
        ax.annotate(f"{k}", (x, y), textcoords="offset points", xytext=(0, -11), fontsize=7, ha="center")
    for i, (method, label) in enumerate(SCORE_LABEL.items()):
        c = curves[(curves["method"] == method) & (curves["eta"] == eta)].sort_values("K")
        ax.plot(c["tokens"], c["acc"], "-", marker=".", color=f"C{i}", alpha=0.8, label=f"offline, {label}")
    on = curves[curves["series"] == online].sort_values("K")
    ax.plot(on["tokens"], on["acc"], "r*", ms=13, label=f"online DeepConf-{online.split('_')[1]} (K = budget)")
    for k, x, y in zip(on["K"], on["tokens"], on["acc"]):
        ax.annotate(f"B={k}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8, color="r")
    ax.axhline(pass1, color="0.5", ls=":", label="pass@1")
    ax.set_xscale("log")
    ax.set(xlabel="generated tokens (sum over problems)", title=f"η = {eta:g} % kept")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.2), ncol=3, frameon=False)
axes[0].set_ylabel(f"accuracy (mean over {experiment.n_resamples} resamplings)")
fig.suptitle(f"DeepConf: accuracy vs tokens ({OURS}, {info['n_problems']} problems)")
fig.tight_layout()
writer.figure("accuracy_vs_tokens", fig)
plt.show()

# %%
top = res.max_budget
at_top = dx.methods_at_budget(res)
writer.table(f"methods_at_k{top}", at_top, caption=f"Ours ({preset} preset, synthetic tasks): every method at "
             f"K = {top} (online: budget {top}), mean (std) over {experiment.n_resamples} resamplings",
             float_format="%.4g")
display(at_top.style.format({"acc": "{:.3f}", "acc_std": "{:.3f}", "tokens": "{:,.0f}",
                             "traces_per_problem": "{:.1f}", "tokens_vs_majority": "{:.2f}"}).hide(axis="index"))

# %% [markdown]
# ### Token savings of online DeepConf
# *Same budget* is the DeepConf paper's Table 2 convention (online tokens against majority@K at the same K).
# *At equal accuracy* compares with the tokens majority voting needs to first reach the same accuracy on
# its K curve (log-interpolated); empty where majority never gets there at K up to the pool.

# %%
sav = res.savings
display(sav.style.format({c: "{:.3f}" for c in ("acc", "majority_acc")} |
                         {c: "{:,.0f}" for c in ("tokens", "majority_tokens", "majority_tokens_at_equal_acc")} |
                         {c: "{:.1%}" for c in ("saving_same_budget", "saving_at_equal_acc")}, na_rep="–")
        .hide(axis="index"))
for note in dx.savings_notes(res, OURS):
    display(Markdown(note))

# %% [markdown]
# ### The live early stop
# One online run per variant on a few problems, generating for real: 16 warm-up traces, then batches of
# `online_batch_size` traces with `EarlyStopController` inside the decode loop. Every trace generated under
# the threshold is checked against the replay's rule (it must stop exactly at the first token whose window
# mean is below the threshold, or run to its end if none is). Beside each run: the replay of the same
# problem's pool at the same budget and batch size (mean over 64 draws). A live run is one draw, so its
# tokens scatter around the replay's mean.

# %%
live = res.live
if len(live):
    cols = ["problem_id", "variant", "threshold", "traces", "stopped", "tokens", "replay_tokens", "replay_tokens_std",
            "live_tokens_per_trace", "replay_tokens_per_trace", "pool_tokens_per_trace", "stop_reason", "correct",
            "stop_checked", "stop_agree", "stop_borderline", "stop_disagree"]
    display(live[[c for c in cols if c in live]])
    n = dx.live_stop_counts(live)
    display(Markdown(f"Live stops that match the replay rule: **{n['agree_or_borderline']} / {n['checked']}** traces "
                     f"({n['borderline']} within rounding of the threshold); {n['stopped']} traces were stopped "
                     f"early. Live tokens / replay mean: **{n['live_vs_replay_tokens_ratio']:.2f}** ({OURS})."))

# %% [markdown]
# ### Cost of the live stop per decode step
# The decode loop with and without the controller (threshold set so that it never fires, so both decode the
# same steps). On GPU with the fast engine (`falcon_h1r.inference.engine`) the controller is captured in the step's CUDA
# graph and its cost is the difference of the two decode clocks; in transformers' loop (CPU) its calls are
# timed inside the loop, because two whole runs on a shared CPU differ by more than the controller costs.
# Target on GPU: at most 3 % of a decode step (`bench/deepconf_overhead.py` measures the same).

# %%
over = res.overhead
if over is None:
    display(Markdown("No overhead record for this preset yet: run `bench/deepconf_overhead.py`."))
else:
    display(pd.DataFrame([{k: v for k, v in over.items() if not isinstance(v, list)}]).T.rename(columns={0: "value"}))
    loop_diff = over.get("overhead_fraction_loop_diff", over["overhead_fraction"])
    display(Markdown(f"Controller cost: **{over['overhead_fraction']:.1%}** of a decode step "
                     f"({over.get('method', 'loop difference')}; {over['engine']} engine, {over['device']}, batch "
                     f"{over['batch_size']}, {over['step_s_without'] * 1e3:.2f} ms per step without it). The "
                     f"difference of whole runs was {loop_diff:+.1%}; the controller call alone, eagerly, "
                     f"{over['overhead_fraction_isolated']:.1%} ({OURS})."))

# %%
writer.provenance({"deepconf_run": {k: v for k, v in info.items() if k != "problems"}})
