"""Section 03 (paper §3): GRPO from each of the preset's SFT bases over Table 3's domain curricula, the
online-sampling strategies compared on replayed outcomes, and the sandbox attacks inside a training step.

The methods are the library's: the trainer (:func:`falcon_h1r.grpo.train_grpo`), the rewards
(:class:`falcon_h1r.rewards.RewardPool`), the curation stage's RL rules (:func:`falcon_h1r.curation.select_rl_pool`)
and the evaluation harness (:func:`falcon_h1r.evaluation.evaluate`). This module is the experiment around them:
its own recipe (the ``rl_experiments`` block beside the trainer's ``rl`` block), which pools each stage trains on,
which curricula run from which base and for how long, the preset's cache of run state, and the records
:func:`compute_records` writes for notebook 03. The strategy comparison is :mod:`falcon_h1r.sections.rl_strategies`,
the tables and summary figures :mod:`falcon_h1r.sections.rl_report`.

Seeds are bases: RL seed i starts from the preset's i-th independently trained SFT base (``eval.base_seeds``,
:func:`falcon_h1r.sections.common.get_base_models`) and samples with that base's seed, so an interval over the RL
seeds covers retraining the base as well as the RL run.

``python -m falcon_h1r.sections.rl_records --preset small --records [--parallel] [--override K=V ...]`` computes
the records alone (:mod:`falcon_h1r.sections.rl_records`; no notebook; exit 3 when ``rl_experiments.budget_s``
stopped it: run it again), so that a machine without papermill computes them and notebook 03 renders them
anywhere (``scripts/gpu_rl_probe.sh`` uses it there).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from falcon_h1r import curation
from falcon_h1r.config import GenerationConfig, Preset, RecipeError
from falcon_h1r.evaluation import EvalReport, evaluate
from falcon_h1r.grpo import RLRecipe, fresh_copy, train_grpo
from falcon_h1r.inference.engine_pool import free_engines
from falcon_h1r.results import SectionWriter, read_json, write_json
from falcon_h1r.rewards import RewardPool
from falcon_h1r.rollout_buffer import STRATEGIES
from falcon_h1r.sections import curation as curation_section
from falcon_h1r.sections.common import (StageIncomplete, cache_dir, cached_json, first_per_domain, recipe_hash,
                                        torch_dtype, torch_threads)

SECTION = "03_rl"
DOMAINS = ("math", "code", "science")
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
RECORDS_VERSION = 2  # the layout of the run state kept for resumable runs (part of its cache key)


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
    measure_batch_rows: int = 0  # rows per generation batch when a checkpoint is measured (held-out evaluations,
    #                              pass rates); 0 = generation.batch_size. Ours: a batch runs as long as its longest row
    trajectory_eval_every: int = 0  # math-only runs: held-out evaluation every n steps (Fig. 6 analog); 0 = end only
    pool_per_domain: int = 0  # RL candidates per domain measured by curation's rules (0 = all). Not given
    strategies_compared: list[str] = field(default_factory=lambda: ["backfill", "backfill_nocache", "reject",
                                                                    "duplicate"])  # §3: backfill vs the other two
    strategy_seeds: int = 20  # replay seeds per strategy and regime (the comparison's replicates; ours)
    strategy_steps: int = 50  # batches per replay seed. Not given
    scarce_informative_frac: float = 0.25  # expected share of informative groups in the scarce regime's pool (ours)
    attack_suite: bool = True  # run the sandbox attack suite through the code reward in one training step (ours)
    resumable: bool = False  # keep run state in the preset's cache (results/<preset>/_cache/rl-<hash>): a rerun resumes
    budget_s: float = 0.0  # stop at the next step or unit past this many seconds (0 = no limit); rerun to continue
    cpu_threads: int = 1  # torch threads on a CPU (0 = torch's default): microscopic models run fastest on one

    def __post_init__(self) -> None:
        for name in ("steps", "eval_problems_per_domain", "eval_samples", "strategy_steps", "strategy_seeds"):
            if getattr(self, name) < 1:
                raise RecipeError(f"rl_experiments.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("pool_per_domain", "cpu_threads", "measure_batch_rows", "trajectory_eval_every", "budget_s"):
            if getattr(self, name) < 0:
                raise RecipeError(f"rl_experiments.{name}: must be >= 0, got {getattr(self, name)}")
        bad = [c for c in self.curricula if c not in CURRICULA]
        if bad:
            raise RecipeError(f"rl_experiments.curricula: {bad} not accepted; use some of {list(CURRICULA)}")
        bad = [s for s in self.strategies_compared if s not in STRATEGIES_COMPARED]
        if bad:
            raise RecipeError(f"rl_experiments.strategies_compared: {bad} not accepted; use some of "
                              f"{list(STRATEGIES_COMPARED)}")
        if self.strategies_compared and "backfill" not in self.strategies_compared:
            raise RecipeError("rl_experiments.strategies_compared: must include 'backfill' (every saving is "
                              f"backfill's against another strategy), got {self.strategies_compared}")
        if not 0.0 < self.scarce_informative_frac < 1.0:
            raise RecipeError(f"rl_experiments.scarce_informative_frac: must be in (0, 1), got "
                              f"{self.scarce_informative_frac}")
        if self.budget_s and not self.resumable:
            raise RecipeError("rl_experiments.budget_s: a time budget needs rl_experiments.resumable: true (the run "
                              "state must be kept for the next piece)")


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


def work_dir(preset: Preset, rl: RLRecipe, exp: RLExperimentRecipe, bases: Sequence[int]) -> Path:
    """Where a resumable run keeps its state: the preset's cache (never committed), keyed by everything that
    shapes the results (the time budget and the thread count aside)."""
    return cache_dir(preset) / f"rl-{recipe_hash(rl, replace(exp, budget_s=0.0, cpu_threads=0), _shared_key(preset, bases))}"


def measure_dir(preset: Preset, rl: RLRecipe, exp: RLExperimentRecipe, bases: Sequence[int]) -> Path:
    """Where a resumable run keeps what it measured of the SFT bases (pools, held-out pass@1), keyed by only what
    shapes those measurements: a change of steps, learning rate or strategies keeps them."""
    parts = (exp.pool_per_domain, exp.eval_problems_per_domain, exp.eval_samples, exp.measure_batch_rows,
             rl.batch_prompts, rl.rewards, sorted({d for c in exp.curricula for st in CURRICULA[c] for d in st}))
    return cache_dir(preset) / f"rl-measure-{recipe_hash(*parts, _shared_key(preset, bases))}"


def _shared_key(preset: Preset, bases: Sequence[int]) -> str:
    from falcon_h1r.tasks import GENERATOR_VERSION

    return recipe_hash(preset.model, preset.tasks, preset.train.key(), preset.generation, preset.eval, preset.seed,
                       list(bases), preset.sections.get("curation", {}), preset.sections.get("sft", {}),
                       preset.tokenizer, GENERATOR_VERSION, RECORDS_VERSION)


# ============================================================================== measuring a checkpoint
class FrozenCopy:
    """One model object in the preset's dtype into which every measured checkpoint is loaded (weights copied
    in place), so the decode engine built for it (static caches, captured graphs) serves every held-out
    evaluation and pass-rate measurement of the section instead of being rebuilt per checkpoint. Evaluating in
    the preset's dtype also measures the SFT base and the RL checkpoints (fp32 master weights) alike."""

    def __init__(self, like: torch.nn.Module, dtype: torch.dtype, device: Any):
        self.model = fresh_copy(like).to(device=device, dtype=dtype).eval()

    @torch.no_grad()
    def load(self, model: torch.nn.Module) -> torch.nn.Module:
        self.model.load_state_dict(model.state_dict())
        return self.model


