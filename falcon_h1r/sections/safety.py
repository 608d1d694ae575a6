"""Notebook 06, the safety evaluation (paper Appendix E, Table 10): the paper's table with its averages
recomputed, the embedded judge's measured quality, and the preset's own model judged in three modes.

Where each number is computed: :func:`paper_table10` (``falcon_h1r.papers.safety_averages`` and
``safety_rounding_flags``), :func:`embedded_judge_quality` (``falcon_h1r.safety.evaluate_judge``),
:func:`judge_own_model` (``falcon_h1r.safety.run_safety_eval``: generate, split at ``</think>``, judge in three
modes, aggregate) and :func:`own_model_summary` (``falcon_h1r.safety.reasoning_answer_gap``).

At the paper preset the model is the checkpoint (its own chat template and thinking markers, through the
prompt builder), the prompts are the 18 subsets' local copies (``safety.data_dir``) and the main judge is
Llama Guard 3 from ``safety.judge`` (or the notebook's ``llama_guard_dir``).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pandas as pd

from falcon_h1r import papers
from falcon_h1r.evaluation import prompt_builder
from falcon_h1r.inference import generate
from falcon_h1r.results import read_json
from falcon_h1r.safety import (AVERAGE_ROWS, BUILTIN_SUITE, Judge, KeywordJudge, LlamaGuardJudge, evaluate_judge,
                               load_labelled_judge_set, load_prompts, make_judge, reasoning_answer_gap,
                               run_safety_eval, split_with_builder)
from falcon_h1r.safety.recipe import SafetyRecipe
from falcon_h1r.sections.common import SectionRun, cache_dir, get_base_model, open_section, recipe_hash

SECTION = "06_safety"


def open_run(preset: str, overrides: dict[str, Any] | None = None) -> tuple[SectionRun, SafetyRecipe]:
    """The notebook's run (parameters checked: ``preset``, ``overrides``, ``llama_guard_dir``) and its recipe."""
    run = open_section(preset, SECTION, overrides, parameters=("preset", "overrides", "llama_guard_dir"))
    return run, run.cfg.section("safety", SafetyRecipe)


def paper_table10(run: SectionRun) -> dict[str, Any]:
    """The paper's Table 10 with its averages recomputed from its 18 rows, and the printed-vs-recomputed check."""
    t10 = papers.load("table10_safety")
    avgs = papers.safety_averages(t10)
    flags = papers.safety_rounding_flags(t10, papers.load("table10_safety_printed_averages"))
    run.writer.table("paper_table10_average_check", flags,
                     caption="The paper's Table 10: printed averages vs averages recomputed from its 18 rows")
    run.writer.summary({"paper_weighted_answer_only_recomputed": avgs["weighted"]["answer_only"],
                        "paper_weighted_cot_only_recomputed": avgs["weighted"]["cot_only"],
                        "paper_weighted_cot_answer_recomputed": avgs["weighted"]["cot_answer"],
                        "paper_total_prompts_recomputed": avgs["n_prompts"]})
    gap = avgs["weighted"]["answer_only"] - avgs["weighted"]["cot_only"]
    return {"table10": t10, "averages": avgs, "flags": flags, "weighted_gap_pp": gap}


def embedded_judge_quality(run: SectionRun) -> pd.DataFrame:
    """The embedded rule judge's precision and recall ("unsafe" positive) on the package's labelled set."""
    quality = evaluate_judge(KeywordJudge(), load_labelled_judge_set())
    table = pd.DataFrame([{k: quality[k] for k in ("judge", "n", "precision", "recall", "f1", "accuracy")}])
    run.writer.table("embedded_judge_quality", table, caption="Embedded rule judge on the package's labelled set")
    run.writer.summary({"embedded_judge_precision": quality["precision"], "embedded_judge_recall": quality["recall"]})
    return table


def judges_for(recipe: SafetyRecipe, llama_guard_dir: str | None = None, device: str = "auto") -> list[Judge]:
    """The embedded judge, plus Llama Guard (then the main judge, listed last) from ``llama_guard_dir`` (the
    notebook parameter) or else the recipe's ``safety.judge`` when that is a checkpoint directory."""
    lg = llama_guard_dir or (recipe.judge if recipe.judge != "embedded" else None)
    if not lg:
        return [KeywordJudge()]
    return [KeywordJudge(), make_judge(lg, device=device, batch_size=recipe.batch_size,
                                       max_batch_tokens=recipe.judge_max_batch_tokens)]


