"""What section 02's §2 ablations run: the ``sft_ablations:`` preset block (:class:`SFTAblations`: sizes, seeds,
the ablation teacher's error model, the common start), the arms (:class:`Arm`) and the recipe grids
(``recipes/sft/<grid>.yaml``, each arm a set of overrides of ``recipes/sft/reference.yaml``).

The paper prints no grid sizes (its ablations are full SFT runs, the learning rate searched on a 10 % subset,
paper §2); every size here is ours, chosen so a preset's grid fits its machine. Which arms are compared and how
is :mod:`falcon_h1r.sections.sft_findings`; the data and the start are
:mod:`falcon_h1r.sections.sft_ablation_data`; the runs are :mod:`falcon_h1r.sections.sft_ablations`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence

from falcon_h1r.config import LR_DECAYS, Preset, RecipeError, load_recipe_grid, parse
from falcon_h1r.tasks import LEVELS

GRIDS = ("learning_rate", "rollouts", "incorrect", "teachers", "weighting", "mixture", "normalization")
# The paper's SFT rate (Table 1: 1024e-6 "with µP") and Falcon-H1-7B's width (Table 8: hidden 3072), from which
# our rates are scaled (see SFTAblations.lr_for).
PAPER_SFT_LR = 1.024e-3
PAPER_HIDDEN_SIZE = 3072


# ============================================================================== the preset block
BASES_SOURCES = ("train", "committed")  # sft_ablations.bases
START_CORPORA = ("answers", "traces", "chat")  # sft_ablations.start_corpus
# Below this held-out pass@1 an arm sits at the testbed's floor: the claims' precondition (papers/claims.yaml,
# ablation_reference_acc >= 0.05) and the level under which the learning-rate grid is not read by accuracy.
FLOOR_ACC = 0.05


@dataclass
class SFTAblations:
    """The ``sft_ablations:`` block: how large the §2 ablations are at a preset, and their common start."""

    grids: list[str] = field(default_factory=lambda: list(GRIDS))  # recipes/sft/<grid>.yaml to run (paper §2 axes)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # every arm's seeds (pairs are by seed and problem)
    # a grid's own seeds, e.g. the protocol's 5 for learning_rate and normalization (an arm may use the first k)
    grid_seeds: dict[str, list[int]] = field(default_factory=dict)
    steps: int = 120  # SFT steps of every arm from the common start (the same for every arm: a fixed budget)
    batch_size: int = 32  # samples per step (paper Table 1: 512)
    # the reference arm's rate in the paper's convention; 0: the best arm of the learning_rate grid, which then runs
    # first (the paper searched the rate first, on a 10 % subset, then fixed it for its recipe)
    reference_lr_paper: float = 0.0
    # µP: our rate = the arm's paper-convention rate x mup_base_width / model.hidden_size (Adam's 1/width rule
    # for hidden weights), so the paper's grid (128e-6 ... 1024e-6 at width 3072, Table 1 and 8) maps to our width
    mup_base_width: int = PAPER_HIDDEN_SIZE
    # the difficulty levels the arms train and are evaluated on (empty: every level of the preset's tasks); a
    # short fine-tune from the start learns the lower levels, so the budget is not spent where every arm scores 0
    levels: list[int] = field(default_factory=list)
    problems_per_domain: int = 150  # fresh problems the arms fine-tune on (never a test or base-training question)
    eval_per_domain: int = 100  # held-out problems per domain every arm is evaluated on
    eval_samples: int = 1  # sampled responses per held-out problem (T and top-p from generation: paper §4.1)
    eval_batch_size: int = 0  # 0: generation.batch_size
    max_new_tokens: int = 0  # 0: generation.max_new_tokens
    eval_every: int = 30  # the curve arms' evaluation interval (paper Fig. 4: over 3,750 steps)
    curve_eval_per_domain: int = 0  # held-out problems per domain at each curve point (0: eval_per_domain)
    # the ablation teacher's chance of one slipped step per trace, for levels 1..10 (ours): harder problems have
    # longer traces and more chances to slip, so the teacher's pass rate falls with the level
    teacher_slip_by_level: list[float] = field(
        default_factory=lambda: [0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    hard_levels: list[int] = field(default_factory=lambda: [8, 9, 10])  # held-out levels read as "hardest"
    easy_levels: list[int] = field(default_factory=lambda: [1, 2, 3])  # held-out levels read as "easy"
    # the common start: plain language modelling from scratch on the base-training split's problems (never an
    # arm's or a held-out problem), one document per problem: "answers" = question and final answer (no reasoning);
    # "traces" = question and a clean worked solution by either teacher (half stepwise, half terse, so no teacher
    # style is favoured), the domain text a pretrained base has read; "chat" = the same clean worked solutions in
    # the chat turn with <think> (an earlier, shorter SFT stage on other problems: the start already answers, and
    # is still learning). Not a paper value (sft_ablation_data).
    start_corpus: str = "answers"
    # the start's rate after its warm-up: "linear" decays to 0 (an annealed checkpoint, as the base run ends) or
    # "constant" (a mid-run checkpoint). Measured on one H200 (f37288b, small, chat start of 800 annealed steps):
    # every arm's fresh AdamW at a rate near the start's peak kicked the annealed start out of its minimum (train
    # loss 0.13 -> 0.35 in 5 steps even at the lowest rate, 0.0015), and every arm ended below the start (0.285 ->
    # 0.005-0.20): the grid measured the recovery from that kick. Not a paper value.
    start_lr_decay: str = "linear"
    start_steps: int = 200
    start_batch_size: int = 64
    start_lr: float = 0.002
    cpu_threads: int = 0  # torch threads for the runs on CPU (0: leave as is); tiny models run best on 1
    # processes computing the grid when notebook 02 computes it (the notebook's own and workers - 1 more, each a
    # share of the runs into the shared work file): the runs are independent and seeded per (arm, seed), so the
    # rows are the same for any count; 2 uses both cores of a 2-core machine. Not a paper value.
    workers: int = 1
    # Where notebook 02 takes its bases' figures from when it computes: "train" (train them, or read this machine's
    # cache) or "committed" (the committed base_training.json and trainer_checks.json of this preset). The grid
    # starts from its own common start and never uses the bases, so a GPU session can spend its minutes on the
    # grid alone. Not a paper value.
    bases: str = "train"

    def __post_init__(self) -> None:
        if self.start_corpus not in START_CORPORA:
            raise RecipeError(f"sft_ablations.start_corpus: {self.start_corpus!r} not accepted; use one of "
                              f"{', '.join(START_CORPORA)}")
        if self.start_lr_decay not in LR_DECAYS:
            raise RecipeError(f"sft_ablations.start_lr_decay: {self.start_lr_decay!r} not accepted; use one of "
                              f"{', '.join(LR_DECAYS)}")
        if self.bases not in BASES_SOURCES:
            raise RecipeError(f"sft_ablations.bases: {self.bases!r} not accepted; use one of {', '.join(BASES_SOURCES)}")
        for name in ("steps", "batch_size", "problems_per_domain", "eval_per_domain", "eval_samples", "mup_base_width",
                     "start_steps", "start_batch_size", "workers"):
            if getattr(self, name) < 1:
                raise RecipeError(f"sft_ablations.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("max_new_tokens", "eval_every", "cpu_threads", "eval_batch_size", "curve_eval_per_domain"):
            if getattr(self, name) < 0:
                raise RecipeError(f"sft_ablations.{name}: must be >= 0, got {getattr(self, name)}")
        bad = [g for g in [*self.grids, *self.grid_seeds] if g not in GRIDS]
        if bad:
            raise RecipeError(f"sft_ablations.grids / grid_seeds: {bad[0]!r} not accepted; grids are {', '.join(GRIDS)}")
        if self.reference_lr_paper < 0:
            raise RecipeError(f"sft_ablations.reference_lr_paper: 0 (the learning_rate grid's best) or a rate > 0, "
                              f"got {self.reference_lr_paper}")
        if self.grids and not self.reference_lr_paper and "learning_rate" not in self.grids:
            raise RecipeError("sft_ablations.reference_lr_paper: 0 takes the best arm of the learning_rate grid, which "
                              "sft_ablations.grids leaves out; add it or give a rate")
        if not self.start_lr > 0:
            raise RecipeError(f"sft_ablations.start_lr: must be > 0, got {self.start_lr}")
        if len(self.teacher_slip_by_level) != len(LEVELS) or not all(0 <= r <= 1 for r in self.teacher_slip_by_level):
            raise RecipeError(f"sft_ablations.teacher_slip_by_level: {len(LEVELS)} rates in [0, 1] (levels "
                              f"{LEVELS[0]}-{LEVELS[-1]}), got {self.teacher_slip_by_level}")
        for name in ("hard_levels", "easy_levels", "levels"):
            levels = getattr(self, name)
            if name == "levels" and not levels:
                continue
            if not levels or not all(lv in LEVELS for lv in levels):
                raise RecipeError(f"sft_ablations.{name}: levels from {LEVELS[0]} to {LEVELS[-1]}, got {levels}")
        if set(self.hard_levels) & set(self.easy_levels):
            raise RecipeError(f"sft_ablations.hard_levels and easy_levels overlap: {self.hard_levels} vs "
                              f"{self.easy_levels}")
        for name, seeds in [("seeds", self.seeds), *((f"grid_seeds.{g}", s) for g, s in self.grid_seeds.items())]:
            if not seeds or len(set(seeds)) != len(seeds):
                raise RecipeError(f"sft_ablations.{name}: at least one seed, no repeats; got {seeds}")

    def levels_of(self, preset_levels: Sequence[int]) -> list[int]:
        """The ablations' levels among a domain's ``preset_levels``."""
        return [lv for lv in preset_levels if not self.levels or lv in self.levels]

    def seeds_for(self, grid: str) -> list[int]:
        """The seeds a grid runs at (its own ``grid_seeds`` entry, else ``seeds``)."""
        return list(self.grid_seeds.get(grid, self.seeds))

    def slip_rate(self, level: int) -> float:
        """The ablation teacher's per-trace slip chance at a difficulty level."""
        return float(self.teacher_slip_by_level[LEVELS.index(level)])

    def lr_for(self, lr_paper: float, hidden_size: int) -> float:
        """Our learning rate for a rate of the paper's µP convention at its width (µP's Adam rule for hidden
        weights, lr ∝ 1/width, applied to the one rate our optimizer uses)."""
        return lr_paper * self.mup_base_width / hidden_size


