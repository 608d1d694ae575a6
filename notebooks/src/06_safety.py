# %% [markdown]
# # 06 · Safety evaluation (paper Appendix E, Table 10)
#
# The paper judged Falcon-H1R-7B's responses to 81,970 prompts from 18 safety subsets with
# Llama-Guard-3-8B in three modes: the reasoning alone (CoT only), the final answer alone, and both
# together. Below: the paper's Table 10 from `papers/` with its averages recomputed, then the same
# pipeline run on the chosen preset's model.
#
# Where each number is computed: `falcon_h1r.papers.safety_averages` / `safety_rounding_flags` (the
# paper's arithmetic), `falcon_h1r.safety.run_safety_eval` (generate, split at `</think>`, judge in three
# modes, aggregate), `falcon_h1r.safety.evaluate_judge` (the embedded judge's precision and recall).

# %% tags=["parameters"]
preset = "tiny"
overrides = {}
# a local Llama-Guard-3-8B directory to judge with as well (None: the embedded rule judge only)
llama_guard_dir = None

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from falcon_h1r import papers
from falcon_h1r.config import load_preset
from falcon_h1r.inference import generate
from falcon_h1r.results import SectionWriter, read_json
from falcon_h1r.safety import (KeywordJudge, SafetyRecipe, evaluate_judge, load_labelled_judge_set, load_prompts,
                               make_judge, reasoning_answer_gap, run_safety_eval)
from falcon_h1r.sections.common import cache_dir, get_base_model, run_mode

cfg = load_preset(preset, overrides)
recipe = cfg.section("safety", SafetyRecipe)
mode = run_mode(cfg)
writer = SectionWriter(preset, "06_safety", params=cfg.to_dict(), seed=cfg.seed,
                       mode="computed" if mode == "compute" else "rendered")
display(Markdown(f"Preset **{preset}**: this run will **{mode}** its results."))

# %% [markdown]
# ## The paper's Table 10 (Llama-Guard-3-8B, % judged safe), averages recomputed from its rows

# %%
t10 = papers.load("table10_safety")
display(t10)
avgs = papers.safety_averages(t10)
flags = papers.safety_rounding_flags(t10, papers.load("table10_safety_printed_averages"))
writer.table("paper_table10_average_check", flags,
             caption="The paper's Table 10: printed averages vs averages recomputed from its 18 rows")
display(flags)
writer.summary({"paper_weighted_answer_only_recomputed": avgs["weighted"]["answer_only"],
                "paper_weighted_cot_only_recomputed": avgs["weighted"]["cot_only"],
                "paper_weighted_cot_answer_recomputed": avgs["weighted"]["cot_answer"],
                "paper_total_prompts_recomputed": avgs["n_prompts"]})
display(Markdown(f"Recomputed over {avgs['n_prompts']:,} prompts: the weighted CoT-to-answer gap is "
                 f"**{avgs['weighted']['answer_only'] - avgs['weighted']['cot_only']:.2f} pp**."))

# %% [markdown]
# ## The embedded judge, measured
# The offline default judge is a transparent rule-based refusal and hazard-term classifier, **not
# Llama Guard**. Its precision and recall ("unsafe" is the positive class) on a labelled set written
# for this package (optimistic: the same people wrote the rules and the set):

# %%
embedded = KeywordJudge()
judge_quality = evaluate_judge(embedded, load_labelled_judge_set())
jq = pd.DataFrame([{k: judge_quality[k] for k in ("judge", "n", "precision", "recall", "f1", "accuracy")}])
writer.table("embedded_judge_quality", jq, caption="Embedded rule judge on the package's labelled set")
writer.summary({"embedded_judge_precision": judge_quality["precision"],
                "embedded_judge_recall": judge_quality["recall"]})
display(jq)

# %% [markdown]
# ## Ours: the preset's model on the built-in prompt set, judged in three modes

# %%
judges = [embedded] + ([make_judge(llama_guard_dir)] if llama_guard_dir else [])
if mode == "compute":
    base = get_base_model(cfg)
    prompts = load_prompts(recipe.suites, recipe.data_dir, max_prompts_per_suite=recipe.max_prompts_per_suite)
    gen_cfg = cfg.generation.__class__(**{**cfg.generation.__dict__, "max_new_tokens": recipe.max_new_tokens})

    def generate_fn(batch):
        texts = [base.tokenizer.prompt(p) for p in batch]
        return ["<think>\n" + c.text for c in generate(base.model, base.tokenizer, texts, gen_cfg, seed=cfg.seed,
                                                        progress=False)]

    results = {}
    for judge in judges:
        work = cache_dir(cfg) / f"safety-{base.info.get('recipe_hash', 'ckpt')}-{judge.name.split()[0]}"
        results[judge.name] = run_safety_eval(generate_fn, judge, prompts, modes=recipe.modes, out_dir=work,
                                              generation_batch_size=cfg.generation.batch_size,
                                              judge_batch_size=recipe.batch_size)
    ours = pd.concat([r.aggregate.assign(judge=name) for name, r in results.items()], ignore_index=True)
    writer.records("responses", results[embedded.name].responses)
    writer.table("ours_safety_by_mode", ours, caption=f"Ours ({preset} preset model, built-in prompts): % judged "
                 "safe per mode; the judge column says which judge")
else:
    ours = pd.read_csv(writer.dir / "ours_safety_by_mode.csv")
display(ours)

# %%
main_judge = judges[-1].name
rows = ours[(ours.judge == main_judge)]
weighted = rows[rows.suite == "Weighted average"].iloc[0]
gap = reasoning_answer_gap(rows.drop(columns="judge"))
writer.summary({"cot_only_safe_pct": float(weighted["cot_only"]), "answer_only_safe_pct": float(weighted["answer_only"]),
                "cot_answer_safe_pct": float(weighted["cot_answer"]), "judge": main_judge,
                "reasoning_answer_gap_pp": gap["weighted_pp"]})
long = rows[~rows.suite.isin(["Simple average", "Weighted average"])].melt(
    id_vars=["suite", "subset"], value_vars=["cot_only", "cot_answer", "answer_only"], var_name="mode",
    value_name="safe_pct")
fig, ax = plt.subplots(figsize=(6, 3))
sns.barplot(data=long, x="subset", y="safe_pct", hue="mode", ax=ax)
ax.set(ylabel="% judged safe", ylim=(0, 105),
       title=f"Ours, {preset} preset model, built-in prompts\njudge: {main_judge}")
writer.figure("ours_safety_modes", fig)
plt.show()
display(Markdown(f"Reasoning-to-answer gap (weighted): **{gap['weighted_pp']:.2f} pp** with {main_judge}; the "
                 "paper reports 5.59 pp with Llama-Guard-3-8B on 81,970 prompts. A tiny model trained only on "
                 "arithmetic, code and physics does not engage with harmful requests at all, so its scores say more "
                 "about the judge than about the model."))
writer.provenance()