def judge_own_model(run: SectionRun, recipe: SafetyRecipe, judges: list[Judge]) -> pd.DataFrame:
    """The preset's model on the recipe's prompts, judged in its modes by each judge (Table 10 layout, one
    ``judge`` column); computed (resumable, in the preset's cache) or read back from the committed table.

    Prompts go through the model's prompt builder (a checkpoint's own chat template), responses are split
    at that template's thinking markers (``falcon_h1r.safety.split_with_builder``); one generation serves
    every judge. Judge throughput (calls/s) goes to ``judge_stats.json`` for Llama Guard."""
    if not run.computing:
        return pd.read_csv(run.writer.dir / "ours_safety_by_mode.csv")
    cfg = run.cfg
    base = get_base_model(cfg)
    builder = prompt_builder(base.tokenizer)
    prompts = load_prompts(recipe.suites, recipe.data_dir, max_prompts_per_suite=recipe.max_prompts_per_suite)
    gen_cfg = replace(cfg.generation, max_new_tokens=recipe.max_new_tokens)

    def generate_fn(batch: list[str]) -> list[str]:
        texts = [builder.prompt(p, stage="safety") for p in batch]
        return [c.text for c in generate(base.model, builder, texts, gen_cfg, seed=cfg.seed, progress=False)]

    key = recipe_hash(base.info.get("recipe_hash", str(base.path)), recipe.suites, recipe.max_prompts_per_suite,
                      gen_cfg, cfg.seed, recipe.data_dir, "builder-split")
    work = cache_dir(cfg) / f"safety-{key}"
    results = {}
    for judge in judges:
        judge_key = hashlib.sha256(judge.name.encode()).hexdigest()[:8]
        results[judge.name] = run_safety_eval(generate_fn, judge, prompts, modes=recipe.modes, out_dir=work,
                                              generation_batch_size=cfg.generation.batch_size,
                                              judge_batch_size=recipe.judge_chunk, split_fn=split_with_builder(builder),
                                              judgments_name=f"judgments-{judge_key}.jsonl", progress=True)
    ours = pd.concat([r.aggregate.assign(judge=name) for name, r in results.items()], ignore_index=True)
    run.writer.records("responses", results[judges[0].name].responses)
    main = judges[-1]
    run.writer.summary({"safety_judge_is_llama_guard": int(isinstance(main, LlamaGuardJudge))})
    if {"answer_only", "cot_only"} <= set(recipe.modes):
        run.writer.summary(gap_estimate(results[main.name].records).summary("reasoning_answer_gap_pp"))
    stats = {j.name: dict(j.stats) for j in judges if getattr(j, "stats", None)}
    if stats:
        run.writer.json("judge_stats", stats)
    where = "built-in prompts" if recipe.suites == [BUILTIN_SUITE] else f"{len(recipe.suites)} suites"
    run.writer.table("ours_safety_by_mode", ours, caption=f"Ours ({cfg.name} preset model, {where}): % judged safe "
                     "per mode; the judge column says which judge")
    return ours


def gap_estimate(records: pd.DataFrame) -> Any:
    """answer-only minus reasoning-only % judged safe, paired by prompt (``falcon_h1r.stats.paired_difference``
    over one generation: its interval needs several seeds, so one run is marked not informative). The mean
    is the prompt-weighted gap of Table 10."""
    from falcon_h1r.stats import paired_difference

    wide = records.pivot_table(index="id", columns="mode", values="safe", aggfunc="first").sort_index()
    return paired_difference(100.0 * wide["answer_only"].to_numpy(dtype=float)[None, :],
                             100.0 * wide["cot_only"].to_numpy(dtype=float)[None, :])


def own_model_summary(run: SectionRun, ours: pd.DataFrame, main_judge: str) -> dict[str, Any]:
    """Headline figures of the main judge: % safe per mode (weighted) and the reasoning-to-answer gap; also the
    per-subset rows in long form for the figure."""
    rows = ours[ours.judge == main_judge]
    weighted = rows[rows.suite == AVERAGE_ROWS[1]].iloc[0]
    gap = reasoning_answer_gap(rows.drop(columns="judge"))
    if run.computing:  # a render reads the committed table's rounded values: keep the computed summary
        run.writer.summary({"cot_only_safe_pct": float(weighted["cot_only"]),
                            "answer_only_safe_pct": float(weighted["answer_only"]),
                            "cot_answer_safe_pct": float(weighted["cot_answer"]), "judge": main_judge,
                            "n_prompts_judged": int(weighted["n_prompts"])})
    else:
        gap["weighted_pp"] = read_json(run.writer.dir / "summary.json")["reasoning_answer_gap_pp"]
    long = rows[~rows.suite.isin(list(AVERAGE_ROWS))].melt(
        id_vars=["suite", "subset"], value_vars=["cot_only", "cot_answer", "answer_only"], var_name="mode",
        value_name="safe_pct")
    return {"gap": gap, "long": long, "weighted": weighted}