def heldout_problems(sets: dict[str, list[dict[str, Any]]], exp: RLExperimentRecipe) -> list[dict[str, Any]]:
    """The first ``rl_experiments.eval_problems_per_domain`` test problems of each domain."""
    return first_per_domain(sets["test"], exp.eval_problems_per_domain)


def heldout_report(model: torch.nn.Module, tok: Any, problems: Sequence[dict[str, Any]], gen_cfg: GenerationConfig,
                   rl: RLRecipe, *, n_samples: int, seed: int, progress: bool = False,
                   grader: Callable | None = None) -> EvalReport:
    """pass@1 over ``n_samples`` answers per held-out problem (paper §4.1), graded by the evaluation harness
    with the reward's math tier-2 switch and sandbox time limit (``grader``: a reward pool's ``score``, which
    grades code in parallel sandboxes and gives the same verdicts)."""
    return evaluate(model, tok, problems, gen_cfg, n_samples=n_samples, seed=seed, progress=progress, grader=grader,
                    use_math_verify=rl.rewards.math_use_math_verify, code_timeout_s=rl.rewards.code_timeout_s)


def per_problem_rates(report: EvalReport) -> dict[str, float]:
    """``{problem id: correct / n}`` of an EvalReport (the unit of the paired interval)."""
    return {r["id"]: r["correct"] / r["n"] for r in report.per_problem}