def load_ablations(preset: Preset) -> SFTAblations:
    """The preset's ``sft_ablations:`` block."""
    return preset.section("sft_ablations", SFTAblations)


# ============================================================================== arms and grids
@dataclass
class Arm:
    """One fine-tuning configuration of an ablation grid (fields not set take the reference values)."""

    name: str = "reference"
    lr_paper: float = PAPER_SFT_LR  # rate in the paper's µP convention (SFTAblations.lr_for gives ours)
    rollouts: int = 4  # teacher rollouts per problem (paper: n in {4, 8, 12})
    incorrect: bool = False  # keep wrong traces of the hardest problems (paper §2.1)
    teacher: Literal["stepwise", "terse", "mixed"] = "stepwise"  # one teacher's method, or both mixed
    weighting: bool = True  # difficulty-aware weights (hard x1.25-1.75, easy x0.5) vs all 1
    mixture: dict[str, float] = field(default_factory=lambda: {"math": 1.0, "code": 1.0, "science": 1.0})
    loss_norm: Literal["sequence", "rank_token", "balanced"] = "balanced"
    ranks: int = 1
    shard: Literal["contiguous", "by_length", "random"] = "contiguous"
    curve: bool = False  # evaluate every sft_ablations.eval_every steps (the normalization curve)

    def __post_init__(self) -> None:
        if not self.lr_paper > 0:
            raise RecipeError(f"arm {self.name!r}: lr_paper must be > 0, got {self.lr_paper}")
        if not 1 <= self.rollouts <= 64:
            raise RecipeError(f"arm {self.name!r}: rollouts must be 1-64, got {self.rollouts}")
        if self.ranks < 1:
            raise RecipeError(f"arm {self.name!r}: ranks must be >= 1, got {self.ranks}")
        if not self.mixture or any(v < 0 for v in self.mixture.values()) or not sum(self.mixture.values()) > 0:
            raise RecipeError(f"arm {self.name!r}: mixture needs non-negative shares that sum above 0, got "
                              f"{self.mixture}")

    def key(self) -> str:
        """Identifies the training run (the name is a label only), so grids share identical arms."""
        d = asdict(self)
        d.pop("name")
        d["mixture"] = {k: v for k, v in d["mixture"].items() if v}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Grid:
    name: str
    axis: str  # row of papers/sft_ablation_findings.csv (or fig4_dp_balance)
    question: str
    arms: list[Arm]
    seeds: dict[str, list[int]] = field(default_factory=dict)  # arm name -> its seeds
    reference_key: str = ""  # the key of the reference arm these arms vary (its rate as resolved)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"grid {self.name!r} has no arm {name!r} at this preset; arms: "
                       f"{', '.join(a.name for a in self.arms)}")

    def runs(self) -> list[tuple[Arm, int]]:
        """Every (arm, seed) the grid needs."""
        return [(a, s) for a in self.arms for s in self.seeds[a.name]]


