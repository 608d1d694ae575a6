# %% [markdown]
# # 01 · Data curation (paper §2.1, §3.1)
#
# The paper curates its SFT traces (quality filters, verification against ground truth, difficulty-aware
# weights, a math-heavy domain mixture: Fig. 3) and its RL problems (pass rates from 8 rollouts of the
# SFT model, then rules per 0/8…8/8 bin: Fig. 5), and checks both against the benchmarks for
# contamination (§4.1). Below, the paper's own numbers come from `papers/`; ours come from running the
# same pipeline on the chosen preset:
#
# - **SFT pool**: traces from an *imperfect* programmatic teacher (`tasks.TeacherNoise` at the recipe's
#   rates: wrong answers, missing `\boxed{}`, empty reasoning, broken or JavaScript code, runaway
#   length), plus a small fraction of records damaged as bad input, so every filter has real work.
# - **RL pool**: held-out problems (split `rl`, never a test question, deduplicated against the SFT
#   problems), with pass rates from k = 8 rollouts of the preset's SFT base model at τ 0.6, top-p 0.95.
# - **Checks behind the claims**: independent re-checks of the rules on what was kept and positive controls
#   that plant duplicates and held-out problems (`curation_tables` -> `claim_checks`); the notebook ends with
#   this section's rows of the claims scoreboard.
#
# Where each number is computed (one hop: this notebook calls `falcon_h1r.sections.curation`, whose functions
# name the library method they run): `curation_tables` (`curate_sft` -> `falcon_h1r.curation.sft_records`
# filters, verification and weights, `curation.mixture.build_mixture`; `curate_rl_pool` ->
# `curation.rl_pool.select_rl_pool` with `curation.pass_rates.estimate_pass_rates`; `curation.dedup.contamination`;
# the SFT model from `falcon_h1r.sections.common.get_base_model`; `claim_checks` -> `curation.audit`,
# `curation.controls`), `mixture_side_by_side` (`papers/` beside
# `curation.mixture.mixture_table`), `length_fits` (`curation.mixture.fit_lognormal`), `pass_rate_tables`
# (`curation.rl_pool.rl_decision`'s decisions). Grading: `falcon_h1r.verify`, code tests in `falcon_h1r.sandbox`.
# **At the tiny and small presets every "ours" number is about synthetic tasks, never the paper's data.**

# %% tags=["parameters"]
preset = "tiny"
overrides = {}

# %%
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from falcon_h1r import papers
from falcon_h1r.sections import curation as S

sec = S.open_section(preset, overrides)
recipe, mode, writer = sec.recipe, sec.mode, sec.writer
OURS = f"ours, {preset} preset, synthetic tasks"
display(Markdown(f"Preset **{preset}**: this run will **{mode}** its results"
                 + ("." if mode == "compute" else f" from the committed records in `{writer.dir}`.")))

# %% [markdown]
# ## Curate (or load the committed records)
# `curate_sft` and `curate_rl_pool` are what the SFT and RL stages call; both are cached under
# `results/<preset>/_cache/`, so a second run of this notebook only reads them back.

# %%
tables = S.curation_tables(sec, ours=OURS)
sft_funnel, rl_funnel, contam, weights = tables.sft_funnel, tables.rl_funnel, tables.contamination, tables.weights
mixture, lengths, rates, headline = tables.mixture, tables.lengths, tables.rates, tables.headline
display(Markdown(f"**{headline['problems_in']:,}** problems in: **{headline['kept_sft']:,}** SFT traces kept "
                 f"(of {headline['sft_records_in']:,}), **{headline['kept_rl']:,}** RL problems kept "
                 f"(of {headline['rl_candidates_in']:,}). Contamination of the final training data: "
                 f"**{headline['contamination_pct']:.4g} %**. SFT curation ran at "
                 f"**{headline['curation_problems_per_s_cpu']:.0f} records/s** on CPU."))

# %% [markdown]
# ## The SFT mixture: samples and tokens per domain, the paper's (Fig. 3) beside ours
# The paper's mixture is 55.9 % math, 27 % code, 10 % science and 7.1 % other (instruction following,
# chat, safety, tool calling) by samples. Ours streams the curated traces through `datasets`
# (`interleave_datasets` with the paper's proportions renormalised over the three domains we have:
# there is no synthetic "other"), carrying each sample's difficulty weight.

# %%
paper_mix, side = S.mixture_side_by_side(mixture)
writer.table("paper_mixture", paper_mix,
             caption="The paper's SFT data mixture (Fig. 3), from papers/fig3_data_mixture.csv")
writer.table("ours_mixture", mixture,
             caption=f"Our SFT mixture ({OURS}): samples and tokens (prompt + response) per domain")
writer.table("mixture_side_by_side", side, caption=f"SFT mixture: the paper's (Fig. 3, papers/) beside ours ({OURS})")
display(side)

fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
for ax, what in zip(axes, ["pct_samples", "pct_tokens"]):
    sub = side.set_index("domain")[[f"paper_{what}", f"ours_{what}"]].fillna(0)
    sub.columns = ["paper (Fig. 3, papers/)", f"ours ({preset} preset, synthetic)"]
    sub.plot.bar(ax=ax, rot=0)
    ax.set(title=f"% of {what.split('_')[1]}", xlabel="", ylabel="%")
fig.suptitle(f"SFT mixture by domain: the paper's vs {OURS}")
fig.tight_layout()
writer.figure("mixture_paper_vs_ours", fig)
plt.show()

# %% [markdown]
# ## Response lengths per domain (ours) and their log-normal fit
# The paper's Fig. 2 shows roughly log-normal response lengths per domain with a long tail past ~30K
# tokens; its data are not printed, so only ours is plotted. The fit (scipy, location 0) and its
# Kolmogorov–Smirnov statistic say how far our template-made traces are from that shape.

# %%
fits = S.length_fits(lengths)
writer.table("length_lognormal_fit", fits, caption=f"Log-normal fit of response lengths per domain ({OURS})")
display(fits)
fig, axes = plt.subplots(1, len(fits), figsize=(4 * len(fits), 3), squeeze=False)
for ax, (_, f) in zip(axes[0], fits.iterrows()):
    x = lengths.loc[lengths.domain == f["domain"], "response_tokens"].to_numpy()
    bins = np.logspace(np.log10(max(1, x.min())), np.log10(x.max() + 1), 25)
    ax.hist(x, bins=bins, density=True, alpha=0.6, label="curated traces")
    grid = np.logspace(np.log10(max(1, x.min())), np.log10(x.max() + 1), 200)
    pdf = np.exp(-(np.log(grid) - f["mu"]) ** 2 / (2 * f["sigma"] ** 2)) / (grid * f["sigma"] * np.sqrt(2 * np.pi))
    ax.plot(grid, pdf, "k-", label=f"log-normal fit (KS {f['ks_stat']:.2f})")
    ax.set(xscale="log", title=f["domain"], xlabel="response tokens")
    ax.legend(fontsize=7)
fig.suptitle(f"Response-length distribution per domain: {OURS} (the paper's Fig. 2 data are not printed)")
fig.tight_layout()
writer.figure("response_lengths", fig)
plt.show()

# %% [markdown]
# ## The filter funnel (ours): what each rule removed
# SFT rules in pipeline order: bad input (`malformed_*`, never a crash), the paper's quality filters,
# the length limit, decontamination, verification against ground truth (tiered math, numeric science,
# code tests in the sandbox), then difficulty. RL rules: bad or unverifiable problems, duplicates of the
# SFT set (exact and normalised text), decontamination, then the pass-rate rules. Every removed record
# is listed with its reason in `sft_rejects.jsonl` / `rl_removed.jsonl`.

# %%
display(sft_funnel[sft_funnel.removed > 0])
display(rl_funnel[rl_funnel.removed > 0])
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, df, name in zip(axes, [sft_funnel, rl_funnel], ["SFT traces", "RL problems"]):
    ax.barh(df["rule"][::-1], df["removed"][::-1], color="tab:red")
    for y, v in enumerate(df["removed"][::-1]):
        ax.text(v, y, f" {v}", va="center", fontsize=7)
    ax.set(title=f"{name}: removed by rule", xlabel="records removed")
fig.suptitle(f"Filter funnel: {OURS}")
fig.tight_layout()
writer.figure("filter_funnel", fig)
plt.show()
display(Markdown("Difficulty-aware weights of the kept traces (paper §2.1: hard ×1.25–1.75, medium ×1, easy ×0.5 "
                 f"or removed; difficulty source: **{recipe.sft_difficulty}**, plus long traces):"))
display(weights)

# %% [markdown]
# ## Pass rates of the RL pool (ours) and the 0/8…8/8 rules
# The paper (§3.1, Fig. 5) drops 8/8 problems, keeps 1–7/8, and for 0/8 drops most problems whose
# every rollout hit the length limit (a small random subset is kept) and those whose wrong majority
# answer repeats at least 4 times (a likely bad label). Its math set then has a mirrored-J histogram;
# the bin counts are not printed, so only ours is plotted. How J-shaped ours is depends on how well
# the preset's small model solves the pool.

# %%
k = int(headline["rl_pass_rate_k"])
hist, decisions = S.pass_rate_tables(rates, k)
writer.table("rl_pass_rate_histogram", hist, caption=f"RL pool pass-rate histogram ({OURS}): problems per number "
             f"of correct rollouts out of {k}, before and after the rules")
