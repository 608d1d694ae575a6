"""Section 03 (paper §3): GRPO from the SFT base over Table 3's domain curricula, the online-sampling
strategies compared on the math pool, and the sandbox attacks inside a training step.

The methods are the library's: the trainer (:func:`falcon_h1r.grpo.train_grpo`), the rewards
(:class:`falcon_h1r.rewards.RewardPool`), the rollout buffer's strategies, the curation stage's RL rules
(:func:`falcon_h1r.curation.select_rl_pool`) and the evaluation harness
(:func:`falcon_h1r.evaluation.evaluate`). This module is the experiment around them: its own recipe
(the ``rl_experiments`` block beside the trainer's ``rl`` block), which pools each stage trains on, which
curricula and strategies run and for how long, the preset's cache of run state, and the records
:func:`compute_records` writes for notebook 03 (:mod:`falcon_h1r.sections.rl_report` reads them back).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from falcon_h1r import curation
from falcon_h1r.config import GenerationConfig, Preset, RecipeError
from falcon_h1r.evaluation import EvalReport, evaluate
from falcon_h1r.grpo import RLRecipe, RunResult, fresh_copy, train_grpo
from falcon_h1r.results import SectionWriter
from falcon_h1r.rewards import RewardPool
from falcon_h1r.rollout_buffer import STRATEGIES, summarize, totals_from_rows
from falcon_h1r.sections import curation as curation_section
from falcon_h1r.sections.common import cached_json, first_per_domain, recipe_hash, torch_threads

SECTION = "03_rl"
CURRICULA: dict[str, list[tuple[str, ...]]] = {
    # name -> stages, each stage the domains of its prompt pool (paper Table 3 rows)
    "math_only": [("math",)],
    "code_only": [("code",)],
    "science_only": [("science",)],
    "math_then_code": [("math",), ("code",)],
    "math_code_mixed": [("math", "code")],
}
PAPER_TABLE3_ROW = {"math_only": "Math only", "code_only": "Code only", "science_only": "Science only",
                    "math_then_code": "Math -> Code", "math_code_mixed": "Math + Code mixed"}
STRATEGIES_COMPARED = (*STRATEGIES, "backfill_nocache")  # backfill_nocache: backfill with cache_size 0 (DAPO)


# ============================================================================== the experiment's recipe
@dataclass
class RLExperimentRecipe:
    """The ``rl_experiments`` block of a preset: what notebook 03 runs with the trainer of the ``rl`` block.

    The paper trains each curriculum until it plateaus and gives no step counts, pool sizes or evaluation
    sizes; each field says what the paper gives where it gives something.
    """

    steps: int = 100  # GRPO steps per curriculum stage. Not given (each run went on until it plateaued)
    curricula: list[str] = field(default_factory=lambda: list(CURRICULA))  # Table 3's rows, from the same SFT base
    eval_problems_per_domain: int = 100  # held-out test problems per domain (never an RL or SFT problem). Not given
    eval_samples: int = 4  # pass@1 averaged over n samples per problem (paper §4.1: 16 for AIME-class benchmarks)
    pool_per_domain: int = 0  # RL candidates per domain re-measured by curation's rules, and kept ones used (0 = all)
    strategies_compared: list[str] = field(default_factory=lambda: ["backfill", "backfill_nocache", "reject",
                                                                    "duplicate"])  # §3: backfill vs the other two
    strategy_steps: int = 20  # steps of each strategy's run on the math pool. Not given
    attack_suite: bool = True  # run the sandbox attack suite through the code reward in one training step (ours)
    resumable: bool = False  # keep run state under results/<preset>/03_rl/_work/<recipe hash>: a rerun resumes
    cpu_threads: int = 1  # torch threads on a CPU (0 = torch's default): microscopic models run fastest on one

    def __post_init__(self) -> None:
        for name in ("steps", "eval_problems_per_domain", "eval_samples", "strategy_steps"):
            if getattr(self, name) < 1:
                raise RecipeError(f"rl_experiments.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("pool_per_domain", "cpu_threads"):
            if getattr(self, name) < 0:
                raise RecipeError(f"rl_experiments.{name}: must be >= 0, got {getattr(self, name)}")
        bad = [c for c in self.curricula if c not in CURRICULA]
        if bad:
            raise RecipeError(f"rl_experiments.curricula: {bad} not accepted; use some of {list(CURRICULA)}")
        bad = [s for s in self.strategies_compared if s not in STRATEGIES_COMPARED]
        if bad:
            raise RecipeError(f"rl_experiments.strategies_compared: {bad} not accepted; use some of "
                              f"{list(STRATEGIES_COMPARED)}")


def load_recipes(preset: Preset) -> tuple[RLRecipe, RLExperimentRecipe]:
    """The preset's trainer recipe (``rl``) and experiment recipe (``rl_experiments``)."""
    return preset.section("rl", RLRecipe), preset.section("rl_experiments", RLExperimentRecipe)


