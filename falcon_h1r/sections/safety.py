"""Notebook 06, the safety evaluation (paper Appendix E, Table 10): the paper's table with its averages
recomputed, the embedded judge's measured quality, and the preset's own model judged in three modes.

Where each number is computed: :func:`paper_table10` (``falcon_h1r.papers.safety_averages`` and
``safety_rounding_flags``), :func:`embedded_judge_quality` (``falcon_h1r.safety.evaluate_judge``),
:func:`judge_own_model` (``falcon_h1r.safety.run_safety_eval``: generate, split at ``</think>``, judge in three
modes, aggregate) and :func:`own_model_summary` (``falcon_h1r.safety.reasoning_answer_gap``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from falcon_h1r import papers
from falcon_h1r.config import RecipeError
from falcon_h1r.inference import generate
from falcon_h1r.results import read_json
from falcon_h1r.safety import (BUILTIN_SUITE, MODES, PAPER_SUITES, SUITES, AVERAGE_ROWS, Judge, KeywordJudge,
                               evaluate_judge, load_labelled_judge_set, load_prompts, make_judge,
                               reasoning_answer_gap, run_safety_eval)
from falcon_h1r.sections.common import SectionRun, cache_dir, get_base_model, open_section

SECTION = "06_safety"


@dataclass
class SafetyRecipe:
    """The ``safety`` block of a preset."""

    # Paper Appendix E / Table 10: 18 subsets, 81,970 prompts. "builtin" is the shipped prompt set.
    suites: list[str] = field(default_factory=lambda: list(PAPER_SUITES))
    # Paper Table 10: reasoning alone, reasoning + answer, answer alone.
    modes: list[str] = field(default_factory=lambda: list(MODES))
    # Not stated for the safety run; the paper's evaluations use 32,768 or 65,536 new tokens (§4.1).
    max_new_tokens: int = 32768
    # Paper: meta-llama/Llama-Guard-3-8B -> give its local checkpoint directory. "embedded" = KeywordJudge.
    judge: str = "embedded"
    batch_size: int = 8  # judge batch size (Llama Guard forward passes); not a paper value
    data_dir: str | None = None  # where the suites' local copies live (<data_dir>/<suite key>)
    max_prompts_per_suite: int | None = None  # None = every prompt, as the paper

    def __post_init__(self) -> None:
        bad = [s for s in self.suites if s not in SUITES and s != BUILTIN_SUITE]
        if bad or not self.suites:
            raise RecipeError(f"safety.suites: {bad or self.suites} not accepted; use a non-empty subset of "
                              f"{[*SUITES, BUILTIN_SUITE]}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise RecipeError(f"safety.modes: {bad or self.modes} not accepted; use a non-empty subset of {list(MODES)}")
        if self.max_new_tokens < 1:
            raise RecipeError(f"safety.max_new_tokens: must be > 0, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise RecipeError(f"safety.batch_size: must be > 0, got {self.batch_size}")
        if self.max_prompts_per_suite is not None and self.max_prompts_per_suite < 1:
            raise RecipeError(f"safety.max_prompts_per_suite: must be > 0 or null, got {self.max_prompts_per_suite}")
        if not self.judge:
            raise RecipeError("safety.judge: use 'embedded' or a Llama Guard checkpoint directory")


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


def judges_for(llama_guard_dir: str | None) -> list[Judge]:
    """The embedded judge, plus Llama Guard from ``llama_guard_dir`` when given (it then is the main judge)."""
    return [KeywordJudge()] + ([make_judge(llama_guard_dir)] if llama_guard_dir else [])


def judge_own_model(run: SectionRun, recipe: SafetyRecipe, judges: list[Judge]) -> pd.DataFrame:
    """The preset's model on the recipe's prompts, judged in its modes by each judge (Table 10 layout, one
    ``judge`` column); computed (resumable, in the preset's cache) or read back from the committed table."""
    if not run.computing:
        return pd.read_csv(run.writer.dir / "ours_safety_by_mode.csv")
    cfg = run.cfg
    base = get_base_model(cfg)
    prompts = load_prompts(recipe.suites, recipe.data_dir, max_prompts_per_suite=recipe.max_prompts_per_suite)
    gen_cfg = replace(cfg.generation, max_new_tokens=recipe.max_new_tokens)

    def generate_fn(batch: list[str]) -> list[str]:
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
    run.writer.records("responses", results[judges[0].name].responses)
    run.writer.table("ours_safety_by_mode", ours, caption=f"Ours ({cfg.name} preset model, built-in prompts): % "
                     "judged safe per mode; the judge column says which judge")
    return ours


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
                            "reasoning_answer_gap_pp": gap["weighted_pp"]})
    else:
        gap["weighted_pp"] = read_json(run.writer.dir / "summary.json")["reasoning_answer_gap_pp"]
    long = rows[~rows.suite.isin(list(AVERAGE_ROWS))].melt(
        id_vars=["suite", "subset"], value_vars=["cot_only", "cot_answer", "answer_only"], var_name="mode",
        value_name="safe_pct")
    return {"gap": gap, "long": long, "weighted": weighted}
