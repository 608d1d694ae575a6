"""Section 02's §2 ablation runs: every arm of every grid (:mod:`~falcon_h1r.sections.sft_ablation_recipes`)
fine-tunes the common start (:mod:`~falcon_h1r.sections.sft_ablation_data`) for the same number of steps with the
library's trainer (``falcon_h1r.sft.train_sft``) on its curated traces, then is evaluated on the same held-out
problems at the paper's sampling settings (``falcon_h1r.evaluation.evaluate_outcomes``; T and top-p from the
preset's ``generation`` block, paper §4.1). Unless ``sft_ablations.reference_lr_paper`` fixes the reference
arm's rate, the learning-rate grid runs first and its best arm sets the rate every other grid varies around (the
paper searched its rate first, then fixed it). Rows are appended to a JSONL work file as they finish, so an
interrupted sweep resumes where it stopped; ``python -m falcon_h1r.sections.sft_ablations`` computes them in
resumable chunks (``--workers N`` processes may share one GPU; ``--probe`` times one reference arm first).

Sizing the small grid for one H200 (``--probe`` measures a reference arm first): 56 distinct runs (16 of the
learning-rate grid, then 40). Measured at 4a5156b with the answers-only start (one H200, mamba-ssm and Liger, no
causal-conv1d): building the start (200 steps) took 134 s and the pools and pass rates ~90 s; with 4-6 workers
sharing the GPU a run trained 100 x 32 samples in 20-30 s and evaluated 270 held-out problems in 10-20 s, and 40
runs finished in ~400 s of wall time; a normalization run (4 simulated ranks, 4 curve evaluations) took ~100 s to
train, so its 10 runs are the grid's tail. At f37288b (the chat start): 800 start steps of ~400-token samples took
239 s, the start's evaluation ~50 s, the probe arm 45 s, and 8 workers finished 37 runs in 460 s. About 20
GPU-minutes in three device calls on one warm machine (``scripts/gpu_sft_grid.sh``); notebook 02 then renders
the exported records on any machine (``python -m falcon_h1r.sections.sft_ablation_export``).

The statistics and the report beside the paper are :mod:`falcon_h1r.sections.sft_findings`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from falcon_h1r.config import GenerationConfig, Preset, RecipeError, load_preset, parse_overrides, to_dict
from falcon_h1r.curation import mixture_sample
from falcon_h1r.env import seed_everything
from falcon_h1r.evaluation import evaluate_outcomes
from falcon_h1r.results import RESULTS_ROOT, read_json, section_dir
from falcon_h1r.sections.common import cached_json, get_tokenizer, recipe_hash, task_sets, torch_threads
from falcon_h1r.sections.sft_ablation_data import (ablation_problems, curate_pool, curation_recipe, get_start,
                                                   held_out_problems, pool_key, pool_records, problem_pass_rates,
                                                   start_key, teacher_pool)
from falcon_h1r.sections.sft_ablation_workers import start_workers, wait_for_workers
from falcon_h1r.sections.sft_ablation_recipes import (FLOOR_ACC, GRIDS, PAPER_SFT_LR, Arm, Grid, SFTAblations,
                                                      best_lr_paper, grid_runs, load_ablations, load_grid, load_grids,
                                                      reference_arm)
from falcon_h1r.sft import SFTRecipe, examples_from_traces, train_sft
from falcon_h1r.tasks import GENERATOR_VERSION
from falcon_h1r.tokenizer import ChatTokenizer

ROW_VERSION = 2  # bump when a row's meaning changes (2: the common start, sampled evaluation)
REFERENCE_TEACHER = "stepwise"  # whose verified pass rate measures a problem's difficulty


def load_trainer(preset: Preset) -> SFTRecipe:
    """The preset's ``sft:`` block (how the trainer runs)."""
    return preset.section("sft", SFTRecipe)