def load_grid(name: str, preset_name: str = "tiny", block: SFTAblations | None = None,
              reference_lr_paper: float | None = None) -> Grid:
    """``recipes/sft/<name>.yaml``: arms over the reference arm (``recipes/sft/reference.yaml`` with its rate set to
    ``reference_lr_paper`` when given, plus the grid's own ``reference:`` overrides). An arm may list the
    ``presets`` it runs at and ``n_seeds`` (it runs at the first ``n_seeds`` of the grid's seeds,
    ``block.seeds_for(name)``)."""
    if name not in GRIDS:
        raise RecipeError(f"unknown SFT grid {name!r}; grids are {', '.join(GRIDS)}")
    raw = load_recipe_grid(f"sft/{name}.yaml")
    unknown = sorted(set(raw) - {"axis", "question", "reference", "arms"})
    if unknown:
        raise RecipeError(f"sft/{name}.yaml: unknown key {unknown[0]!r}; accepted: axis, question, reference, arms")
    seeds = (block or SFTAblations()).seeds_for(name)
    ref = {**load_recipe_grid("sft/reference.yaml"), **raw.get("reference", {})}
    if reference_lr_paper is not None:
        ref["lr_paper"] = reference_lr_paper
    arms, arm_seeds = [], {}
    for i, a in enumerate(raw.get("arms", [])):
        a = dict(a)
        presets = a.pop("presets", None)
        n_seeds = a.pop("n_seeds", None)
        if presets is not None and preset_name not in presets:
            continue
        arm = parse(Arm, {**ref, **a}, f"sft/{name}.yaml arms[{i}]")
        if arm.name in arm_seeds:
            raise RecipeError(f"sft/{name}.yaml: two arms named {arm.name!r}")
        if n_seeds is not None and (not isinstance(n_seeds, int) or n_seeds < 1):
            raise RecipeError(f"sft/{name}.yaml arms[{i}].n_seeds: a count >= 1, got {n_seeds!r}")
        arms.append(arm)
        arm_seeds[arm.name] = seeds[:n_seeds] if n_seeds else list(seeds)
    if not arms:
        raise RecipeError(f"sft/{name}.yaml: no arm runs at preset {preset_name!r}")
    return Grid(name, raw.get("axis", name), raw.get("question", ""), arms, arm_seeds,
                parse(Arm, {**ref, "name": "reference"}, f"sft/{name}.yaml reference").key())