def eval_record(rep: EvalReport) -> dict[str, Any]:
    return {**rep.flat(), "mean_response_tokens": rep.mean_response_tokens, "per_problem": per_problem_rates(rep)}


@dataclass
class Measurer:
    """Held-out pass@1 of any checkpoint, the same way for the SFT base and every RL checkpoint of one base:
    the preset's dtype (:class:`FrozenCopy`), the paper's sampling (T 0.6, top-p 0.95), the same problems and
    the same sampling seed (common random numbers: the paired differences are not diluted by sampling noise)."""

    frozen: FrozenCopy
    tok: Any
    problems: list[dict[str, Any]]
    gen_cfg: GenerationConfig
    rl: RLRecipe
    n_samples: int
    grader: Callable
    progress: bool = False

    def __call__(self, model: torch.nn.Module, *, seed: int) -> dict[str, Any]:
        rep = heldout_report(self.frozen.load(model), self.tok, self.problems, self.gen_cfg, self.rl,
                             n_samples=self.n_samples, seed=seed, progress=self.progress, grader=self.grader)
        return eval_record(rep)


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


# ============================================================================== RL pools
class PoolBuilder:
    """RL prompt pools from the curation stage (``falcon_h1r.curation``, paper §3.1), per domain, for one base.

    Candidates are the first ``rl_experiments.pool_per_domain`` problems of curation's held-out "rl" split
    (never a test question; SFT duplicates and unverifiable problems removed by ``curation.select_rl_pool``).
    Pass rates come from ``curation.estimate_pass_rates`` (the curation recipe's k rollouts, paper: 8 at
    T 0.6 / top-p 0.95) of the checkpoint that starts a stage, and curation's rules decide (k/k dropped,
    partly solved kept, 0/k by truncation and majority answer). The same candidates are re-measured before
    a later stage (math -> code: code against the math checkpoint). Each report keeps every rated
    candidate's correct count (the strategy comparison replays them).
    """

    def __init__(self, preset: Preset, sets: dict[str, list[dict[str, Any]]], rl: RLRecipe,
                 exp: RLExperimentRecipe, *, seed: int, frozen: FrozenCopy | None = None, progress: bool = False):
        self.preset, self.sets, self.rl, self.exp, self.seed, self.progress = preset, sets, rl, exp, seed, progress
        self.frozen = frozen
        self.cr = curation_section.load_recipe(preset)
        if exp.pool_per_domain:
            self.cr = replace(self.cr, rl_pool_per_domain=exp.pool_per_domain)
        self.gen = replace(preset.generation, temperature=self.cr.pass_rate_temperature, top_p=self.cr.pass_rate_top_p,
                           max_new_tokens=self.cr.pass_rate_max_new_tokens or preset.generation.max_new_tokens,
                           batch_size=exp.measure_batch_rows or preset.generation.batch_size)
        self.grade_kw = {"use_math_verify": self.cr.use_math_verify, "code_timeout_s": self.cr.code_timeout_s,
                         "math_verify_timeout_s": self.cr.math_verify_timeout_s,
                         # sandboxes at once: a speed knob only (each program has its own sandbox either way)
                         "code_workers": max(self.cr.code_workers, rl.rewards.reward_workers)}
        self._candidates: dict[str, list[dict[str, Any]]] = {}

    def candidates(self, domain: str) -> list[dict[str, Any]]:
        if domain not in self._candidates:
            self._candidates[domain] = curation_section.rl_candidates(self.preset, replace(self.cr, rl_domains=[domain]),
                                                                      self.sets)
        return self._candidates[domain]

    def measure(self, model: torch.nn.Module, tok: Any, domain: str, *, tag: str) -> tuple[list[dict[str, Any]], dict]:
        """Curation's selection of ``domain`` candidates against ``model``: (problems to train on, report row)."""
        measured = self.frozen.load(model) if self.frozen is not None else model

        def rates_fn(problems):
            return curation.estimate_pass_rates(measured, tok, problems, self.gen, k=self.cr.pass_rate_k, seed=self.seed,
                                                progress=self.progress, **self.grade_kw)

        cur = curation.select_rl_pool(self.candidates(domain), rates_fn, self.cr,
                                      sft_questions=[p["question"] for p in self.sets["train"]],
                                      eval_questions=[p["question"] for p in self.sets["test"]], seed=self.seed)
        per = self.exp.pool_per_domain
        kept = cur.problems[:per] if per else cur.problems
        report = self._report(cur, domain, tag)
        if len(kept) < self.rl.batch_prompts:
            # The rules left less than one batch: train on every rated candidate instead, and say so.
            rated = {r.id for r in cur.rates}
            kept = [p for p in self.candidates(domain) if p["id"] in rated]
            report["fallback_all_rated"] = True
        correct = report["rates"]
        report["used"] = len(kept)
        report["used_ids"] = [p["id"] for p in kept]
        report["inside_used"] = sum(1 for p in kept if 0 < correct.get(p["id"], 0) < cur.k)
        report["inside_fraction"] = report["inside_used"] / len(kept) if kept else None
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
        rates = [r for r in cur.rates if r.domain == domain]
        decisions = Counter(v for k, v in cur.decisions.items() if k in {r.id for r in rates})
        hist = Counter(r.correct for r in rates)
        kept = sum(1 for p in cur.problems if p["domain"] == domain)
        return {"domain": domain, "measured_on": tag, "rated": len(rates), "kept": kept, "fallback_all_rated": False,
                "k": cur.k, "pass_rate_mean": _mean([r.pass_rate for r in rates]),
                "truncated_rollouts": sum(r.n_truncated for r in rates),
                **{f"decision_{d}": decisions.get(d, 0) for d in curation.RL_DECISIONS},
                **{f"hist_{i}": hist.get(i, 0) for i in range(cur.k + 1)},
                "rates": {r.id: r.correct for r in rates}}


