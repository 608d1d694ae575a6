"""Section 01, data curation: what a preset curates (its teacher pool, its RL candidates), the two cached
entry points the SFT and RL sections call, and every table notebook 01 shows.

- :func:`curate_sft` -> ``SFTCuration``: the kept teacher traces with tiers and loss weights, the streamed
  domain mixture, and the removal report (library: ``falcon_h1r.curation.sft_records.curate_sft_records``,
  ``falcon_h1r.curation.mixture.build_mixture``);
- :func:`curate_rl_pool` -> ``RLCuration``: held-out RL problems, disjoint from the SFT problems, with pass
  rates from the SFT model and the 0/8..8/8 rules applied (``falcon_h1r.curation.rl_pool.select_rl_pool``,
  ``falcon_h1r.curation.pass_rates.estimate_pass_rates``).

Both are cached under ``results/<preset>/_cache/`` by a hash of every recipe value that shapes them
(:func:`falcon_h1r.sections.common.cached_json`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from falcon_h1r import papers
from falcon_h1r.config import GenerationConfig, Preset, load_preset
from falcon_h1r.curation import (CURATION_VERSION, CurationRecipe, RLCuration, SFTCuration, build_mixture,
                                 contamination, corrupt_records, curate_sft_records, estimate_pass_rates,
                                 fit_lognormal, grade_kwargs, mixture_table, select_rl_pool)
from falcon_h1r.results import RESULTS_ROOT, SectionWriter, read_json
from falcon_h1r.sections.common import cache_dir, cached_json, get_base_model, get_tokenizer, recipe_hash, run_mode, \
    task_sets
from falcon_h1r.tasks import generate_split, public, teacher_records

SECTION = "01_data_curation"


def load_recipe(preset: Preset) -> CurationRecipe:
    """The preset's ``curation:`` block."""
    return preset.section("curation", CurationRecipe)