# ============================================================================== what every arm shares
@dataclass
class AblationContext:
    """The common start, tokenizer, problems, held-out sets and sizes every arm shares."""

    preset: Preset
    recipe: SFTAblations
    trainer: SFTRecipe
    start: torch.nn.Module
    start_info: dict[str, Any]
    tokenizer: ChatTokenizer
    problems: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    curve_heldout: list[dict[str, Any]]
    gen_cfg: GenerationConfig
    start_key: str
    run_key: str  # what shapes a row (the work file keeps rows of this key only)
    work_dir: Path
    max_rollouts: int = 12
    pools_needed: list[tuple[str, bool]] = field(default_factory=list)  # (teacher, incorrect) of the grids' arms
    _cache: dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, preset: Preset, work_dir: str | Path, *, root: Path = RESULTS_ROOT, max_rollouts: int = 12,
              progress: bool = True) -> "AblationContext":
        recipe, trainer = load_ablations(preset), load_trainer(preset)
        sets = task_sets(preset)
        tok = get_tokenizer(preset, sets, root)
        start, info = get_start(preset, recipe, trainer, tok, sets["train"], root=root, progress=progress)
        heldout = held_out_problems(sets["test"], preset, recipe, recipe.eval_per_domain)
        curve = held_out_problems(sets["test"], preset, recipe, recipe.curve_eval_per_domain or recipe.eval_per_domain)
        levels = {int(p["difficulty"]) for p in heldout}
        for name in ("hard_levels", "easy_levels"):
            if not levels & set(getattr(recipe, name)):
                raise RecipeError(f"sft_ablations.{name}: {getattr(recipe, name)} holds no held-out level of this "
                                  f"preset ({sorted(levels)})")
        g = preset.generation
        gen = replace(g, max_new_tokens=recipe.max_new_tokens or g.max_new_tokens,
                      batch_size=recipe.eval_batch_size or g.batch_size)
        exclude = {p["question"] for p in sets["test"]} | {p["question"] for p in sets["train"]}
        s_key = start_key(preset, recipe, trainer)
        shaping = {k: v for k, v in to_dict(recipe).items()
                   if k not in ("grids", "seeds", "grid_seeds", "cpu_threads", "workers", "eval_batch_size", "hard_levels",
                                "easy_levels", "start_corpus", "start_lr_decay")}  # both in s_key
        t = preset.train  # the base run's knobs an arm shares (its steps, batch and rate are the block's)
        run_key = recipe_hash(s_key, shaping, {"warmup_frac": t.warmup_frac, "weight_decay": t.weight_decay,
                                               "grad_clip": t.grad_clip, "max_seq_len": t.max_seq_len},
                              preset.model, to_dict(gen) | {"batch_size": 0}, trainer, curation_recipe(preset),
                              GENERATOR_VERSION, ROW_VERSION)
        return cls(preset, recipe, trainer, start, info, tok, ablation_problems(preset, recipe, exclude), heldout,
                   curve, gen, s_key, run_key, Path(work_dir), max_rollouts)

    @property
    def device(self) -> torch.device:
        return next(self.start.parameters()).device

    def threads(self) -> contextlib.AbstractContextManager[None]:
        """The recipe's torch thread count, when the runs are on the CPU."""
        return torch_threads(self.recipe.cpu_threads, self.device)

    # ---------------------------------------------------------------------------------------- evaluation
    def evaluate(self, model: torch.nn.Module, problems: Sequence[dict[str, Any]], seed: int) -> dict[str, Any]:
        """``eval_samples`` sampled responses per problem (``evaluation.evaluate_outcomes``): accuracy overall, by
        domain and by level, each problem's outcome (its fraction of correct samples, the unit the paired
        statistics pair on), and the output entropy over the generated tokens."""
        k = self.recipe.eval_samples
        t0 = time.time()
        res = evaluate_outcomes(model, self.tokenizer, [p for p in problems for _ in range(k)], self.gen_cfg, seed)
        raw = res["outcomes"]
        outcomes = [sum(raw[i * k:(i + 1) * k]) / k for i in range(len(problems))]
        out: dict[str, Any] = {"acc": sum(outcomes) / len(outcomes), "entropy": res["entropy"],
                               "mean_response_tokens": res["mean_response_tokens"], "outcomes": outcomes,
                               "outcome_ids": [p["id"] for p in problems],
                               "outcome_levels": [int(p["difficulty"]) for p in problems],
                               "outcome_domains": [p["domain"] for p in problems]}
        for key, values in (("domain", out["outcome_domains"]), ("level", out["outcome_levels"])):
            for v in sorted(set(values)):
                sel = [o for o, x in zip(outcomes, values) if x == v]
                out[f"acc_{v}" if key == "domain" else f"acc_level{v}"] = sum(sel) / len(sel)
        out["eval_wall_s"] = round(time.time() - t0, 3)
        return out

    def start_eval(self) -> dict[str, Any]:
        """The common start on the held-out set (every curve's step 0; the transfer axis' reference), computed
        once and kept in the work folder for every worker."""
        if "start_eval" not in self._cache:
            def compute() -> dict[str, Any]:
                with self.threads():
                    full = self.evaluate(self.start, self.heldout, 0)
                    curve = full if self.curve_heldout == self.heldout else self.evaluate(self.start,
                                                                                         self.curve_heldout, 0)
                return {**full, "curve": {"step": 0, **curve}}
            self._cache["start_eval"] = cached_json(self.work_dir / f"start_eval-{self.run_key}.json", compute)
        return self._cache["start_eval"]

    # ---------------------------------------------------------------------------------------- data
    def pass_rates(self) -> dict[str, float]:
        """Each ablation problem's verified pass rate under the reference teacher (cached in the work folder)."""
        if "pass_rates" not in self._cache:
            crec = curation_recipe(self.preset)
            key = pool_key(self.preset, self.recipe, crec, teacher=REFERENCE_TEACHER, incorrect=True,
                           rollouts=self.max_rollouts, held_out=[])

            def compute() -> dict[str, float]:
                pool = teacher_pool(self.problems, REFERENCE_TEACHER, self.max_rollouts, self.recipe, self.preset.seed)
                return problem_pass_rates(pool, crec)
            self._cache["pass_rates"] = cached_json(self.work_dir / f"pass_rates-{key}.json", compute)
        return self._cache["pass_rates"]

    def pool(self, teacher: str, incorrect: bool) -> dict[str, Any]:
        """The curated pool of one (teacher, incorrect) at the largest n any grid uses, cached in the work folder
        under a key of everything that shapes it (parallel workers read it instead of re-verifying)."""
        if (teacher, incorrect) not in self._cache:
            crec = curation_recipe(self.preset)
            questions = [p["question"] for p in self.heldout]
            key = pool_key(self.preset, self.recipe, crec, teacher=teacher, incorrect=incorrect,
                           rollouts=self.max_rollouts, held_out=questions)

            def compute() -> dict[str, Any]:
                pool = teacher_pool(self.problems, teacher, self.max_rollouts, self.recipe, self.preset.seed)
                return curate_pool(pool, self.tokenizer, crec, incorrect=incorrect, pass_rates=self.pass_rates(),
                                   eval_questions=questions, levels=self.preset.tasks.all_levels())
            self._cache[(teacher, incorrect)] = cached_json(
                self.work_dir / f"pool-{teacher}-{'incorrect' if incorrect else 'correct'}-{key}.json", compute)
        return self._cache[(teacher, incorrect)]

    def records(self, arm: Arm, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The arm's training samples: its pool's first ``arm.rollouts`` rollouts per problem (weights set to 1
        when weighting is off), ``steps x batch_size`` of them drawn to the arm's domain mixture (cycling when
        the pool is smaller, so every arm trains on the same number of samples)."""
        records = pool_records(self.pool(arm.teacher, arm.incorrect), arm.rollouts)
        if not arm.weighting:
            records = [{**r, "weight": 1.0} for r in records]
        mixture = {d: v for d, v in arm.mixture.items() if v > 0}
        records = [r for r in records if r["domain"] in mixture]
        n = self.recipe.steps * self.recipe.batch_size
        stats = {"kept": len(records), "kept_incorrect": sum(not r.get("correct", True) for r in records),
                 "problems_covered": len({r["id"] for r in records}),
                 "distinct_correct_traces": len({(r["id"], r["reasoning"], r["final"]) for r in records
                                                 if r.get("correct", True)}),
                 "hard_problems_covered": len({r["id"] for r in records if r.get("tier") == "hard"}),
                 "epochs": round(n / max(1, len(records)), 3)}
        return mixture_sample(records, mixture, n, seed), stats


# ============================================================================== one arm, one grid
def run_arm(ctx: AblationContext, arm: Arm, seed: int) -> dict[str, Any]:
    """Fine-tune a copy of the common start as ``arm`` says, then evaluate it; one result row."""
    with ctx.threads():
        return _run_arm(ctx, arm, seed)


def _run_arm(ctx: AblationContext, arm: Arm, seed: int) -> dict[str, Any]:
    r = ctx.recipe
    records, stats = ctx.records(arm, seed)
    examples = examples_from_traces(records, ctx.tokenizer, ctx.preset.train.max_seq_len)
    seed_everything(seed)
    model = copy.deepcopy(ctx.start)
    lr = r.lr_for(arm.lr_paper, ctx.preset.model.hidden_size)
    cfg = replace(ctx.preset.train, steps=r.steps, batch_size=r.batch_size, lr=lr,
                  eval_every=r.eval_every if arm.curve else 0, log_every=1)
    trainer = replace(ctx.trainer, loss_norm=arm.loss_norm, ranks=arm.ranks, shard=arm.shard, save_every=0)
    same_sets = ctx.curve_heldout == ctx.heldout

    def curve_point(step: int) -> dict[str, Any]:
        if step == cfg.steps and same_sets:
            return {}  # the final evaluation below is this point
        return ctx.evaluate(model, ctx.curve_heldout, seed)

    hist = train_sft(model, examples, cfg, pad_id=ctx.tokenizer.pad_id, seed=seed,
                     eval_fn=curve_point if arm.curve else None, progress=False, recipe=trainer)
    res = ctx.evaluate(model, ctx.heldout, seed)
    curve = []
    if arm.curve:
        points = [e if len(e) > 1 else {"step": e["step"], **res} for e in hist.evals]
        if not points or points[-1]["step"] != cfg.steps:  # the end of training is always a point
            points.append({"step": cfg.steps, **(res if same_sets else ctx.evaluate(model, ctx.curve_heldout, seed))})
        curve = [ctx.start_eval()["curve"]] + points
        curve = [{k: v for k, v in p.items() if k in ("step", "acc", "outcomes", "outcome_ids", "outcome_levels")}
                 for p in curve]
    skew = hist.rank_tokens_max_over_min
    if model.device.type == "cuda":
        from falcon_h1r.inference.engine_pool import free_engines
        free_engines(model)
    return {"arm": arm.name, "arm_key": arm.key(), "seed": seed, "run_key": ctx.run_key, "start_key": ctx.start_key,
            **asdict(arm), "lr": lr, **res, "train_loss_first": hist.loss[0], "train_loss_final": hist.loss[-1],
            "train_wall_s": round(hist.wall_s, 3), "train_tokens": hist.tokens, "input_tokens": hist.input_tokens,
            "train_tokens_per_s": round(hist.input_tokens / max(hist.wall_s, 1e-9), 1), "n_records": len(records),
            **{f"data_{k}": v for k, v in stats.items()}, "curve": curve,
            "loss_curve": {"step": hist.steps, "loss": hist.loss},
            "rank_tokens_max_over_min": [round(x, 4) for x in skew], "computed_on": dict(computed_on())}


@functools.cache
def computed_on() -> dict[str, Any]:
    """Where a row was computed (the commit and the device), so rows exported on another machine keep it."""
    from falcon_h1r.env import device_info, git_state

    dev = device_info()
    return {"commit": git_state().get("commit"), "device": dev.get("gpu_name") or dev.get("cpu_model"),
            "torch": torch.__version__}


def run_grid(ctx: AblationContext, grid: Grid, *, progress: bool = True,
             done: dict[tuple[str, int], dict[str, Any]] | None = None,
             deadline: float | None = None, only: set[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """Every (arm, seed) of ``grid``; rows already in the work file (same arm, seed and run key) are reused, new
    rows are appended to it as soon as they exist. Past ``deadline`` (a ``time.time()``) no new arm starts, and
    only the rows that exist are returned. With ``only`` (a set of ``(arm.key(), seed)``), runs outside it are not
    computed here (another worker's share)."""
    from tqdm.auto import tqdm

    work = ctx.work_dir / "ablation_rows.jsonl"
    done = done if done is not None else load_rows(work, ctx.run_key)
    rows = []
    bar = tqdm(grid.runs(), desc=f"SFT grid {grid.name}", disable=not progress, leave=False)
    try:
        for arm, seed in bar:
            key = (arm.key(), seed)
            if key not in done:
                if (deadline is not None and time.time() > deadline) or (only is not None and key not in only):
                    continue
                row = run_arm(ctx, arm, seed)
                append_row(work, row)
                done[key] = row
            rows.append({**done[key], "arm": arm.name, "grid": grid.name})
    finally:
        bar.close()
    return rows


# ============================================================================== the resumable work file
def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line with a single O_APPEND write, so that parallel workers never interleave lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(row, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def load_rows(path: str | Path, run_key: str | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """The work file's rows by ``(arm key, seed)``, only those of ``run_key`` when given."""
    path = Path(path)
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if run_key is None or row.get("run_key") == run_key:
                    out[(row["arm_key"], int(row["seed"]))] = row
    return out


def resolve_grids(preset: Preset, done: Mapping[tuple[str, int], dict[str, Any]]) -> tuple[list[Grid], float | None]:
    """The preset's grids around the reference rate, and that rate (paper convention): ``sft_ablations.
    reference_lr_paper``, or the learning_rate grid's best arm once every one of its runs is in ``done``; until
    then only the learning_rate grid and None."""
    block = load_ablations(preset)
    if block.reference_lr_paper or not block.grids:
        return load_grids(preset), block.reference_lr_paper or None
    best = best_lr_paper(load_grid("learning_rate", preset.name, block), done)
    return load_grids(preset, best), best


def _runs_done(ctx: AblationContext) -> dict[str, Any]:
    """How many of the grids' runs have a row in the work file (every worker's), and how many they need (the
    learning_rate grid's alone while the reference rate is not known)."""
    done = load_rows(ctx.work_dir / "ablation_rows.jsonl", ctx.run_key)
    grids, ref = resolve_grids(ctx.preset, done)
    need = set(grid_runs(grids))
    return {"done": len(need & set(done)), "needed": len(need), "reference_lr_paper": ref,
            "phase": "all grids" if ref is not None else "learning_rate grid (decides the reference rate)"}


# ============================================================================== a preset's whole sweep
def ablation_setup(preset: Preset, work_dir: Path, *, root: Path = RESULTS_ROOT,
                   progress: bool = True) -> AblationContext:
    """The context every arm shares (the common start, problems, held-out sets)."""
    shapes = load_grids(preset, PAPER_SFT_LR)  # which rollouts and pools the grids need (not their rates)
    ctx = AblationContext.build(preset, work_dir, root=root, progress=progress,
                                max_rollouts=max((a.rollouts for g in shapes for a in g.arms), default=1))
    ctx.pools_needed = list(dict.fromkeys((a.teacher, a.incorrect) for g in shapes for a in g.arms))
    return ctx


def prepare(ctx: AblationContext) -> None:
    """Everything the arms share, built once before any arm (or worker) needs it: the start's evaluation, the
    problems' pass rates and every (teacher, incorrect) pool the grids use."""
    ctx.start_eval()
    for teacher, incorrect in ctx.pools_needed:
        ctx.pool(teacher, incorrect)


def _run_share(ctx: AblationContext, grids: Sequence[Grid], done: dict, shard: tuple[int, int],
               deadline: float | None, progress: bool) -> None:
    i, n = shard
    only = set(grid_runs(list(grids))[i::n]) if n > 1 else None  # the same split in every worker, whatever is done
    for g in grids:
        run_grid(ctx, g, progress=progress, done=done, deadline=deadline, only=only)


def run_all(ctx: AblationContext, *, progress: bool = True, deadline: float | None = None,
            shard: tuple[int, int] = (0, 1), poll_s: float = 5.0,
            others_alive: Callable[[], bool] | None = None) -> tuple[list[Grid], list[dict[str, Any]]]:
    """Every run of the preset's grids this worker's ``shard`` holds, in two phases when the reference rate comes
    from the learning_rate grid: that grid first (then wait for the other workers' share of it), the other grids
    around its best rate after. Returns the grids (resolved, or the learning_rate grid alone when ``deadline``
    came first, or when ``others_alive`` says the workers holding the other shares have failed) and every row of
    them in the work file."""
    work = ctx.work_dir / "ablation_rows.jsonl"
    done = load_rows(work, ctx.run_key)
    grids, ref = resolve_grids(ctx.preset, done)
    if ref is None and grids:
        _run_share(ctx, grids, done, shard, deadline, progress)
        while True:
            done = load_rows(work, ctx.run_key)
            grids, ref = resolve_grids(ctx.preset, done)
            if ref is not None or (deadline is not None and time.time() > deadline):
                break
            if others_alive is not None and not others_alive():
                break
            time.sleep(poll_s)  # another worker is finishing its share of the learning_rate grid
    if ref is not None:
        _run_share(ctx, grids, done, shard, deadline, progress)
    return grids, grid_rows_in_order(grids, load_rows(work, ctx.run_key))


def grid_rows_in_order(grids: Sequence[Grid], done: Mapping[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``done`` the grids show, grid by grid and arm by arm, each named by its grid and arm (a run that
    several grids share appears once per grid): what notebook 02 records as ``ablation_rows.jsonl``."""
    return [{**done[(a.key(), s)], "arm": a.name, "grid": g.name} for g in grids for a, s in g.runs()
            if (a.key(), s) in done]


def start_record(ctx: AblationContext) -> dict[str, Any]:
    """The common start as notebook 02 records it (``ablation_start.json``): how it was trained, and its held-out
    evaluation under ``eval``, and the probe that gated the grid (``probe``: ``--probe``'s record for this start,
    when ``scripts/gpu_sft_grid.sh`` ran it)."""
    record = {**{k: v for k, v in ctx.start_info.items() if k != "recipe"}, "eval": ctx.start_eval()}
    probe = ctx.work_dir / f"probe-{ctx.start_info.get('key')}.json"
    if probe.exists():
        record["probe"] = read_json(probe)
    return record


def _preset_context(preset_name: str, overrides: dict[str, Any] | None, progress: bool,
                    root: Path = RESULTS_ROOT) -> AblationContext:
    preset = load_preset(preset_name, overrides)
    return ablation_setup(preset, section_dir(preset_name, "02_sft", root) / "_work", root=root, progress=progress)


def run_ablations(preset_name: str, overrides: dict[str, Any] | None = None, *, budget_s: float | None = None,
                  progress: bool = True, shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Compute the preset's ablation rows into the section's work file, starting no run after ``budget_s`` (rows
    are kept; run again to continue). The notebook then renders them without recomputing. ``shard=(i, n)``
    computes only every n-th run from i (see :func:`main`'s ``--workers``). Returns how many (arm, seed) runs are
    done and how many the grids need."""
    t0 = time.time()
    ctx = _preset_context(preset_name, overrides, progress)
    prepare(ctx)
    run_all(ctx, progress=progress, deadline=t0 + budget_s if budget_s else None, shard=shard)
    return {**_runs_done(ctx), "wall_s": round(time.time() - t0, 1)}


def run_ablations_parallel(preset_name: str, overrides: dict[str, Any] | None, *, workers: int,
                           budget_s: float | None) -> dict[str, Any]:
    """The grid split over ``workers`` processes that time-share one device: a ~6M-parameter model's step leaves
    much of a GPU idle (launches, Python, the sandbox grading the held-out code), which another process fills.
    The common start, its evaluation and the curated pools are built here first; each worker then computes its
    share (``--shard i/n``) into the shared work file."""
    t0 = time.time()
    ctx = _preset_context(preset_name, overrides, True)
    prepare(ctx)
    budget = None if budget_s is None else max(1.0, budget_s - (time.time() - t0))
    wait_for_workers(start_workers(preset_name, overrides, range(workers), workers, budget_s=budget))
    return {**_runs_done(ctx), "wall_s": round(time.time() - t0, 1), "workers": workers}


def probe(preset_name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time one reference arm (seed 0, with its curve) before the whole grid: the start, a run's training
    throughput and evaluation time, what the arm learns by level, and how hard its first steps kick the start
    (``loss_shock``). The arm runs at ``sft_ablations.reference_lr_paper`` when set, else at the learning-rate
    grid's lowest rate (the gentlest arm: if it sits at the floor, or undoes the start, every arm will). Nothing is
    written to the work file."""
    t0 = time.time()
    ctx = _preset_context(preset_name, overrides, True)
    t_setup = time.time() - t0
    start_eval = ctx.start_eval()
    t1 = time.time()
    lr_paper = ctx.recipe.reference_lr_paper or min(a.lr_paper for a in load_grid("learning_rate", preset_name,
                                                                                   ctx.recipe).arms)
    row = run_arm(ctx, replace(reference_arm("probe", lr_paper), curve=True), 0)
    runs = len(grid_runs(load_grids(ctx.preset, PAPER_SFT_LR)))
    per_run = row["train_wall_s"] + row["eval_wall_s"]
    shock = loss_shock(row.get("loss_curve", {}).get("loss", []))
    return {"preset": preset_name, "device": str(ctx.device), "setup_s": round(t_setup, 1), "lr": row["lr"],
            "lr_paper": lr_paper, "start_train_s": ctx.start_info.get("train_wall_s"), "start_acc": start_eval["acc"],
            "start_lr_decay": ctx.recipe.start_lr_decay, "start_loss_last": ctx.start_info.get("loss_last"),
            "loss_shock": shock, "probe_wall_s": round(time.time() - t1, 1), "train_wall_s": row["train_wall_s"],
            "train_tokens_per_s": row["train_tokens_per_s"], "eval_wall_s": row["eval_wall_s"],
            "acc": row["acc"], **{k: v for k, v in row.items() if k.startswith("acc_")},
            "curve": [(p["step"], round(p["acc"], 3)) for p in row["curve"]],
            "runs_needed": runs, "one_worker_grid_estimate_s": round(runs * per_run),
            "start_corpus": ctx.recipe.start_corpus, "verdict": probe_verdict(row["acc"], start_acc=start_eval["acc"])}


def loss_shock(losses: Sequence[float], head: float = 0.2) -> float | None:
    """How far an arm's first steps throw the start off: the highest finite training loss in the first ``head`` of
    the run over the first one; None without a positive finite loss there. About 1 when the arm simply continues
    the start; the annealed chat start at small gave 3.0 at the lowest rate (f37288b, mean over its 5 seeds)."""
    xs = [float(x) for x in losses[:max(2, int(len(losses) * head))] if x is not None and math.isfinite(float(x))]
    if not xs or xs[0] <= 0:
        return None
    return round(max(xs) / xs[0], 3)


def probe_verdict(acc: float, who: str = "the reference arm", start_acc: float | None = None) -> str:
    """Whether the reference arm leaves room for the grid's effects: ``floor`` below :data:`FLOOR_ACC` (every
    comparison would be noise at zero, as with the answers-only start at small), ``ceiling`` above 1 - FLOOR_ACC,
    ``regress`` when it ends more than FLOOR_ACC below the start it was fine-tuned from (the arms would measure how
    much fine-tuning undoes the start, the old testbed's fault, issue 15), else ``ok``. Run the grid on ``ok``
    only; otherwise change the start or the arms' steps first."""
    if acc < FLOOR_ACC:
        return f"floor: {who} scores {acc:.3f} < {FLOOR_ACC}; lengthen the start or the arms' steps"
    if acc > 1 - FLOOR_ACC:
        return f"ceiling: {who} scores {acc:.3f} > {1 - FLOOR_ACC}; use harder levels"
    if start_acc is not None and acc < start_acc - FLOOR_ACC:
        return (f"regress: {who} scores {acc:.3f}, below the start's {start_acc:.3f}; the arms undo the start "
                f"(see loss_shock; sft_ablations.start_lr_decay)")
    return "ok"


def _mean_or_none(xs: Sequence[float | None]) -> float | None:
    ys = [x for x in xs if x is not None]
    return round(sum(ys) / len(ys), 3) if ys else None


def sweep_report(work_dir: str | Path) -> dict[str, Any]:
    """What a work folder's rows say so far, finished or not, without a model or a GPU: per arm its seeds, mean and
    largest held-out pass@1, mean final training loss and how many runs diverged (a loss that is not finite), the
    start's evaluation, and the probe verdict on the best arm. The record that showed the answers-only start's
    floor (``results/small/02_sft/ablation_floor_probe.json``) is this function's output."""
    work = Path(work_dir)
    rows = list(load_rows(work / "ablation_rows.jsonl").values())
    if not rows:
        raise RecipeError(f"{work}: no ablation_rows.jsonl rows to report (accepted: a section 02 _work folder)")
    arms: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        arms.setdefault((r["name"], r["lr_paper"]), []).append(r)

    def finite(xs: list[float]) -> list[float]:
        return [x for x in xs if x is not None and math.isfinite(x)]

    table = []
    for (name, lr_paper), rs in arms.items():
        losses, ents = finite([r.get("train_loss_final") for r in rs]), finite([r.get("entropy") for r in rs])
        table.append({"arm": name, "lr_paper": lr_paper, "lr": rs[0]["lr"], "seeds": sorted(int(r["seed"]) for r in rs),
                      "acc_mean": round(sum(r["acc"] for r in rs) / len(rs), 4), "acc_max": round(max(r["acc"] for r in rs), 4),
                      "train_loss_final_mean": round(sum(losses) / len(losses), 4) if losses else None,
                      "diverged_runs": len(rs) - len(losses),
                      "loss_shock_mean": _mean_or_none([loss_shock(r.get("loss_curve", {}).get("loss", []))
                                                        for r in rs]),
                      "entropy_mean": round(sum(ents) / len(ents), 4) if ents else None,
                      "mean_response_tokens": round(sum(r["mean_response_tokens"] for r in rs) / len(rs), 1)})
    # the start the rows were fine-tuned from (a work folder may hold earlier starts' evaluations too)
    run_keys = [r.get("run_key") for r in rows]
    run_key = max(set(run_keys), key=run_keys.count)
    path = work / f"start_eval-{run_key}.json"
    start_eval = json.loads(path.read_text()) if path.exists() else {}
    best = max(table, key=lambda t: t["acc_mean"])
    return {"runs": len(rows), "arms": table, "diverged_runs": sum(t["diverged_runs"] for t in table),
            "acc_mean_max": best["acc_mean"], "acc_mean_max_arm": best["arm"],
            "start_acc": start_eval.get("acc"), "start_mean_response_tokens": start_eval.get("mean_response_tokens"),
            "start_keys": sorted({r.get("start_key") for r in rows}),
            "verdict": probe_verdict(best["acc_mean"], f"the best arm ({best['arm']})", start_acc=start_eval.get("acc"))}


def main(argv: list[str] | None = None) -> int:
    """``python -m falcon_h1r.sections.sft_ablations --preset small --workers 3 --budget-s 540``: compute ablation rows
    in resumable chunks (each call stops starting runs after its budget; run it until it reports all rows done,
    then run the notebook). ``--probe`` times one reference arm first."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting new runs after this many seconds")
    ap.add_argument("--override", action="append", default=[], help="preset override key=value (YAML value)")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the device, each taking a share of "
                    "the runs (a small model leaves a GPU mostly idle)")
    ap.add_argument("--shard", default="0/1", help="i/n: compute only every n-th missing run from i (set by --workers)")
    ap.add_argument("--probe", action="store_true", help="time one reference arm (seed 0) and print what it learnt")
    ap.add_argument("--report", default=None, metavar="WORK_DIR", help="print what a work folder's rows say so far "
                    "(per arm: pass@1, final loss, diverged runs; the verdict) and exit; no model, no GPU")
    args = ap.parse_args(argv)
    if args.report is not None:
        try:
            print(json.dumps(sweep_report(args.report), indent=1))
        except RecipeError as exc:
            print(f"sft_ablations: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        shard = tuple(int(x) for x in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        ap.error(f"--shard {args.shard!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    if args.workers < 1:
        ap.error(f"--workers {args.workers}: expected a count of 1 or more")
    try:
        overrides = parse_overrides(args.override)
        load_grids(load_preset(args.preset, overrides))  # the preset, its blocks and grids, before any work
        if args.probe:
            print(json.dumps(probe(args.preset, overrides)))
            return 0
        if args.workers > 1:
            res = run_ablations_parallel(args.preset, overrides, workers=args.workers, budget_s=args.budget_s)
        else:
            res = run_ablations(args.preset, overrides, budget_s=args.budget_s, shard=shard)
    except RecipeError as exc:
        print(f"sft_ablations: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"preset": args.preset, **res}))
    return 0 if res["done"] == res["needed"] else 3


__all__ = ["AblationContext", "Arm", "GRIDS", "Grid", "REFERENCE_TEACHER", "ROW_VERSION", "SFTAblations",
           "ablation_setup", "append_row", "computed_on", "grid_rows_in_order", "grid_runs", "load_ablations", "load_grid", "load_grids", "load_rows",
           "load_trainer", "loss_shock", "main", "prepare", "probe", "probe_verdict", "reference_arm", "resolve_grids", "run_ablations", "start_record",
           "run_ablations_parallel", "run_all", "run_arm", "run_grid", "sweep_report"]


if __name__ == "__main__":
    raise SystemExit(main())