# ============================================================================== curricula
@dataclass
class RunContext:
    """What every curriculum run of one base shares."""

    base_seed: int
    base_model: torch.nn.Module | None  # None when every unit of this base is already kept (never loaded)
    tok: Any
    pools: dict[str, list[dict[str, Any]]]  # the domains' pools measured against this SFT base
    builder: PoolBuilder
    measurer: Measurer | None
    reward_pool: RewardPool
    gen_cfg: GenerationConfig  # the rollout sampler's settings
    device: Any
    run_root: Path | None = None  # per-base work folder (resumable runs), None = in memory
    prefixes: dict[tuple, dict[str, Any]] = field(default_factory=dict)  # finished stage prefixes (math -> code)
    deadline: float | None = None
    progress: bool = True

    @property
    def eval_seed(self) -> int:
        return 7 + 1000 * self.base_seed

    def prefix(self, stages: tuple) -> dict[str, Any] | None:
        """A finished run of these first stages (in memory, or saved in the work folder)."""
        if stages in self.prefixes:
            return self.prefixes[stages]
        path = self._prefix_path(stages)
        if path is not None and path.exists():
            self.prefixes[stages] = torch.load(path, map_location="cpu", weights_only=False)
            return self.prefixes[stages]
        return None

    def keep_prefix(self, stages: tuple, payload: dict[str, Any]) -> None:
        self.prefixes[stages] = payload
        path = self._prefix_path(stages)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(payload, tmp)
            tmp.replace(path)

    def _prefix_path(self, stages: tuple) -> Path | None:
        if self.run_root is None:
            return None
        return self.run_root / "prefixes" / ("__".join("+".join(s) for s in stages) + ".pt")