def strategy_recipe(rl: RLRecipe, name: str) -> RLRecipe:
    """The trainer recipe with one of the compared strategies (``backfill_nocache`` = backfill, cache 0)."""
    if name == "backfill_nocache":
        return replace(rl, strategy="backfill", cache_size=0)
    return replace(rl, strategy=name)


def ours_label(preset_name: str) -> str:
    """How every number of ours is labelled in the notebook's tables and figures."""
    return f"ours, {preset_name} preset, synthetic tasks"


# ============================================================================== held-out evaluation
def heldout_problems(sets: dict[str, list[dict[str, Any]]], exp: RLExperimentRecipe) -> list[dict[str, Any]]:
    """The first ``rl_experiments.eval_problems_per_domain`` test problems of each domain."""
    return first_per_domain(sets["test"], exp.eval_problems_per_domain)


def heldout_report(model: torch.nn.Module, tok: Any, problems: Sequence[dict[str, Any]], gen_cfg: GenerationConfig,
                   rl: RLRecipe, *, n_samples: int, seed: int, progress: bool = False) -> EvalReport:
    """pass@1 over ``n_samples`` answers per held-out problem (paper §4.1), graded by the evaluation harness
    with the reward's math tier-2 switch and sandbox time limit."""
    return evaluate(model, tok, problems, gen_cfg, n_samples=n_samples, seed=seed, progress=progress,
                    use_math_verify=rl.rewards.math_use_math_verify, code_timeout_s=rl.rewards.code_timeout_s)


def per_problem_rates(report: EvalReport) -> dict[str, float]:
    """``{problem id: correct / n}`` of an EvalReport (the unit of the paired interval)."""
    return {r["id"]: r["correct"] / r["n"] for r in report.per_problem}


def _eval_record(rep: EvalReport) -> dict[str, Any]:
    return {**rep.flat(), "mean_response_tokens": rep.mean_response_tokens, "per_problem": per_problem_rates(rep)}


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


