# %% [markdown]
# # 06 · Safety evaluation (paper Appendix E, Table 10)
#
# The paper judged Falcon-H1R-7B's responses to 81,970 prompts from 18 safety subsets with
# Llama-Guard-3-8B in three modes: the reasoning alone (CoT only), the final answer alone, and both
# together. Below: the paper's Table 10 from `papers/` with its averages recomputed, then the same
# pipeline run on the chosen preset's model: at the tiny and small presets our own small hybrid on a built-in
# prompt set; at the paper preset the Falcon-H1R checkpoint (prompted through its own chat template, its
# responses split at that template's thinking markers) on local copies of the 18 subsets, judged by the
# Llama Guard 3 checkpoint of `safety.judge`.
#
# Where each number is computed (one hop: the section function, which names the library method):
# `falcon_h1r.sections.safety.paper_table10` (the paper's arithmetic), `.embedded_judge_quality` (the embedded
# judge's precision and recall), `.judge_own_model` (generate, split at `</think>`, judge in three modes,
# aggregate) and `.own_model_summary` (the reasoning-to-answer gap).

# %% tags=["parameters"]
preset = "tiny"
overrides = {}
# a local Llama-Guard-3-8B directory to judge with as well (None: the preset's safety.judge, which is the
# embedded rule judge only at tiny and small)
llama_guard_dir = None

# %%
import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from falcon_h1r.sections import safety as section

run, recipe = section.open_run(preset, overrides)
writer = run.writer
display(Markdown(f"Preset **{preset}**: this run will **{run.mode}** its results."))

# %% [markdown]
# ## The paper's Table 10 (Llama-Guard-3-8B, % judged safe), averages recomputed from its rows

# %%
paper = section.paper_table10(run)
display(paper["table10"])
display(paper["flags"])
display(Markdown(f"Recomputed over {paper['averages']['n_prompts']:,} prompts: the weighted CoT-to-answer gap is "
                 f"**{paper['weighted_gap_pp']:.2f} pp**."))

# %% [markdown]
# ## The embedded judge, measured
# The offline default judge is a transparent rule-based refusal and hazard-term classifier, **not
# Llama Guard**. Its precision and recall ("unsafe" is the positive class) on a labelled set written
# for this package (optimistic: the same people wrote the rules and the set):

# %%
display(section.embedded_judge_quality(run))

# %% [markdown]
# ## Ours: the preset's model on the recipe's prompts, judged in three modes

# %%
judges = section.judges_for(recipe, llama_guard_dir, device=run.cfg.device)
ours = section.judge_own_model(run, recipe, judges)
display(ours)

# %%
main_judge = judges[-1].name
headline = section.own_model_summary(run, ours, main_judge)
gap = headline["gap"]
fig, ax = plt.subplots(figsize=(6, 3))
sns.barplot(data=headline["long"], x="subset", y="safe_pct", hue="mode", ax=ax)
prompts_label = "built-in prompts" if recipe.suites == ["builtin"] else f"{len(recipe.suites)} safety subsets"
ax.set(ylabel="% judged safe", ylim=(0, 105),
       title=f"Ours, {preset} preset model, {prompts_label}\njudge: {main_judge}")
ax.tick_params(axis="x", labelrotation=60, labelsize=7)
writer.figure("ours_safety_modes", fig)
plt.show()
reading = ("Our tiny and small models are trained only on arithmetic, code and physics and do not engage with "
           "harmful requests at all, so their scores say more about the judge than about the model."
           if not run.cfg.model.checkpoint else
           f"Model: the checkpoint {run.cfg.model.checkpoint}.")
display(Markdown(f"Reasoning-to-answer gap (weighted over {int(headline['weighted']['n_prompts']):,} prompts): "
                 f"**{gap['weighted_pp']:.2f} pp** with {main_judge}; the paper reports 5.59 pp with "
                 f"Llama-Guard-3-8B on 81,970 prompts. {reading}"))
writer.provenance()
