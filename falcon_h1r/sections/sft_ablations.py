"""Section 02's §2 ablations: each recipe grid in ``recipes/sft/*.yaml`` fine-tunes the preset's SFT base model
once per arm and seed with the library's trainer (``falcon_h1r.sft.train_sft``) on traces curated by the
library's curation (``falcon_h1r.curation.curate_sft_records``), then evaluates it on held-out problems
(``falcon_h1r.evaluation.evaluate_outcomes``). Rows are appended to a JSONL work file as they finish, so an
interrupted sweep resumes where it stopped; ``python -m falcon_h1r.sections.sft_ablations`` computes them in
resumable chunks (several workers may share one device).

How large the ablations are at a preset is the ``sft_ablations:`` block (:class:`SFTAblations`); how the
trainer runs is the ``sft:`` block (``falcon_h1r.sft.SFTRecipe``). The statistics and the report beside the
paper are :mod:`falcon_h1r.sections.sft_findings`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from falcon_h1r.config import GenerationConfig, Preset, RecipeError, load_preset, load_recipe_grid, parse
from falcon_h1r.curation import curate_sft_records, mixture_sample
from falcon_h1r.env import seed_everything
from falcon_h1r.evaluation import evaluate_outcomes
from falcon_h1r.inference import greedy
from falcon_h1r.results import RESULTS_ROOT, section_dir
from falcon_h1r.sections.common import BaseModel, cached_json, first_per_domain, get_base_model, torch_threads
from falcon_h1r.sections.curation import load_recipe as curation_recipe
from falcon_h1r.sft import SFTRecipe, examples_from_traces, train_sft
from falcon_h1r.tasks import TeacherNoise, generate_split, teacher_records
from falcon_h1r.tokenizer import ChatTokenizer

GRIDS = ("learning_rate", "rollouts", "incorrect", "teachers", "weighting", "mixture", "normalization")


# ============================================================================== the experiment's recipe
@dataclass
class SFTAblations:
    """The ``sft_ablations:`` block: how large the §2 ablations are at a preset. The paper prints no grid
    sizes (its ablations are full SFT runs, the learning rate searched on a 10 % subset, paper §2); every
    size here is ours, chosen so the grids fit the preset's machine."""

    grids: list[str] = field(default_factory=lambda: list(GRIDS))  # recipes/sft/<grid>.yaml to run (paper §2 axes)
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # seeds per arm (intervals pair by seed and problem)
    steps: int = 30  # fine-tuning steps per arm, from the base model
    batch_size: int = 16  # samples per step (paper Table 1: 512 for the full SFT)
    lr: float = 1e-3  # the reference arm's learning rate; the LR grid scales it (paper's best: 1024e-6, µP)
    problems_per_domain: int = 40  # fresh problems (not the base model's) the arms fine-tune on
    eval_per_domain: int = 10  # held-out problems per domain each arm is evaluated on (greedy)
    max_new_tokens: int = 0  # 0: generation.max_new_tokens
    eval_every: int = 10  # the normalization curve's evaluation interval (paper Fig. 4: over 3,750 steps)
    # wrong-answer rate of the ablation teacher at difficulty 1, 2, 3 (ours: makes pass rates fall with difficulty)
    teacher_wrong_rate: list[float] = field(default_factory=lambda: [0.05, 0.2, 0.5])
    cpu_threads: int = 0  # torch threads for the runs on CPU (0: leave as is); tiny models run best on 1

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "problems_per_domain", "eval_per_domain"):
            if getattr(self, name) < 1:
                raise RecipeError(f"sft_ablations.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("max_new_tokens", "eval_every", "cpu_threads"):
            if getattr(self, name) < 0:
                raise RecipeError(f"sft_ablations.{name}: must be >= 0, got {getattr(self, name)}")
        bad = [g for g in self.grids if g not in GRIDS]
        if bad:
            raise RecipeError(f"sft_ablations.grids: {bad[0]!r} not accepted; grids are {', '.join(GRIDS)}")
        if len(self.teacher_wrong_rate) != 3 or not all(0 <= r <= 1 for r in self.teacher_wrong_rate):
            raise RecipeError(f"sft_ablations.teacher_wrong_rate: three rates in [0, 1] (difficulty 1, 2, 3), "
                              f"got {self.teacher_wrong_rate}")
        if not self.seeds:
            raise RecipeError("sft_ablations.seeds: at least one seed")


def load_ablations(preset: Preset) -> SFTAblations:
    """The preset's ``sft_ablations:`` block."""
    return preset.section("sft_ablations", SFTAblations)


def load_trainer(preset: Preset) -> SFTRecipe:
    """The preset's ``sft:`` block (how the trainer runs)."""
    return preset.section("sft", SFTRecipe)


# ============================================================================== arms and grids
@dataclass
class Arm:
    """One fine-tuning configuration of an ablation grid (fields not set take the reference values)."""

    name: str = "reference"
    lr_scale: float = 1.0
    rollouts: int = 4  # teacher rollouts per problem (paper: n in {4, 8, 12})
    incorrect: bool = False  # keep wrong traces of the hardest problems (paper §2.1)
    teacher: Literal["stepwise", "terse", "mixed"] = "stepwise"  # one teacher style, or both mixed
    weighting: bool = True  # difficulty-aware weights (hard x1.25-1.75, easy x0.5) vs all 1
    mixture: dict[str, float] = field(default_factory=lambda: {"math": 1.0, "code": 1.0, "science": 1.0})
    loss_norm: Literal["sequence", "rank_token", "balanced"] = "balanced"
    ranks: int = 1
    shard: Literal["contiguous", "by_length", "random"] = "contiguous"
    curve: bool = False  # evaluate every sft_ablations.eval_every steps (the normalization curve)

    def key(self) -> str:
        """Identifies the training run (the name is a label only), so grids share identical arms."""
        d = asdict(self)
        d.pop("name")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Grid:
    name: str
    axis: str  # row of papers/sft_ablation_findings.csv
    question: str
    arms: list[Arm]
    compare: list[str] = field(default_factory=list)  # [arm A, arm B]: the headline difference is A - B


def load_grid(name: str, preset_name: str = "tiny") -> Grid:
    """``recipes/sft/<name>.yaml``: arms over the reference arm (``recipes/sft/reference.yaml``, plus
    the grid's own ``reference:`` overrides); an arm may list the ``presets`` it runs at."""
    if name not in GRIDS:
        raise RecipeError(f"unknown SFT grid {name!r}; grids are {', '.join(GRIDS)}")
    raw = load_recipe_grid(f"sft/{name}.yaml")
    unknown = sorted(set(raw) - {"axis", "question", "reference", "arms", "compare"})
    if unknown:
        raise RecipeError(f"sft/{name}.yaml: unknown key {unknown[0]!r}; accepted: axis, question, reference, "
                          "arms, compare")
    ref = {**load_recipe_grid("sft/reference.yaml"), **raw.get("reference", {})}
    arms = []
    for i, a in enumerate(raw.get("arms", [])):
        a = dict(a)
        presets = a.pop("presets", None)
        if presets is not None and preset_name not in presets:
            continue
        arms.append(parse(Arm, {**ref, **a}, f"sft/{name}.yaml arms[{i}]"))
    if not arms:
        raise RecipeError(f"sft/{name}.yaml: no arm runs at preset {preset_name!r}")
    names = [a.name for a in arms]
    for c in raw.get("compare", []):
        if c not in names:
            raise RecipeError(f"sft/{name}.yaml: compare names {c!r}, which is not an arm at preset "
                              f"{preset_name!r} ({', '.join(names)})")
    return Grid(name, raw.get("axis", name), raw.get("question", ""), arms, list(raw.get("compare", [])))


# ============================================================================== the arms' data
def ablation_problems(preset: Preset, recipe: SFTAblations, test_questions: Sequence[str]) -> list[dict[str, Any]]:
    """Fresh problems for the ablation fine-tunes (split "sft_ablation"), never a test question."""
    t = preset.tasks
    return generate_split(t.domains, t.difficulties, recipe.problems_per_domain, "sft_ablation",
                          preset.seed, exclude_questions=set(test_questions))


def ablation_pool(problems: Sequence[dict[str, Any]], recipe: SFTAblations, teacher: str, rollouts: int,
                  seed: int) -> list[dict[str, Any]]:
    """``rollouts`` teacher traces per problem from a teacher whose wrong-answer rate grows with the
    problem's difficulty (``sft_ablations.teacher_wrong_rate``), so pass rates fall with difficulty."""
    out = []
    for level, rate in zip((1, 2, 3), recipe.teacher_wrong_rate):
        probs = [p for p in problems if p["difficulty"] == level]
        if probs:
            out += teacher_records(probs, teacher, seed * 31 + level, rollouts=rollouts,
                                   noise=TeacherNoise(wrong_answer=rate))
    return out


def curate_arm(pool: Sequence[dict[str, Any]], tokenizer: ChatTokenizer, preset: Preset, arm: Arm,
               eval_questions: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Filter, verify and weight an arm's pool with ``falcon_h1r.curation`` (incorrect traces of the
    hardest problems kept when the arm says so; weights set to 1 when weighting is off)."""
    crec = replace(curation_recipe(preset), keep_incorrect_hard=arm.incorrect)
    cur = curate_sft_records(pool, tokenizer, crec, eval_questions=eval_questions,
                             levels=preset.tasks.all_levels())
    records = cur.records
    if not arm.weighting:
        records = [{**r, "weight": 1.0} for r in records]
    stats = {"pool": len(pool), "kept": len(records), "kept_incorrect": sum(not r.get("correct", True) for r in records),
             "dropped": dict(cur.dropped_by_rule())}
    return records, stats


@dataclass
class AblationContext:
    """What every arm shares: the base model, tokenizer, problems, held-out set and sizes."""

    preset: Preset
    recipe: SFTAblations
    trainer: SFTRecipe
    base: torch.nn.Module
    tokenizer: ChatTokenizer
    problems: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    gen_cfg: GenerationConfig
    base_key: str
    work_dir: Path
    max_rollouts: int = 12
    _pools: dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, preset: Preset, base: BaseModel, work_dir: str | Path, max_rollouts: int = 12) -> "AblationContext":
        recipe = load_ablations(preset)
        heldout = first_per_domain(base.sets["test"], recipe.eval_per_domain)
        gen = greedy(replace(preset.generation, max_new_tokens=recipe.max_new_tokens
                             or preset.generation.max_new_tokens))
        key = str(base.info.get("recipe_hash", "")) or hashlib.sha256(str(base.path).encode()).hexdigest()[:12]
        test_q = [p["question"] for p in base.sets["test"]]
        return cls(preset, recipe, load_trainer(preset), base.model, base.tokenizer,
                   ablation_problems(preset, recipe, test_q), heldout, gen, key, Path(work_dir), max_rollouts)

    def threads(self) -> contextlib.AbstractContextManager[None]:
        """The recipe's torch thread count, when the base model is on the CPU."""
        return torch_threads(self.recipe.cpu_threads, next(self.base.parameters()).device)

    def base_eval(self) -> dict[str, Any]:
        """The base model on the held-out set (step 0 of every curve), computed once."""
        if "base" not in self._pools:
            with self.threads():
                self._pools["base"] = evaluate_outcomes(self.base, self.tokenizer, self.heldout, self.gen_cfg, 0)
        return self._pools["base"]

    def curated_pool(self, arm: Arm) -> list[dict[str, Any]]:
        """The curated pool of the arm's (teacher, incorrect), cached in the work folder: verifying thousands
        of code traces costs minutes of CPU, and parallel workers (``--workers``) would each redo it."""
        path = self.work_dir / f"pool-{arm.teacher}-{'incorrect' if arm.incorrect else 'correct'}-n{self.max_rollouts}" \
                               f"-{self.base_key}-s{self.preset.seed}.json"

        def compute() -> list[dict[str, Any]]:
            pool = ablation_pool(self.problems, self.recipe, arm.teacher, self.max_rollouts, self.preset.seed)
            return curate_arm(pool, self.tokenizer, self.preset, replace(arm, weighting=True),
                              [p["question"] for p in self.heldout])[0]

        return cached_json(path, compute)

    def records(self, arm: Arm, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The arm's curated training records, drawn to the arm's domain mixture.

        One pool per (teacher, incorrect) is generated at the largest n any grid uses and curated
        once; an arm with n rollouts keeps each problem's first n of them (the same distribution as
        drawing n), and weighting off sets every weight to 1.
        """
        k = (arm.teacher, arm.incorrect)
        if k not in self._pools:
            self._pools[k] = self.curated_pool(arm)
        records = [r for r in self._pools[k] if r["rollout"] < arm.rollouts]
        if not arm.weighting:
            records = [{**r, "weight": 1.0} for r in records]
        stats = {"kept": len(records), "kept_incorrect": sum(not r.get("correct", True) for r in records),
                 "problems_covered": len({r["id"] for r in records}),
                 "pool": len(self.problems) * arm.rollouts}
        n = self.recipe.steps * self.recipe.batch_size
        return mixture_sample(records, arm.mixture, min(n, len(records)), seed), stats


# ============================================================================== one arm, one grid
def run_arm(ctx: AblationContext, arm: Arm, seed: int) -> dict[str, Any]:
    """Fine-tune a copy of the base model as ``arm`` says, then evaluate it; one result row."""
    with ctx.threads():
        return _run_arm(ctx, arm, seed)


def _run_arm(ctx: AblationContext, arm: Arm, seed: int) -> dict[str, Any]:
    r = ctx.recipe
    records, stats = ctx.records(arm, seed)
    examples = examples_from_traces(records, ctx.tokenizer, ctx.preset.train.max_seq_len)
    seed_everything(seed)
    model = copy.deepcopy(ctx.base).float()
    cfg = replace(ctx.preset.train, steps=r.steps, batch_size=r.batch_size, lr=r.lr * arm.lr_scale,
                  eval_every=r.eval_every if arm.curve else 0, log_every=max(1, r.steps // 10))
    trainer = replace(ctx.trainer, loss_norm=arm.loss_norm, ranks=arm.ranks, shard=arm.shard, save_every=0)

    def curve_point(step: int) -> dict[str, Any]:
        if step == cfg.steps:
            return {"acc": None}  # filled from the final evaluation below
        return {"acc": evaluate_outcomes(model, ctx.tokenizer, ctx.heldout, ctx.gen_cfg, seed)["acc"]}

    hist = train_sft(model, examples, cfg, pad_id=ctx.tokenizer.pad_id, seed=seed,
                     eval_fn=curve_point if arm.curve else None, progress=False,
                     recipe=trainer)
    res = evaluate_outcomes(model, ctx.tokenizer, ctx.heldout, ctx.gen_cfg, seed)
    for e in hist.evals:
        if e["acc"] is None:
            e["acc"] = res["acc"]
    return {"arm": arm.name, "arm_key": arm.key(), "seed": seed, "base_key": ctx.base_key, **asdict(arm),
            **res, "train_loss_final": hist.loss[-1], "train_wall_s": round(hist.wall_s, 3),
            "train_tokens": hist.tokens, "n_records": len(records), **{f"data_{k}": v for k, v in stats.items()},
            "curve": hist.evals, "loss_curve": {"step": hist.steps, "loss": hist.loss}}


def run_grid(ctx: AblationContext, grid: Grid, *, progress: bool = True,
             done: dict[tuple[str, int], dict[str, Any]] | None = None,
             deadline: float | None = None, only: set[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """Every arm of ``grid`` at every seed; rows already in the work file (same arm, seed and base) are
    reused, new rows are appended to it as soon as they exist. Past ``deadline`` (a ``time.time()``)
    no new arm starts, and only the rows that exist are returned. With ``only`` (a set of
    ``(arm.key(), seed)``), runs outside it are not computed here (another worker's share)."""
    from tqdm.auto import tqdm

    work = ctx.work_dir / "ablation_rows.jsonl"
    done = done if done is not None else load_rows(work, ctx.base_key)
    todo = [(a, s) for a in grid.arms for s in ctx.recipe.seeds]
    rows = []
    bar = tqdm(todo, desc=f"SFT grid {grid.name}", disable=not progress, leave=False)
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


def load_rows(path: str | Path, base_key: str | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """The work file's rows by ``(arm key, seed)``, only those of the base model ``base_key`` when given."""
    path = Path(path)
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if base_key is None or row.get("base_key") == base_key:
                    out[(row["arm_key"], int(row["seed"]))] = row
    return out


def grid_runs(grids: Sequence[Grid], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """Every distinct ``(arm.key(), seed)`` the grids need, in a fixed order (the reference arm that several
    grids share is one run)."""
    return list(dict.fromkeys((a.key(), s) for g in grids for a in g.arms for s in seeds))


def _runs_done(ctx: AblationContext, grids: Sequence[Grid], seeds: Sequence[int]) -> dict[str, int]:
    """How many of the grids' runs have a row in the work file (every worker's), and how many they need."""
    need = set(grid_runs(grids, seeds))
    done = load_rows(ctx.work_dir / "ablation_rows.jsonl", ctx.base_key)
    return {"done": len(need & set(done)), "needed": len(need)}


# ============================================================================== a preset's whole sweep
def ablation_setup(preset: Preset, base: BaseModel, work_dir: Path) -> tuple[list[Grid], AblationContext]:
    """The preset's grids and the context their arms share (base model, problems, held-out set)."""
    grids = [load_grid(g, preset.name) for g in load_ablations(preset).grids]
    ctx = AblationContext.build(preset, base, work_dir,
                                max_rollouts=max((a.rollouts for g in grids for a in g.arms), default=1))
    return grids, ctx


def _preset_setup(preset_name: str, overrides: dict[str, Any] | None, progress: bool,
                  root: Path = RESULTS_ROOT) -> tuple[SFTAblations, list[Grid], AblationContext]:
    preset = load_preset(preset_name, overrides)
    base = get_base_model(preset, root=root, progress=progress)
    grids, ctx = ablation_setup(preset, base, section_dir(preset_name, "02_sft", root) / "_work")
    return ctx.recipe, grids, ctx


def run_ablations(preset_name: str, overrides: dict[str, Any] | None = None, *, budget_s: float | None = None,
                  progress: bool = True, shard: tuple[int, int] = (0, 1)) -> dict[str, int]:
    """Compute the preset's ablation rows into the section's work file, stopping before ``budget_s`` runs
    out (rows are kept; run again to continue). The notebook then renders them without recomputing.
    ``shard=(i, n)`` computes only every n-th missing run starting at i (see :func:`main`'s ``--workers``).
    Returns how many (arm, seed) runs are done and how many the grids need."""
    t0 = time.time()
    recipe, grids, ctx = _preset_setup(preset_name, overrides, progress)
    deadline = t0 + budget_s if budget_s else None
    work = ctx.work_dir / "ablation_rows.jsonl"
    done = load_rows(work, ctx.base_key)
    i, n = shard
    missing = [k for k in grid_runs(grids, recipe.seeds) if k not in done]
    only = set(missing[i::n]) if n > 1 else None
    for g in grids:
        run_grid(ctx, g, progress=progress, done=done, deadline=deadline, only=only)
    return {**_runs_done(ctx, grids, recipe.seeds), "wall_s": round(time.time() - t0, 1)}


def run_ablations_parallel(preset_name: str, overrides: dict[str, Any] | None, *, workers: int,
                           budget_s: float | None) -> dict[str, int]:
    """The grid split over ``workers`` processes that time-share one device. A ~6M-parameter model's step
    is mostly Python and kernel-launch time, so a second process fills the GPU's idle gaps (on an H100,
    2 workers ran 20 runs in 535 s beside an RL job; 4 workers beside RL and the engine check were slower
    per run). The base model is trained (or read from its cache) and the curated pools are built here
    first; each worker then computes its share (``--shard i/n``) into the shared work file."""
    import subprocess

    t0 = time.time()
    recipe, grids, ctx = _preset_setup(preset_name, overrides, True)
    for arm in {(a.teacher, a.incorrect): a for g in grids for a in g.arms}.values():
        ctx.curated_pool(arm)  # once, here, before the workers read it
    extra = [a for k, v in (overrides or {}).items() for a in ("--override", f"{k}={json.dumps(v)}")]
    budget = [] if budget_s is None else ["--budget-s", str(max(1.0, budget_s - (time.time() - t0)))]
    cli = [sys.executable, "-m", "falcon_h1r.sections.sft_ablations", "--preset", preset_name]
    procs = [subprocess.Popen([*cli, "--shard", f"{i}/{workers}", *budget, *extra]) for i in range(workers)]
    codes = [p.wait() for p in procs]
    bad = [c for c in codes if c not in (0, 3)]
    if bad:
        raise RuntimeError(f"SFT ablation workers exited with codes {codes} (0: all done, 3: budget reached)")
    # Count the workers' rows; no run is started here (a worker that stopped on its budget leaves runs missing).
    return {**_runs_done(ctx, grids, recipe.seeds), "wall_s": round(time.time() - t0, 1), "workers": workers}


def main(argv: list[str] | None = None) -> int:
    """``python -m falcon_h1r.sections.sft_ablations --preset small --budget-s 540``: compute ablation rows in
    resumable chunks (each call stops before its budget; run it until it reports all rows done, then run the
    notebook)."""
    import argparse

    import yaml

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting new runs after this many seconds")
    ap.add_argument("--override", action="append", default=[], help="preset override key=value (YAML value)")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the device, each taking a share of "
                    "the runs (a small model leaves a GPU mostly idle)")
    ap.add_argument("--shard", default="0/1", help="i/n: compute only every n-th missing run from i (set by --workers)")
    args = ap.parse_args(argv)
    try:
        shard = tuple(int(x) for x in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        ap.error(f"--shard {args.shard!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    if args.workers < 1:
        ap.error(f"--workers {args.workers}: expected a count of 1 or more")
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.override)}
    if args.workers > 1:
        res = run_ablations_parallel(args.preset, overrides, workers=args.workers, budget_s=args.budget_s)
    else:
        res = run_ablations(args.preset, overrides, budget_s=args.budget_s, shard=shard)
    print(json.dumps({"preset": args.preset, **res}))
    return 0 if res["done"] == res["needed"] else 3


__all__ = ["AblationContext", "Arm", "GRIDS", "Grid", "SFTAblations", "ablation_pool", "ablation_problems",
           "ablation_setup", "append_row", "curate_arm", "grid_runs", "load_ablations", "load_grid", "load_rows",
           "load_trainer", "main", "run_ablations", "run_ablations_parallel", "run_arm", "run_grid"]


if __name__ == "__main__":
    raise SystemExit(main())