# ============================================================================== RL pools
class PoolBuilder:
    """RL prompt pools from the curation stage (``falcon_h1r.curation``, paper §3.1), per domain.

    Candidates are the first ``rl_experiments.pool_per_domain`` problems of curation's held-out "rl" split
    (never a test question; SFT duplicates and unverifiable problems removed by ``curation.select_rl_pool``).
    Pass rates come from ``curation.estimate_pass_rates`` (the curation recipe's k rollouts, paper: 8 at
    T 0.6 / top-p 0.95) of the checkpoint that starts a stage, and curation's rules decide (k/k dropped,
    partly solved kept, 0/k by truncation and majority answer). The same candidates are re-measured before
    a later stage (math -> code: code against the math checkpoint).
    """

    def __init__(self, preset: Preset, sets: dict[str, list[dict[str, Any]]], rl: RLRecipe,
                 exp: RLExperimentRecipe, *, seed: int, progress: bool = False):
        self.preset, self.sets, self.rl, self.exp, self.seed, self.progress = preset, sets, rl, exp, seed, progress
        self.cr = curation_section.load_recipe(preset)
        if exp.pool_per_domain:
            self.cr = replace(self.cr, rl_pool_per_domain=exp.pool_per_domain)
        self.gen = replace(preset.generation, temperature=self.cr.pass_rate_temperature, top_p=self.cr.pass_rate_top_p,
                           max_new_tokens=self.cr.pass_rate_max_new_tokens or preset.generation.max_new_tokens)
        self.grade_kw = {"use_math_verify": self.cr.use_math_verify, "code_timeout_s": self.cr.code_timeout_s,
                         "math_verify_timeout_s": self.cr.math_verify_timeout_s,
                         "code_workers": self.cr.code_workers}
        self._candidates: dict[str, list[dict[str, Any]]] = {}

    def candidates(self, domain: str) -> list[dict[str, Any]]:
        if domain not in self._candidates:
            self._candidates[domain] = curation_section.rl_candidates(self.preset, replace(self.cr, rl_domains=[domain]),
                                                                      self.sets)
        return self._candidates[domain]

    def measure(self, model: torch.nn.Module, tok: Any, domain: str, *, tag: str) -> tuple[list[dict[str, Any]], dict]:
        """Curation's selection of ``domain`` candidates against ``model``: (kept problems, report row)."""

        def rates_fn(problems):
            return curation.estimate_pass_rates(model, tok, problems, self.gen, k=self.cr.pass_rate_k, seed=self.seed,
                                                progress=self.progress, **self.grade_kw)

        cur = curation.select_rl_pool(self.candidates(domain), rates_fn, self.cr,
                                      sft_questions=[p["question"] for p in self.sets["train"]],
                                      eval_questions=[p["question"] for p in self.sets["test"]], seed=self.seed)
        per = self.exp.pool_per_domain
        kept = cur.problems[:per] if per else cur.problems
        report = self._report(cur, domain, tag)
        if len(kept) < self.rl.batch_prompts:
            # The rules left less than one batch (at small scale the "every rollout truncated" rule can
            # empty a domain): train on every rated candidate instead, and say so in the report.
            rated = {r.id for r in cur.rates}
            kept = [p for p in self.candidates(domain) if p["id"] in rated]
            report["fallback_all_rated"] = True
        report["used"] = len(kept)
        return kept, report

    def from_base(self, model: torch.nn.Module, tok: Any, domains: Sequence[str]) -> dict[str, Any]:
        """Every domain's pool measured against the SFT base: ``{"pools": {domain: problems}, "reports": [...]}``."""
        pools, reports = {}, []
        for d in domains:
            pools[d], rep = self.measure(model, tok, d, tag="SFT base")
            reports.append(rep)
        return {"pools": pools, "reports": reports}

    @staticmethod
    def _report(cur: Any, domain: str, tag: str) -> dict[str, Any]:
        ids = {r.id for r in cur.rates if r.domain == domain}
        decisions = Counter(v for k, v in cur.decisions.items() if k in ids)
        hist = Counter(r.correct for r in cur.rates if r.domain == domain)
        kept = sum(1 for p in cur.problems if p["domain"] == domain)
        return {"domain": domain, "measured_on": tag, "rated": len(ids), "kept": kept, "fallback_all_rated": False,
                "k": cur.k,
                "pass_rate_mean": _mean([r.pass_rate for r in cur.rates if r.domain == domain]),
                **{f"decision_{d}": decisions.get(d, 0) for d in curation.RL_DECISIONS},
                **{f"hist_{i}": hist.get(i, 0) for i in range(cur.k + 1)}}