def load_grids(preset: Preset, reference_lr_paper: float | None = None) -> list[Grid]:
    """The preset's grids (``sft_ablations.grids``), each with its seeds, around the reference rate
    ``sft_ablations.reference_lr_paper`` (or, when that is 0, the ``reference_lr_paper`` given: the learning_rate
    grid's best). While the rate is not known yet, only the learning_rate grid, which decides it."""
    block = load_ablations(preset)
    rate = block.reference_lr_paper or reference_lr_paper
    if rate is None:
        return [load_grid("learning_rate", preset.name, block)] if block.grids else []
    return [load_grid(g, preset.name, block, None if g == "learning_rate" else rate) for g in block.grids]


def best_lr_paper(lr_grid: Grid, rows: Mapping[tuple[str, int], Mapping[str, Any]]) -> float | None:
    """The learning_rate grid's best arm, as a rate of the paper's convention; None until every one of its runs
    has a row (``rows``: by ``(arm key, seed)``). Best: the highest held-out accuracy (mean over its seeds), ties
    to the first arm listed (the smaller rate). When no arm reaches :data:`FLOOR_ACC`, accuracy is noise at the
    floor and would pick a rate at random, so the arm with the lowest mean final training loss is taken instead
    (paper §2: the better rates converged faster); an arm with a diverged run (a loss that is not finite) is never
    taken that way."""
    import math

    accs, losses = {}, {}
    for a in lr_grid.arms:
        runs = [rows[(a.key(), s)] for s in lr_grid.seeds[a.name] if (a.key(), s) in rows]
        if len(runs) < len(lr_grid.seeds[a.name]):
            return None
        accs[a.lr_paper] = sum(r["acc"] for r in runs) / len(runs)
        finals = [float(r.get("train_loss_final", math.nan)) for r in runs]
        if all(math.isfinite(x) for x in finals):
            losses[a.lr_paper] = sum(finals) / len(finals)
    best = max(accs.values())
    if best < FLOOR_ACC and losses:
        least = min(losses.values())
        return next(lr for lr, m in losses.items() if m == least)
    return next(lr for lr, m in accs.items() if m == best)


def reference_arm(name: str = "reference", lr_paper: float | None = None) -> Arm:
    """The reference arm every grid varies one axis of (``recipes/sft/reference.yaml``, its rate ``lr_paper``
    when given)."""
    raw = {**load_recipe_grid("sft/reference.yaml"), "name": name}
    if lr_paper is not None:
        raw["lr_paper"] = lr_paper
    return parse(Arm, raw, "sft/reference.yaml")


def grid_runs(grids: list[Grid]) -> list[tuple[str, int]]:
    """Every distinct ``(arm.key(), seed)`` the grids need, in a fixed order (an arm that several grids share,
    such as the reference arm, is one run)."""
    return list(dict.fromkeys((a.key(), s) for g in grids for a, s in g.runs()))


__all__ = ["Arm", "FLOOR_ACC", "GRIDS", "START_CORPORA", "Grid", "PAPER_HIDDEN_SIZE", "PAPER_SFT_LR", "SFTAblations", "best_lr_paper", "grid_runs",
           "load_ablations", "load_grid", "load_grids", "reference_arm"]