writer.table("rl_decisions", decisions.reset_index(), caption=f"RL rule decisions per domain ({OURS})")
display(hist)
display(decisions)
fig, ax = plt.subplots(figsize=(6, 3))
xs = np.arange(k + 1)
ax.bar(xs - 0.2, hist["rated"], width=0.4, label="rated (before the rules)", color="tab:gray")
ax.bar(xs + 0.2, hist["kept"], width=0.4, label="kept (RL pool)", color="tab:blue")
ax.set(xticks=xs, xticklabels=hist["correct_of_k"], xlabel="correct rollouts", ylabel="problems",
       title=f"RL pool pass rates, k={k}: {OURS}\n(base model of the preset; paper's Fig. 5 counts not printed)")
ax.legend(fontsize=7)
writer.figure("rl_pass_rate_histogram", fig)
plt.show()

# %% [markdown]
# ## Contamination: the paper's check (§4.1) and ours
# Exact string matching of training data against evaluation questions. The paper found 0 % everywhere
# except MMLU-Pro (0.0005 % of the SFT mix, 0.035 % of the RL data). Ours checks every training set
# against our held-out test split, before and after curation (curation removes any hit).

# %%
paper_contam = papers.load("contamination")
writer.table("paper_contamination", paper_contam,
             caption="The paper's contamination check (§4.1), from papers/contamination.csv")
display(Markdown("The paper's (§4.1), non-zero rows:"))
display(paper_contam[paper_contam.overlap_pct > 0])
display(Markdown(f"Ours ({preset} preset, synthetic tasks):"))
display(contam)

# %% [markdown]
# ## Do the rules hold, and would the checks have found anything? (the claims' keys)
# "Nothing kept breaks a rule" and "0 % overlap" prove little on their own, so each is tested two ways:
#
# - **Independent re-checks** of what was kept (`falcon_h1r.curation.audit`, written apart from the pipeline's
#   own filters): the four SFT quality rules on every kept trace, and the paper's §3.1 keep/drop rule
#   recomputed from each rated RL problem's correct count and majority frequency (threshold from
#   `papers/rl_filter_rules.yaml`, not from our recipe).
# - **Positive controls** (`falcon_h1r.curation.controls`): exact and normalised copies of SFT problems are
#   planted among the RL candidates, and copies of held-out test problems into the training data, in a
#   throw-away copy; the real dedup, contamination check and both curations run on it, and we count what
#   they caught. Nothing planted reaches the curated data the other sections read (checked in code).

# %%
rechecks, controls_table = tables.rechecks, tables.controls
if rechecks.empty or controls_table.empty:
    display(Markdown(f"The committed records in `{writer.dir}` predate these checks; rerun the section to compute "
                     "them."))
else:
    display(rechecks)
    display(controls_table)
    planted = int(controls_table["planted"].sum())
    found = int(controls_table["found"].sum())
    leaked = int(controls_table["reached_pool"].sum())
    rho, ks = headline.get("rl_kept_count_vs_pass_rate_spearman"), headline.get("sft_length_lognormal_ks_max")
    rho_text = (f"**{rho:+.2f}**" if rho is not None else
                f"not computable ({headline.get('rl_kept_count_vs_pass_rate_spearman_reason', '')})")
    ks_text = f"**{ks:.3f}**" if ks is not None else f"none ({headline.get('sft_length_lognormal_ks_max_reason')})"
    display(Markdown(
        f"Re-checks: **{int(rechecks['violations'].sum())}** violations over {int(rechecks['checked'].sum()):,} "
        f"kept records and rated problems. Controls: **{found} of {planted}** planted copies found, {leaked} "
        f"reached a curated pool. Kept RL problems of {headline.get('rl_kept_count_vs_pass_rate_spearman_domain')} "
        f"against their correct count (0..{k - 1} of {k}), Spearman {rho_text}. Largest KS distance of the "
        f"length fits: {ks_text}; largest gap between our mixture's "
        f"sample shares and the paper's (renormalised without 'other'): "
        f"**{headline['mixture_max_abs_share_error_pct']:.2f} points** "
        f"({headline['mixture_max_abs_share_error_domain']})."))

# %%
writer.summary(headline)
if mode == "compute":
    writer.provenance()
    display(Markdown(f"Headline figures written to `{writer.dir / 'summary.json'}`, provenance beside them."))
else:  # keep the provenance of the run that computed these records (its device, commit and versions)
    display(Markdown(f"Rendered from `{writer.dir}`; its `provenance.json` (the computing run's) is left as it was."))

# %% [markdown]
# ## This section's claims
# Each row's status is computed by `falcon_h1r.claims` from the summary just written, with the rule in
# `papers/claims.yaml` (never typed); a failed precondition reads *not testable*, with the reason.

# %%
from falcon_h1r.sections.scoreboard import section_rows

display(section_rows(preset, S.SECTION))