# ============================================================================== curricula
def run_curriculum(name: str, base: torch.nn.Module, tok: Any, pools: dict[str, list[dict[str, Any]]],
                   rl: RLRecipe, exp: RLExperimentRecipe, *, builder: PoolBuilder, gen_cfg: GenerationConfig,
                   eval_gen_cfg: GenerationConfig, heldout: Sequence[dict[str, Any]], reward_pool: RewardPool,
                   seed: int, device: Any, run_root: str | Path | None = None, progress: bool = True,
                   stage_cache: dict[tuple, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train one Table 3 curriculum from the SFT base with :func:`falcon_h1r.grpo.train_grpo`, ``exp.steps``
    steps a stage; evaluate on the held-out set after each stage (and every ``rl.eval_every`` steps).

    ``pools`` are the domains' pools measured against the SFT base (:meth:`PoolBuilder.from_base`); a
    later stage re-measures its domains against the checkpoint that starts it (for math -> code, the
    re-measurement of code difficulty after math) with ``builder``. ``stage_cache`` (shared between
    calls) lets a curriculum whose first stages equal another's reuse them: math -> code starts from
    the math-only run (same start, pool, seed and steps: the same computation, done once).
    """
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r}; accepted: {list(CURRICULA)}")
    plan = CURRICULA[name]
    model = fresh_copy(base, rl.trainer_dtype).to(device)
    stages, history, evals, runs, offset, start = [], [], [], [], 0, 0
    if stage_cache is not None:
        for n in range(len(plan), 0, -1):
            hit = stage_cache.get(tuple(plan[:n]))
            if hit is not None:
                model.load_state_dict(hit["state"])
                stages = [{**st, "reused_from": hit["name"]} for st in hit["stages"]]
                history, evals, runs = list(hit["history"]), list(hit["evals"]), list(hit["runs"])
                start, offset = n, n * exp.steps
                break
    for s_i in range(start, len(plan)):
        domains = plan[s_i]
        reports = []
        run_dir = Path(run_root) / name / f"stage{s_i + 1}" if run_root is not None else None
        if s_i == 0:
            problems = [p for d in domains for p in pools[d]]
        else:  # a resumed stage trains on the pool it was measured with

            def remeasure(_s=s_i, _domains=domains, _model=model) -> dict[str, Any]:
                kept_all, reps = [], []
                for d in _domains:
                    kept, rep = builder.measure(_model, tok, d, tag=f"{name} after stage {_s}")
                    kept_all += kept
                    reps.append({**rep, "curriculum": name})
                return {"problems": kept_all, "reports": reps}

            stage_pool = cached_json(run_dir / "pool.json" if run_dir else None, remeasure)
            problems, reports = stage_pool["problems"], stage_pool["reports"]
        if not problems:
            raise ValueError(f"curriculum {name} stage {s_i + 1}: no {'+'.join(domains)} candidates survived "
                             "validation and deduplication; raise rl_experiments.pool_per_domain")

        def eval_fn(m: torch.nn.Module, step: int, _off=offset, _s=s_i) -> dict[str, Any]:
            rep = heldout_report(m, tok, heldout, eval_gen_cfg, rl, n_samples=exp.eval_samples, seed=seed + 7)
            return {"stage": _s + 1, "global_step": _off + step, **_eval_record(rep)}

        res = train_grpo(model, tok, problems, rl, gen_cfg=gen_cfg, steps=exp.steps, seed=seed + 1000 * s_i,
                         device=device, reward_pool=reward_pool, eval_fn=eval_fn, run_dir=run_dir,
                         progress=progress, desc=f"{name} stage {s_i + 1}")
        history += [{**r, "stage": s_i + 1, "global_step": offset + r["step"]} for r in res.history]
        evals += res.evals
        runs.append(res)
        stages.append({"stage": s_i + 1, "domains": "+".join(domains), "pool": len(problems),
                       "remeasured": "+".join(r["domain"] for r in reports), "pool_reports": reports,
                       **{f"sampler_{k}": v for k, v in res.sampler.items()}, "wall_s": res.wall_s})
        offset += exp.steps
        if stage_cache is not None:
            stage_cache[tuple(plan[:s_i + 1])] = {
                "name": name, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "history": list(history), "evals": list(evals), "stages": list(stages), "runs": list(runs)}
    domains_all = sorted({p["domain"] for p in heldout})
    best = {d: max((e.get(f"pass1_{d}", float("nan")) for e in evals), default=float("nan")) for d in domains_all}
    final = {d: evals[-1].get(f"pass1_{d}", float("nan")) for d in domains_all} if evals else {}
    del model
    return {"name": name, "history": history, "evals": evals, "stages": stages, "best": best, "final": final,
            "runs": runs}


# ============================================================================== online sampling strategies
def compare_strategies(base: torch.nn.Module, tok: Any, pool: Sequence[dict[str, Any]], rl: RLRecipe,
                       exp: RLExperimentRecipe, *, gen_cfg: GenerationConfig, reward_pool: RewardPool, seed: int,
                       device: Any, reuse: dict[str, RunResult] | None = None, run_root: str | Path | None = None,
                       progress: bool = True) -> list[dict[str, Any]]:
    """Each of ``exp.strategies_compared`` trains ``exp.strategy_steps`` steps on ``pool`` from the same SFT
    base with the same seed; one row per strategy with its sampling bookkeeping (see rollout_buffer).

    ``reuse`` maps a strategy to a run already made with these settings for at least ``strategy_steps``
    steps (the math-only curriculum is the backfill run): a run's first n steps do not depend on what
    follows, so its first ``strategy_steps`` records are that strategy's measurement.
    """
    rows = []
    n_steps = exp.strategy_steps
    for name in exp.strategies_compared:
        res = (reuse or {}).get(name)
        reused = res is not None and len(res.history) >= n_steps
        if reused:
            h = res.history[:n_steps]
            sampler, wall = summarize(totals_from_rows(h), rl.batch_prompts), sum(r["gen_s"] + r["train_s"] for r in h)
        else:
            model = fresh_copy(base, rl.trainer_dtype).to(device)
            res = train_grpo(model, tok, pool, strategy_recipe(rl, name), gen_cfg=gen_cfg, steps=n_steps,
                             seed=seed, device=device, reward_pool=reward_pool, progress=progress,
                             run_dir=Path(run_root) / f"strategy_{name}" if run_root is not None else None,
                             desc=f"strategy {name}")
            del model
            h, sampler, wall = res.history, res.sampler, res.wall_s
        rows.append({"strategy": name, **sampler, "wall_s": wall, "reused_run": reused,
                     "batch_groups_mean": _mean([r["batch_groups"] for r in h]),
                     "batch_groups_min": min(r["batch_groups"] for r in h),
                     "reward_mean_first": h[0]["reward_mean"], "reward_mean_last": h[-1]["reward_mean"],
                     "mean_staleness": _mean([r["mean_staleness"] for r in h]),
                     "is_ratio_max": max(r.get("is_ratio_max", 1.0) for r in h)})
    return rows


# ============================================================================== the section's records
def compute_records(preset: Preset, rl: RLRecipe, exp: RLExperimentRecipe, writer: SectionWriter, *,
                    progress: bool = True) -> dict[str, Any]:
    """Compute every record of notebook 03 and write it with ``writer``; returns the timings.

    In order: the RL pools (curation's pass-rate rules against the SFT base); the SFT base's held-out
    pass@1; the sandbox's attack suite through the code reward in one GRPO step; the curricula, each from
    the same SFT base (math -> code reuses the math-only run as its first stage); the online-sampling
    strategies on the math pool (the first ``strategy_steps`` steps of the math-only run are the backfill
    run). With ``rl_experiments.resumable`` the run state goes to ``<section>/_work/<recipe hash>``: a rerun
    after an interruption (e.g. a GPU command's time limit) continues where it stopped.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from falcon_h1r.env import pick_device
    from falcon_h1r.rewards import load_llm_judge
    from falcon_h1r.sections.common import get_base_model

    timings: dict[str, Any] = {}
    t_all = time.time()
    device = pick_device(preset.device)
    with torch_threads(exp.cpu_threads, device):
        base = get_base_model(preset)
        tok = base.tokenizer
        judge = load_llm_judge(rl.rewards.science_judge_model) if rl.rewards.science_judge == "llm" else None
        reward_pool = RewardPool(rl.rewards, judge=judge)
        heldout = heldout_problems(base.sets, exp)
        gen_cfg = rl.sampling(preset.generation)
        eval_cfg = preset.generation  # paper §4.1: T 0.6, top-p 0.95
        work = (writer.dir / "_work" / recipe_hash(rl, exp, preset.model, preset.tasks, preset.train,
                                                   preset.generation, preset.seed)
                if exp.resumable else None)
        timings["setup_s"] = time.time() - t_all

        t0 = time.time()
        builder = PoolBuilder(preset, base.sets, rl, exp, seed=preset.seed, progress=progress)
        needed = sorted({d for c in exp.curricula for stage in CURRICULA[c] for d in stage} | {"math"})
        measured = cached_json(work / "pools_base.json" if work else None,
                               lambda: builder.from_base(base.model, tok, needed))
        pools, pool_reports = measured["pools"], measured["reports"]
        timings["pools_s"] = time.time() - t0

        t0 = time.time()

        def sft_heldout() -> dict[str, Any]:
            sft_model = fresh_copy(base.model, rl.trainer_dtype).to(device)
            rep = heldout_report(sft_model, tok, heldout, eval_cfg, rl, n_samples=exp.eval_samples,
                                 seed=preset.seed + 7, progress=progress)
            return {**_eval_record(rep), "n_problems": rep.n_problems, "n_samples": exp.eval_samples}

        sft_eval = {**cached_json(work / "sft_eval.json" if work else None, sft_heldout),
                    "pool_sizes": {d: len(v) for d, v in pools.items()},
                    "pool_source": "falcon_h1r.curation: its held-out 'rl' split, SFT duplicates removed, "
                                   "pass-rate rules"}
        writer.json("sft_eval", sft_eval)
        timings["sft_eval_s"] = time.time() - t0

        t0 = time.time()
        if exp.attack_suite:
            from falcon_h1r.sandbox import isolation_report
            from falcon_h1r.sections.rl_attacks import attack_training_step

            attacks = cached_json(work / "attacks.json" if work else None, lambda: {
                **attack_training_step(fresh_copy(base.model, rl.trainer_dtype).to(device), tok, rl, device=device),
                "isolation": isolation_report()})
            writer.records("attacks", attacks["rows"])
            writer.json("attacks_summary", {k: v for k, v in attacks.items() if k != "rows"})
        timings["attacks_s"] = time.time() - t0

        runs, stage_cache = {}, {}
        for name in tqdm(exp.curricula, desc="curricula", disable=not progress):
            t0 = time.time()
            runs[name] = run_curriculum(name, base.model, tok, pools, rl, exp, builder=builder, gen_cfg=gen_cfg,
                                        eval_gen_cfg=eval_cfg, heldout=heldout, reward_pool=reward_pool,
                                        seed=preset.seed, device=device, progress=progress, stage_cache=stage_cache,
                                        run_root=work)
            timings[f"curriculum_{name}_s"] = time.time() - t0
        del stage_cache
        writer.records("curricula_history", [{"curriculum": n, **r} for n, run in runs.items() for r in run["history"]])
        writer.records("curricula_evals", [{"curriculum": n, **e} for n, run in runs.items() for e in run["evals"]])
        writer.records("curricula_stages", [{"curriculum": n, **{k: v for k, v in s.items() if k != "pool_reports"}}
                                            for n, run in runs.items() for s in run["stages"]])
        writer.records("pools", pool_reports + [r for run in runs.values() for s in run["stages"]
                                                for r in s["pool_reports"] if not s.get("reused_from")])

        t0 = time.time()
        reuse = {}
        if "math_only" in runs and rl.strategy == "backfill":
            reuse["backfill"] = runs["math_only"]["runs"][0]  # the same run: math pool, seed, backfill
        strategy_rows = compare_strategies(base.model, tok, pools["math"], rl, exp, gen_cfg=gen_cfg,
                                           reward_pool=reward_pool, seed=preset.seed, device=device, reuse=reuse,
                                           run_root=work, progress=progress)
        writer.table("strategies", pd.DataFrame(strategy_rows),
                     caption=f"Online sampling strategies on the math pool ({ours_label(preset.name)}), "
                             f"{exp.strategy_steps} steps each")
        timings["strategies_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_all
    timings["process_cpu_s"] = time.process_time()  # this process's CPU time (sandbox processes not included)
    timings["reward_pool"] = {"graded": reward_pool.calls, "sandbox_runs": reward_pool.sandbox_runs}
    writer.json("timings", timings)
    return timings


__all__ = ["CURRICULA", "PAPER_TABLE3_ROW", "SECTION", "STRATEGIES_COMPARED", "PoolBuilder", "RLExperimentRecipe",
           "compare_strategies", "compute_records", "heldout_problems", "heldout_report", "load_recipes", "ours_label",
           "per_problem_rates", "run_curriculum", "strategy_recipe"]