# ============================================================================== what a preset curates
def sft_pool(preset: Preset, recipe: CurationRecipe, problems: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The imperfect teacher's traces for ``problems``, some corrupted as bad input (recipe rates)."""
    recs = [public(r) for r in teacher_records(problems, preset.tasks.teacher_style, preset.seed,
                                               rollouts=recipe.teacher_rollouts, noise=recipe.noise())]
    return corrupt_records(recs, recipe.malformed_rate, preset.seed) if recipe.malformed_rate else recs


def rl_candidates(preset: Preset, recipe: CurationRecipe,
                  sets: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A held-out pool of RL problems (split "rl"), never a test question."""
    t = preset.tasks
    return [public(p) for p in generate_split(recipe.rl_domains, t.difficulties, recipe.rl_pool_per_domain, "rl",
                                              preset.seed, exclude_questions={p["question"] for p in sets["test"]})]


def rollout_generation_config(preset: Preset, recipe: CurationRecipe) -> GenerationConfig:
    """The preset's GenerationConfig with the pass-rate sampling of the recipe (paper: T 0.6, top-p 0.95)."""
    return replace(preset.generation, temperature=recipe.pass_rate_temperature, top_p=recipe.pass_rate_top_p,
                   max_new_tokens=recipe.pass_rate_max_new_tokens or preset.generation.max_new_tokens,
                   batch_size=recipe.rollout_batch_size or preset.generation.batch_size)


# ============================================================================== the cached entry points
def model_fingerprint(model: Any) -> str:
    """A cheap content hash of a model's weights (shapes and sums), for cache keys."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            x = p.detach().float()
            h.update(f"{name}{tuple(p.shape)}{x.sum().item():.6e}{x.abs().sum().item():.6e}".encode())
    return h.hexdigest()[:12]


def _cache_path(preset: Preset, root: Path, kind: str, *parts: Any) -> Path:
    return cache_dir(preset, root) / f"curation-{kind}-{recipe_hash(CURATION_VERSION, *parts)}.json"


def _forget(path: Path, force: bool) -> Path:
    """``force``: drop the cached entry so :func:`cached_json` computes it again."""
    if force:
        path.unlink(missing_ok=True)
    return path


def curate_sft(preset: Preset, *, model: Any = None, tokenizer: Any = None, root: Path = RESULTS_ROOT,
               progress: bool = True, force: bool = False) -> SFTCuration:
    """The preset's curated SFT records (with weights) and their streamed mixture, cached.

    The pool is the imperfect teacher's traces over the preset's training problems. With
    ``curation.sft_difficulty: pass_rate`` the difficulty comes from ``curation.sft_pass_rate_k``
    rollouts of ``model`` (default: the preset's SFT base model) on each training problem.
    """
    recipe = load_recipe(preset)
    sets = task_sets(preset)
    tok = tokenizer or get_tokenizer(preset, sets, root)
    model_key = None
    if recipe.sft_difficulty == "pass_rate":
        if model is None:
            base = get_base_model(preset, root=root, progress=progress)
            model, tok = base.model, base.tokenizer
        model_key = model_fingerprint(model)
    path = _cache_path(preset, root, "sft", recipe, preset.tasks, preset.tokenizer, preset.seed, model_key,
                       preset.generation if model_key else None)

    def compute() -> dict[str, Any]:
        pass_rates = None
        if model_key:
            gen = rollout_generation_config(preset, recipe)
            rates = estimate_pass_rates(model, tok, sets["train"], gen, k=recipe.sft_pass_rate_k, seed=preset.seed,
                                        progress=progress, **grade_kwargs(recipe))
            pass_rates = {r.id: r.pass_rate for r in rates}
        pool = sft_pool(preset, recipe, sets["train"])
        cur = curate_sft_records(pool, tok, recipe, eval_questions=[p["question"] for p in sets["test"]],
                                 pass_rates=pass_rates, levels=preset.tasks.all_levels(), progress=progress)
        ds, probs = build_mixture(cur.records, recipe.mixture, seed=preset.seed)
        cur.mixture = [dict(r) for r in ds]
        cur.stats["mixture_probabilities"] = probs
        cur.stats["difficulty_source"] = recipe.sft_difficulty
        return cur.to_json()

    return SFTCuration.from_json(cached_json(_forget(path, force), compute))


def curate_rl_pool(preset: Preset, model: Any = None, tokenizer: Any = None, *, root: Path = RESULTS_ROOT,
                   progress: bool = True, force: bool = False) -> RLCuration:
    """The preset's curated RL pool, cached: held-out problems, disjoint from the SFT problems, with
    pass rates from ``model`` (default: the preset's SFT base model) and the 0/8..8/8 rules applied."""
    recipe = load_recipe(preset)
    if model is None:
        base = get_base_model(preset, root=root, progress=progress)
        model, tokenizer = base.model, base.tokenizer
    if tokenizer is None:
        raise ValueError("curate_rl_pool: pass the model's tokenizer with the model")
    gen = rollout_generation_config(preset, recipe)
    path = _cache_path(preset, root, "rl", recipe, preset.tasks, preset.seed, gen, model_fingerprint(model))

    def compute() -> dict[str, Any]:
        sets = task_sets(preset)
        cands = rl_candidates(preset, recipe, sets)

        def rates_fn(problems):
            return estimate_pass_rates(model, tokenizer, problems, gen, k=recipe.pass_rate_k, seed=preset.seed,
                                       progress=progress, **grade_kwargs(recipe))

        return select_rl_pool(cands, rates_fn, recipe, sft_questions=[p["question"] for p in sets["train"]],
                              eval_questions=[p["question"] for p in sets["test"]], seed=preset.seed).to_json()

    return RLCuration.from_json(cached_json(_forget(path, force), compute))


# ============================================================================== notebook 01
@dataclass
class Section:
    """One run of notebook 01: the preset, its curation recipe, whether this machine computes or renders
    the preset (:func:`falcon_h1r.sections.common.run_mode`), and the section's results writer."""

    cfg: Preset
    recipe: CurationRecipe
    mode: str  # "compute" | "render"
    writer: SectionWriter


def open_section(preset: str, overrides: dict[str, Any] | None = None) -> Section:
    cfg = load_preset(preset, overrides)
    mode = run_mode(cfg)
    writer = SectionWriter(preset, SECTION, params=cfg.to_dict(), seed=cfg.seed,
                           mode="computed" if mode == "compute" else "rendered")
    return Section(cfg, load_recipe(cfg), mode, writer)


@dataclass
class CurationTables:
    """What notebook 01 shows of both curations (computed here, or read back from the committed records)."""

    sft_funnel: pd.DataFrame  # records removed by each SFT rule, in pipeline order
    rl_funnel: pd.DataFrame  # problems removed by each RL rule
    contamination: pd.DataFrame  # % of held-out test questions found in each training set
    weights: pd.DataFrame  # records and mean loss weight per (domain, tier)
    mixture: pd.DataFrame  # samples and tokens per domain of the streamed mixture
    lengths: pd.DataFrame  # one row per kept trace: domain, response tokens, tier, weight
    rates: pd.DataFrame  # one row per rated RL problem, with its decision
    headline: dict[str, Any]


def curation_tables(sec: Section, *, ours: str) -> CurationTables:
    """Compute both curations (or, in render mode, read the committed records) and write the records, tables
    and headline. ``ours`` labels whose numbers they are in the captions."""
    if sec.mode == "compute":
        return _compute_tables(sec, ours)
    d = sec.writer.dir

    def load(name: str) -> pd.DataFrame:
        return pd.read_csv(d / f"{name}.csv")

    def read_jsonl(name: str) -> pd.DataFrame:
        return pd.read_json(d / f"{name}.jsonl", lines=True)

    mixture = load("ours_mixture")[["domain", "samples", "pct_samples", "tokens", "pct_tokens",
                                    "avg_tokens_per_sample"]]
    return CurationTables(load("sft_filter_funnel"), load("rl_filter_funnel"), load("contamination"),
                          load("sft_weights"), mixture, read_jsonl("sft_lengths"), read_jsonl("rl_pass_rates"),
                          read_json(d / "headline.json"))


def _compute_tables(sec: Section, ours: str) -> CurationTables:
    cfg, recipe, writer = sec.cfg, sec.recipe, sec.writer
    t0 = time.time()
    sets = task_sets(cfg)
    sft = curate_sft(cfg)
    t_sft = time.time() - t0
    base = get_base_model(cfg)
    t1 = time.time()
    rl = curate_rl_pool(cfg, base.model, base.tokenizer)
    t_rl = time.time() - t1
    test_q = {d: [p["question"] for p in sets["test"] if p["domain"] == d] for d in cfg.tasks.domains}
    pool_q = [r["question"] for r in sft_pool(cfg, recipe, sets["train"]) if isinstance(r.get("question"), str)]
    cand_q = [p["question"] for p in rl_candidates(cfg, recipe, sets)]
    training_sets = {"sft_pool (before curation)": pool_q, "sft_curated": [r["question"] for r in sft.records],
                     "rl_candidates (before curation)": cand_q, "rl_pool": [p["question"] for p in rl.problems]}
    contam = pd.DataFrame([{"dataset": name, **row} for name, texts in training_sets.items()
                           for row in contamination(texts, {f"test_{d}": q for d, q in test_q.items()})])
    final_train = training_sets["sft_curated"] + training_sets["rl_pool"]
    all_test = [q for qs in test_q.values() for q in qs]
    contamination_pct = contamination(final_train, {"all": all_test})[0]["overlap_pct"]

    sft_funnel, rl_funnel = pd.DataFrame(sft.funnel()), pd.DataFrame(rl.funnel())
    mixture = pd.DataFrame(mixture_table(sft.mixture))
    lengths = pd.DataFrame([{"domain": r["domain"], "response_tokens": r["response_tokens"], "tier": r["tier"],
                             "weight": r["weight"]} for r in sft.records])
    rates = pd.DataFrame([{**{k: v for k, v in r.__dict__.items() if k != "reasons"}, "pass_rate": r.pass_rate,
                           "decision": rl.decisions[r.id]} for r in rl.rates])
    weights = (lengths.groupby(["domain", "tier"]).agg(records=("weight", "size"), mean_weight=("weight", "mean"))
               .reset_index())
    headline = {
        "problems_in": len(sets["train"]) + rl.n_in, "sft_records_in": sft.n_in, "kept_sft": len(sft.records),
        "kept_sft_mixture": len(sft.mixture), "rl_candidates_in": rl.n_in, "kept_rl": len(rl.problems),
        **{f"dropped_by_rule_{k}": v for k, v in {**sft.dropped_by_rule(), **rl.dropped_by_rule()}.items()},
        "contamination_pct": contamination_pct,
        "curation_problems_per_s_cpu": sft.stats["records_per_s"],
        "rl_pass_rate_problems_per_s": rl.stats["pass_rate_problems_per_s"],
        "rl_pass_rate_k": rl.k, "sft_wall_s_this_run": round(t_sft, 2), "rl_wall_s_this_run": round(t_rl, 2),
    }
    writer.records("sft_rejects", sft.rejects())
    writer.records("rl_removed", [r.__dict__ for r in rl.removals])
    writer.records("sft_lengths", lengths.to_dict("records"))
    writer.records("rl_pass_rates", rates.to_dict("records"))
    writer.table("sft_filter_funnel", sft_funnel, caption=f"SFT filter funnel ({ours}): records removed by each rule")
    writer.table("rl_filter_funnel", rl_funnel, caption=f"RL filter funnel ({ours}): problems removed by each rule")
    writer.table("contamination", contam, caption=f"Contamination check ({ours}): % of held-out test questions "
                 "found verbatim (and after normalisation) in each training set")
    writer.table("sft_weights", weights, caption=f"Difficulty tiers and SFT loss weights ({ours})")
    writer.json("headline", headline)
    return CurationTables(sft_funnel, rl_funnel, contam, weights, mixture, lengths, rates, headline)


def mixture_side_by_side(mixture: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's Fig. 3 mixture (``papers/fig3_data_mixture.csv``) and it beside ours, by domain."""
    paper_mix = papers.load("fig3_data_mixture")
    side = paper_mix[["domain", "samples", "pct_samples", "tokens", "pct_tokens"]].merge(
        mixture, on="domain", how="outer", suffixes=("_paper", "_ours"))
    side = side.rename(columns={"samples_paper": "paper_samples", "pct_samples_paper": "paper_pct_samples",
                                "tokens_paper": "paper_tokens", "pct_tokens_paper": "paper_pct_tokens",
                                "samples_ours": "ours_samples", "pct_samples_ours": "ours_pct_samples",
                                "tokens_ours": "ours_tokens", "pct_tokens_ours": "ours_pct_tokens",
                                "avg_tokens_per_sample": "ours_avg_tokens_per_sample"})
    return paper_mix, side


def length_fits(lengths: pd.DataFrame) -> pd.DataFrame:
    """A log-normal fit per domain of the kept traces' response lengths (``curation.mixture.fit_lognormal``)."""
    return pd.DataFrame([{"domain": d, **fit_lognormal(g["response_tokens"].tolist())}
                         for d, g in lengths.groupby("domain")])


def pass_rate_tables(rates: pd.DataFrame, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Problems per number of correct rollouts out of ``k`` (rated and kept by the rules of
    ``curation.rl_pool.rl_decision``), and the rule decisions per domain."""
    bins = rates["correct"].astype(int)
    hist = pd.DataFrame({"correct_of_k": [f"{c}/{k}" for c in range(k + 1)],
                         "rated": [int((bins == c).sum()) for c in range(k + 1)],
                         "kept": [int(((bins == c) & rates.decision.str.startswith("keep")).sum())
                                  for c in range(k + 1)]})
    decisions = rates.groupby(["domain", "decision"]).size().unstack(fill_value=0)
    return hist, decisions


__all__ = ["CurationTables", "SECTION", "Section", "curate_rl_pool", "curate_sft", "curation_tables",
           "length_fits", "load_recipe", "mixture_side_by_side", "model_fingerprint", "open_section",
           "pass_rate_tables", "rl_candidates", "rollout_generation_config", "sft_pool"]