def run_curriculum(name: str, ctx: RunContext, rl: RLRecipe, exp: RLExperimentRecipe) -> dict[str, Any]:
    """Train one Table 3 curriculum from the base with :func:`falcon_h1r.grpo.train_grpo`, ``exp.steps`` steps a
    stage, and measure held-out pass@1 after each stage (math-only: also every ``trajectory_eval_every`` steps).

    A later stage re-measures its domains against the checkpoint that starts it (for math -> code, the
    re-measurement of code difficulty after math). A curriculum whose first stages equal another's finished run
    (math -> code after math-only: same start, pool, seed and steps) starts from that run's checkpoint.
    Raises :class:`StageIncomplete` when ``ctx.deadline`` stops a stage (its state is saved; call again).
    """
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r}; accepted: {list(CURRICULA)}")
    plan = CURRICULA[name]
    model = fresh_copy(ctx.base_model, rl.trainer_dtype).to(ctx.device)
    stages, history, evals, start = [], [], [], 0
    for n in range(len(plan), 0, -1):
        hit = ctx.prefix(tuple(plan[:n]))
        if hit is not None:
            model.load_state_dict(hit["state"])
            stages = [{**st, "reused_from": hit["name"]} for st in hit["stages"]]
            history, evals, start = list(hit["history"]), list(hit["evals"]), n
            break
    offset = start * exp.steps
    for s_i in range(start, len(plan)):
        domains = plan[s_i]
        reports = []
        run_dir = ctx.run_root / name / f"stage{s_i + 1}" if ctx.run_root is not None else None
        if s_i == 0:
            problems = [p for d in domains for p in ctx.pools[d]]
        else:  # a resumed stage trains on the pool it was measured with

            def remeasure(_s=s_i, _domains=domains, _model=model) -> dict[str, Any]:
                kept_all, reps = [], []
                for d in _domains:
                    kept, rep = ctx.builder.measure(_model, ctx.tok, d, tag=f"{name} after stage {_s}")
                    kept_all += kept
                    reps.append({**rep, "curriculum": name})
                return {"problems": kept_all, "reports": reps}

            stage_pool = cached_json(run_dir / "pool.json" if run_dir else None, remeasure)
            problems, reports = stage_pool["problems"], stage_pool["reports"]
        if not problems:
            raise ValueError(f"curriculum {name} stage {s_i + 1}: no {'+'.join(domains)} candidates survived "
                             "validation and deduplication; raise rl_experiments.pool_per_domain")
        every = exp.trajectory_eval_every if name == "math_only" else 0

        def eval_fn(m: torch.nn.Module, step: int, _off=offset, _s=s_i) -> dict[str, Any]:
            return {"stage": _s + 1, "global_step": _off + step, "final": step == exp.steps,
                    **ctx.measurer(m, seed=ctx.eval_seed)}

        res = train_grpo(model, ctx.tok, problems, replace(rl, eval_every=every), gen_cfg=ctx.gen_cfg,
                         steps=exp.steps, seed=ctx.base_seed + 1000 * s_i, device=ctx.device,
                         reward_pool=ctx.reward_pool, eval_fn=eval_fn, run_dir=run_dir, progress=ctx.progress,
                         desc=f"base {ctx.base_seed} {name} stage {s_i + 1}", deadline=ctx.deadline)
        if not res.complete:
            raise StageIncomplete(f"RL base {ctx.base_seed}, {name} stage {s_i + 1} stopped at step {res.steps} of "
                                  f"{exp.steps} on rl_experiments.budget_s; its state is saved: run again to continue")
        history += [{**r, "stage": s_i + 1, "global_step": offset + r["step"]} for r in res.history]
        evals += res.evals
        stages.append({"stage": s_i + 1, "domains": "+".join(domains), "pool": len(problems),
                       "remeasured": "+".join(r["domain"] for r in reports), "pool_reports": reports,
                       **{f"sampler_{k}": v for k, v in res.sampler.items()}, "wall_s": res.wall_s})
        offset += exp.steps
        done = tuple(plan[:s_i + 1])
        if any(len(CURRICULA[c]) > len(done) and tuple(CURRICULA[c][:len(done)]) == done for c in exp.curricula):
            ctx.keep_prefix(done, {
                "name": name, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "history": list(history), "evals": list(evals), "stages": list(stages)})
    del model
    return {"name": name, "base": ctx.base_seed, "history": history, "evals": evals, "stages": stages}


