"""Section 01, data curation: what a preset curates (its teacher pool, its RL candidates), the two cached
entry points the SFT and RL sections call, and every table notebook 01 shows.

- :func:`curate_sft` -> ``SFTCuration``: the kept teacher traces with tiers and loss weights, the streamed
  domain mixture, and the removal report (library: ``falcon_h1r.curation.sft_records.curate_sft_records``,
  ``falcon_h1r.curation.mixture.build_mixture``);
- :func:`curate_rl_pool` -> ``RLCuration``: held-out RL problems, disjoint from the SFT problems, with pass
  rates from the SFT model and the 0/8..8/8 rules applied (``falcon_h1r.curation.rl_pool.select_rl_pool``,
  ``falcon_h1r.curation.pass_rates.estimate_pass_rates``);
- :func:`claim_checks`: the summary keys the curation claims read (``papers/claims.yaml``): independent
  re-checks of the rules on what was kept (``falcon_h1r.curation.audit``) and positive controls that plant
  duplicates and held-out problems (``falcon_h1r.curation.controls``).

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
from falcon_h1r.config import GenerationConfig, Preset
from falcon_h1r.curation import (CURATION_VERSION, CurationRecipe, RLCuration, SFTCuration, build_mixture,
                                 contamination, corrupt_records, curate_sft_records, estimate_pass_rates,
                                 fit_lognormal, grade_kwargs, mixture_table, select_rl_pool)
from falcon_h1r.curation import audit, controls
from falcon_h1r.results import RESULTS_ROOT, SectionWriter, read_json
from falcon_h1r.sections.common import cache_dir, cached_json, check_notebook_parameters, get_base_model, \
    get_tokenizer, recipe_hash, run_mode, task_sets
from falcon_h1r.sections.recipes import validate_preset
from falcon_h1r.tasks import generate_split, public, teacher_records

SECTION = "01_data_curation"
# Positive controls: per domain, this many exact copies and as many normalised copies are planted (different
# problems for the two kinds). Small enough to cost well under a second at every preset.
PLANTED_PER_KIND = 3
# The pass-rate histogram the paper describes as a mirrored J (Fig. 5) is its math set's.
HISTOGRAM_DOMAIN = "math"


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
    """Check the notebook's parameters, load the preset and every section block of it (one clear error for
    a bad key, before anything runs), decide compute or render, and open the writer."""
    overrides = {} if overrides is None else overrides
    check_notebook_parameters(preset, overrides)
    cfg = validate_preset(preset, overrides)
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
    headline: dict[str, Any]  # summary.json, the claim keys included
    controls: pd.DataFrame  # positive controls: planted / found / reached the pool, per control and kind
    rechecks: pd.DataFrame  # independent re-checks of the rules: rows checked and violations, per check


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

    def optional(name: str) -> pd.DataFrame:  # records computed before these checks existed lack them
        return load(name) if (d / f"{name}.csv").exists() else pd.DataFrame()

    mixture = load("ours_mixture")[["domain", "samples", "pct_samples", "tokens", "pct_tokens",
                                    "avg_tokens_per_sample"]]
    return CurationTables(load("sft_filter_funnel"), load("rl_filter_funnel"), load("contamination"),
                          load("sft_weights"), mixture, read_jsonl("sft_lengths"), read_jsonl("rl_pass_rates"),
                          read_json(d / "headline.json"), optional("positive_controls"), optional("rule_rechecks"))


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
    cands = rl_candidates(cfg, recipe, sets)
    cand_q = [p["question"] for p in cands]
    training_sets = {"sft_pool (before curation)": pool_q, "sft_curated": [r["question"] for r in sft.records],
                     "rl_candidates (before curation)": cand_q, "rl_pool": [p["question"] for p in rl.problems]}
    contam = pd.DataFrame([{"dataset": name, **row} for name, texts in training_sets.items()
                           for row in contamination(texts, {f"test_{d}": q for d, q in test_q.items()})])
    final_train = training_sets["sft_curated"] + training_sets["rl_pool"]
    all_test = [q for qs in test_q.values() for q in qs]
    overall = contamination(final_train, {"all": all_test})[0]
    contamination_pct = overall["overlap_pct"]

    sft_funnel, rl_funnel = pd.DataFrame(sft.funnel()), pd.DataFrame(rl.funnel())
    mixture = pd.DataFrame(mixture_table(sft.mixture))
    lengths, rates = lengths_frame(sft), rates_frame(rl)
    weights = (lengths.groupby(["domain", "tier"]).agg(records=("weight", "size"), mean_weight=("weight", "mean"))
               .reset_index())
    t2 = time.time()
    checks, control_rows, violations = claim_checks(cfg, recipe, sets, sft, rl, rates, lengths, mixture,
                                                    final_train, cands)
    t_checks = time.time() - t2
    headline = {
        "problems_in": len(sets["train"]) + rl.n_in, "sft_records_in": sft.n_in, "kept_sft": len(sft.records),
        "kept_sft_mixture": len(sft.mixture), "rl_candidates_in": rl.n_in, "kept_rl": len(rl.problems),
        **{f"dropped_by_rule_{k}": v for k, v in {**sft.dropped_by_rule(), **rl.dropped_by_rule()}.items()},
        "contamination_pct": contamination_pct, "contamination_normalized_pct": overall["overlap_normalized_pct"],
        "curation_problems_per_s_cpu": sft.stats["records_per_s"],
        "rl_pass_rate_problems_per_s": rl.stats["pass_rate_problems_per_s"],
        "rl_pass_rate_k": rl.k, "sft_wall_s_this_run": round(t_sft, 2), "rl_wall_s_this_run": round(t_rl, 2),
        **checks, "claim_checks_wall_s_this_run": round(t_checks, 2),
    }
    writer.records("sft_rejects", sft.rejects())
    writer.records("rl_removed", [r.__dict__ for r in rl.removals])
    writer.records("sft_lengths", lengths.to_dict("records"))
    writer.records("rl_pass_rates", rates.to_dict("records"))
    writer.records("positive_control_items", control_rows)
    writer.records("rule_violations", violations)
    controls_table, rechecks = control_summary(control_rows), recheck_summary(checks)
    writer.table("positive_controls", controls_table, caption=f"Positive controls ({ours}): copies planted in a "
                 "throw-away copy of the data, and how many the dedup / contamination checks found")
    writer.table("rule_rechecks", rechecks, caption=f"Independent re-checks of the curation rules on what was "
                 f"kept ({ours})")
    writer.table("sft_filter_funnel", sft_funnel, caption=f"SFT filter funnel ({ours}): records removed by each rule")
    writer.table("rl_filter_funnel", rl_funnel, caption=f"RL filter funnel ({ours}): problems removed by each rule")
    writer.table("contamination", contam, caption=f"Contamination check ({ours}): % of held-out test questions "
                 "found verbatim (and after normalisation) in each training set")
    writer.table("sft_weights", weights, caption=f"Difficulty tiers and SFT loss weights ({ours})")
    writer.json("headline", headline)
    return CurationTables(sft_funnel, rl_funnel, contam, weights, mixture, lengths, rates, headline,
                          controls_table, rechecks)


# ============================================================================== the claims' keys
def claim_checks(cfg: Preset, recipe: CurationRecipe, sets: dict[str, list[dict[str, Any]]], sft: SFTCuration,
                 rl: RLCuration, rates: pd.DataFrame, lengths: pd.DataFrame, mixture: pd.DataFrame,
                 final_train: Sequence[str], candidates: Sequence[dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The summary keys the curation claims read (``papers/claims.yaml``, section 01), the positive controls'
    rows and the rule violations found. Each key is computed here by code:

    - ``sft_filter_rule_violations``: kept SFT records the independent re-check of the four quality rules
      rejects (``audit.sft_rule_violations``);
    - ``rl_filter_rule_violations``: rated RL problems whose keep/drop differs from the paper's §3.1 rule
      recomputed from their counts, with the paper's threshold (``audit.rl_rule_violations``);
    - ``rl_kept_count_vs_pass_rate_spearman``: the math set's kept problems per 0..k-1 correct bins against the
      bin (scipy; ``_computable`` 0 and a ``_reason`` when it cannot be computed, never NaN);
    - ``rl_sft_overlap_after_dedup``: kept RL problems matching an SFT problem (``audit.overlap_count``), with
      ``dedup_planted_*`` (``controls.dedup_control``);
    - ``contamination_planted_*`` (``controls.contamination_control``; ``contamination_pct`` itself is the
      headline's check of the final training data);
    - ``sft_length_lognormal_ks_max`` (``audit.max_ks_distance`` over :func:`length_fits`) and
      ``mixture_max_abs_share_error_pct`` (``audit.share_errors_pct`` against ``papers/fig3_data_mixture.csv``).

    The controls run on throw-away copies; :func:`controls.assert_nothing_planted` checks that nothing planted
    is in the curated data the other sections read.
    """
    controls.assert_nothing_planted(sft.records, sft.mixture, rl.problems)
    sft_viol = [{"check": "sft_quality_rules", **v} for v in audit.sft_rule_violations(sft.records)]
    paper_k, paper_at_least = audit.paper_rl_rule(papers.load("rl_filter_rules"))
    rl_viol = [{"check": "rl_pass_rate_rules", **v}
               for v in audit.rl_rule_violations(rates.to_dict("records"), paper_k=paper_k,
                                                 paper_drop_at_least=paper_at_least)]
    kept_bins = kept_per_bin(rates, rl.k, HISTOGRAM_DOMAIN)[:rl.k]  # 0..k-1 correct: the bins the rules keep
    rho, rho_why = audit.kept_count_vs_pass_rate_spearman(kept_bins) if sum(kept_bins) else \
        (None, f"no {HISTOGRAM_DOMAIN} problem kept in the RL pool")

    sft_problems = sets["train"]
    overlap = audit.overlap_count([p["question"] for p in rl.problems], [p["question"] for p in sft_problems])
    test_questions = [p["question"] for p in sets["test"]]
    dup_rows = controls.dedup_control(candidates, sft_problems, recipe, eval_questions=test_questions,
                                      per_domain=PLANTED_PER_KIND, seed=cfg.seed)

    def traces(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:  # the teacher's clean traces
        return [public(r) for r in teacher_records(problems, cfg.tasks.teacher_style, cfg.seed)]

    contam_rows = controls.contamination_control(sets["test"], final_train, sft_problems, recipe,
                                                 get_tokenizer(cfg, sets), make_traces=traces,
                                                 levels=cfg.tasks.all_levels(), per_domain=PLANTED_PER_KIND,
                                                 seed=cfg.seed)
    ks, ks_why = audit.max_ks_distance(length_fits(lengths).to_dict("records"))
    paper_mix = papers.load("fig3_data_mixture")
    errors = audit.share_errors_pct(dict(zip(mixture["domain"], mixture["pct_samples"])),
                                    dict(zip(paper_mix["domain"], paper_mix["pct_samples"])))
    worst = max(errors, key=lambda d: abs(errors[d]))
    keys = {
        "sft_filter_rule_violations": len(sft_viol), "sft_filter_rule_records_checked": len(sft.records),
        "rl_filter_rule_violations": len(rl_viol), "rl_filter_rule_rows_checked": len(rates),
        "rl_kept_count_vs_pass_rate_spearman": rho,
        "rl_kept_count_vs_pass_rate_spearman_computable": int(rho is not None),
        "rl_kept_count_vs_pass_rate_spearman_reason": rho_why,
        "rl_kept_count_vs_pass_rate_spearman_domain": HISTOGRAM_DOMAIN,
        "rl_sft_overlap_after_dedup": overlap,
        "dedup_planted_count": len(dup_rows), "dedup_planted_found_fraction": controls.found_fraction(dup_rows),
        "contamination_planted_count": len(contam_rows),
        "contamination_planted_found_fraction": controls.found_fraction(contam_rows),
        "sft_length_lognormal_ks_max": ks, "sft_length_lognormal_ks_max_reason": ks_why,
        "mixture_max_abs_share_error_pct": abs(errors[worst]), "mixture_max_abs_share_error_domain": worst,
    }
    return keys, dup_rows + contam_rows, sft_viol + rl_viol


def kept_per_bin(rates: pd.DataFrame, k: int, domain: str | None = None) -> list[int]:
    """Kept RL problems per number of correct rollouts 0..k (of ``domain``, or all)."""
    if rates.empty:
        return [0] * (k + 1)
    sub = rates if domain is None else rates[rates["domain"] == domain]
    kept = sub[sub["decision"].astype(str).str.startswith("keep")]["correct"].astype(int)
    return [int((kept == c).sum()) for c in range(k + 1)]


def control_summary(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Planted, found and reached-the-pool counts per control and kind of copy."""
    cols = ["control", "kind", "planted", "found", "found_fraction", "reached_pool"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    out = df.groupby(["control", "kind"], sort=False).agg(planted=("found", "size"), found=("found", "sum"),
                                                          reached_pool=("reached_pool", "sum")).reset_index()
    out["found_fraction"] = out["found"] / out["planted"]
    return out[cols]


def recheck_summary(keys: dict[str, Any]) -> pd.DataFrame:
    """The two independent rule re-checks: what was checked and how many violations were found."""
    return pd.DataFrame([
        {"check": "SFT quality rules (empty reasoning, no \\boxed{}, syntax error, wrong language)",
         "on": "kept SFT records", "checked": keys["sft_filter_rule_records_checked"],
         "violations": keys["sft_filter_rule_violations"]},
        {"check": "RL pass-rate rules (paper §3.1: drop k/k, keep 1..k-1, drop 0/k with majority >= 4 of 8)",
         "on": "rated RL problems", "checked": keys["rl_filter_rule_rows_checked"],
         "violations": keys["rl_filter_rule_violations"]},
    ])


def lengths_frame(sft: SFTCuration) -> pd.DataFrame:
    """One row per kept SFT trace: domain, response tokens, tier, weight."""
    return pd.DataFrame([{"domain": r["domain"], "response_tokens": r["response_tokens"], "tier": r["tier"],
                          "weight": r["weight"]} for r in sft.records],
                        columns=["domain", "response_tokens", "tier", "weight"])


def rates_frame(rl: RLCuration) -> pd.DataFrame:
    """One row per rated RL problem: its pass-rate counts and the rules' decision."""
    return pd.DataFrame([{**{k: v for k, v in r.__dict__.items() if k != "reasons"}, "pass_rate": r.pass_rate,
                          "decision": rl.decisions[r.id]} for r in rl.rates])


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


__all__ = ["CurationTables", "HISTOGRAM_DOMAIN", "PLANTED_PER_KIND", "SECTION", "Section", "claim_checks",
           "control_summary", "curate_rl_pool", "curate_sft", "curation_tables", "kept_per_bin", "length_fits",
           "lengths_frame", "load_recipe", "mixture_side_by_side", "model_fingerprint", "open_section",
           "pass_rate_tables", "rates_frame", "recheck_summary", "rl_candidates", "rollout_generation_config",
           "sft_pool"]