# ============================================================================== the section's records
def compute_records(preset: Preset, rl: RLRecipe, exp: RLExperimentRecipe, writer: SectionWriter | None, *,
                    progress: bool = True, only_base: int | None = None) -> dict[str, Any]:
    """Compute every record of notebook 03 and write it with ``writer``; returns the timings.

    For each of the preset's SFT bases in turn: its RL pools (curation's pass-rate rules against that base), its
    held-out pass@1, then every curriculum from it (math -> code reuses that base's math-only run as its first
    stage). Then the sandbox attack suite through the code reward in one GRPO step (first base), and the
    online-sampling strategies on the bases' measured pass rates (:mod:`falcon_h1r.sections.rl_strategies`).
    With ``rl_experiments.resumable`` every finished unit and the state of the running one stay in the preset's
    cache; with ``budget_s`` the run stops at the next step past the budget and raises :class:`StageIncomplete`
    (a rerun continues where it stopped).

    ``only_base``: compute that base's units only (pools, SFT evaluation, curricula) into the resumable state and
    write no records (``writer`` may be None): what each process of ``--records --parallel`` does before one
    last pass, finding every unit kept, writes the records.
    """
    from tqdm.auto import tqdm

    from falcon_h1r.env import pick_device
    from falcon_h1r.rewards import load_llm_judge
    from falcon_h1r.sections.common import base_seeds, get_base_model, get_tokenizer, task_sets
    from falcon_h1r.sections.rl_strategies import compare_strategies

    timings: dict[str, Any] = {}
    t_all = time.time()
    deadline = t_all + exp.budget_s if exp.budget_s else None
    device = pick_device(preset.device)
    seeds = base_seeds(preset)
    if only_base is not None and (only_base not in seeds or not exp.resumable):
        raise RecipeError(f"only_base={only_base}: needs one of the preset's bases {seeds} and "
                          "rl_experiments.resumable: true (the units are handed over through the kept state)")
    work = work_dir(preset, rl, exp, seeds) if exp.resumable else None
    measured_root = measure_dir(preset, rl, exp, seeds) if exp.resumable else None

    computed: list[str] = []  # units computed by this piece (a piece always makes progress before it stops)

    def unit(path: Path | None, what: str, compute: Callable[[], Any]) -> Any:
        """One unit of work: read back when kept, else computed (after a time check) and kept at ``path``."""
        if path is not None and path.exists():
            return cached_json(path, compute)
        if work is not None:  # what each unit of this piece took, kept beside the state (pieces on a GPU machine)
            write_json(work / f"timings_piece_{int(t_all)}_{os.getpid()}.json",
                       {**timings, "before": what, "at_s": time.time() - t_all})
        if deadline is not None and computed and time.time() > deadline:
            raise StageIncomplete(f"RL stopped before {what} on rl_experiments.budget_s ({exp.budget_s:.0f} s); every "
                                  f"finished unit is kept in {work}: run again to continue")
        computed.append(what)

        def timed() -> Any:  # the unit's own wall time, kept beside the state: pieces and --parallel children add up
            t_unit = time.time()
            out = compute()
            if work is not None:
                slug = "".join(c if c.isalnum() else "_" for c in what)
                write_json(work / "unit_times" / f"{slug}.json", {"unit": what, "wall_s": time.time() - t_unit,
                                                                   "pid": os.getpid(), "device": str(device)})
            return out

        return cached_json(path, timed)

    with torch_threads(exp.cpu_threads, device):
        sets = task_sets(preset)
        tok = get_tokenizer(preset, sets)
        judge = load_llm_judge(rl.rewards.science_judge_model) if rl.rewards.science_judge == "llm" else None
        reward_pool = RewardPool(rl.rewards, judge=judge)
        eval_grader = RewardPool(replace(rl.rewards, code_tests_sampled=0), judge=judge).score  # every test
        heldout = heldout_problems(sets, exp)
        eval_cfg = replace(preset.generation, batch_size=exp.measure_batch_rows or preset.generation.batch_size)
        # one generation call of the rollout sampler = one engine batch (a batch runs as long as its longest row)
        rollout_cfg = replace(rl.sampling(preset.generation), batch_size=rl.gen_prompts_per_call * rl.group_size)
        needed = sorted({d for c in exp.curricula for stage in CURRICULA[c] for d in stage} | {"math"})
        order = _run_order(exp.curricula)
        loaded: dict[str, Any] = {}  # the frozen copy and its measurer, made with the first base loaded

        def load_base(b: int) -> Any:
            """Base ``b`` (a base whose every unit is already kept is never loaded: a GPU piece needs only the
            bases it still works on), and the measurer on first use."""
            base = get_base_model(preset, seed=b, progress=progress, budget_s=exp.budget_s or None)  # section 02's
            if "measurer" not in loaded:
                frozen = FrozenCopy(base.model, torch_dtype(preset), device)
                loaded["measurer"] = Measurer(frozen, tok, heldout, eval_cfg, rl, exp.eval_samples, eval_grader,
                                              progress=progress)
            loaded["last"] = base
            return base

        timings["setup_s"] = time.time() - t_all
        per_base, runs, pool_rows = {}, [], []
        for b in tqdm(seeds if only_base is None else [only_base], desc="RL bases", disable=not progress):
            root = work / f"base{b}" if work is not None else None
            mroot = measured_root / f"base{b}" if measured_root is not None else None
            kept = [mroot / "pools.json", mroot / "sft_eval.json"] + [root / n / "result.json" for n in order] \
                if root is not None else []
            base = None if kept and all(f.exists() for f in kept) else load_base(b)
            measurer = loaded.get("measurer")
            t0 = time.time()
            builder = PoolBuilder(preset, sets, rl, exp, seed=b, frozen=measurer.frozen if measurer else None,
                                  progress=progress)
            measured = unit(mroot / "pools.json" if mroot else None, f"base {b}'s pools",
                            lambda: builder.from_base(base.model, tok, needed))
            pool_rows += [{"base": b, **r} for r in measured["reports"]]
            ctx = RunContext(b, base.model if base else None, tok, measured["pools"], builder, measurer, reward_pool,
                             rollout_cfg, device, run_root=root, deadline=deadline, progress=progress)
            sft = unit(mroot / "sft_eval.json" if mroot else None, f"base {b}'s SFT evaluation", lambda: {
                **measurer(base.model, seed=ctx.eval_seed),
                "pre_sft_greedy": base.info.get("greedy_acc_before_by_domain", {})})
            per_base[b] = {**sft, "pool_sizes": {d: len(v) for d, v in measured["pools"].items()}}
            timings[f"base{b}_pools_sft_s"] = time.time() - t0
            free_engines()  # the measuring engines (2,400 rows) are not used by the runs: give their memory back
            for name in order:
                t0 = time.time()
                run = unit(root / name / "result.json" if root else None, f"base {b}'s {name} run",
                           lambda: run_curriculum(name, ctx, rl, exp))
                free_engines()  # the run's sampler engine (its model is gone)
                runs.append(run)
                pool_rows += [{"base": b, **r} for s in run["stages"] for r in s["pool_reports"]
                              if not s.get("reused_from")]
                timings[f"base{b}_{name}_s"] = time.time() - t0
            del ctx, base
        if only_base is not None:  # a --parallel child: its units are kept, the last pass writes the records
            timings["total_s"] = time.time() - t_all
            return timings

        sft_record = {"bases": seeds, "n_problems": len(heldout), "n_samples": exp.eval_samples,
                      "heldout_ids": {d: [p["id"] for p in heldout if p["domain"] == d] for d in DOMAINS},
                      "per_base": {str(b): v for b, v in per_base.items()},
                      "pool_source": "falcon_h1r.curation: its held-out 'rl' split, SFT duplicates removed, "
                                     "pass-rate rules against each base"}
        writer.json("sft_eval", sft_record)
        writer.records("pools", pool_rows)
        writer.records("curricula_history", [{"curriculum": r["name"], "base": r["base"], **h}
                                             for r in runs for h in r["history"]])
        writer.records("curricula_evals", [{"curriculum": r["name"], "base": r["base"], **e}
                                           for r in runs for e in r["evals"]])
        writer.records("curricula_stages", [{"curriculum": r["name"], "base": r["base"],
                                             **{k: v for k, v in s.items() if k != "pool_reports"}}
                                            for r in runs for s in r["stages"]])

        t0 = time.time()
        if exp.attack_suite:
            from falcon_h1r.sandbox import isolation_report
            from falcon_h1r.sections.rl_attacks import attack_training_step

            def attack() -> dict[str, Any]:  # on the last base loaded (the first one when none was needed)
                base = loaded.get("last") or load_base(seeds[0])
                return {**attack_training_step(fresh_copy(base.model, rl.trainer_dtype).to(device), tok, rl,
                                               device=device), "isolation": isolation_report(), "base": base.seed}

            attacks = unit(work / "attacks.json" if work else None, "the attack suite", attack)
            writer.records("attacks", attacks["rows"])
            writer.json("attacks_summary", {k: v for k, v in attacks.items() if k != "rows"})
        timings["attacks_s"] = time.time() - t0

        t0 = time.time()
        if exp.strategies_compared:
            rows, regimes = compare_strategies(pool_rows, rl, exp, progress=progress)
            writer.records("strategy_runs", rows)
            writer.json("strategy_regimes", regimes)
        timings["strategies_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_all
    if work is not None and (work / "unit_times").is_dir():  # every unit's wall time, whichever piece or process
        units = [read_json(f) for f in sorted((work / "unit_times").glob("*.json"))]
        timings["unit_wall_s"] = {u["unit"]: u["wall_s"] for u in units}
        timings["units_wall_s_sum"] = sum(u["wall_s"] for u in units)
    timings["process_cpu_s"] = time.process_time()  # this process's CPU time (sandbox processes not included)
    timings["reward_pool"] = {"graded": reward_pool.calls, "sandbox_runs": reward_pool.sandbox_runs}
    timings["device"] = str(device)
    writer.json("timings", timings)
    return timings


def _run_order(curricula: Sequence[str]) -> list[str]:
    """The curricula in an order where a run that reuses another's first stage comes right after it."""
    order = [c for c in CURRICULA if c in curricula]
    if "math_then_code" in order and "math_only" in order:
        order.remove("math_then_code")
        order.insert(order.index("math_only") + 1, "math_then_code")
    return order


__all__ = ["CURRICULA", "DOMAINS", "FrozenCopy", "Measurer", "PAPER_TABLE3_ROW", "PoolBuilder", "RLExperimentRecipe",
           "RunContext", "SECTION", "STRATEGIES_COMPARED", "compute_records", "eval_record", "heldout_problems",
           "heldout_report", "load_recipes", "measure_dir", "ours_label", "per_problem_rates", "run_curriculum",
           "strategy_recipe", "work_dir"]

