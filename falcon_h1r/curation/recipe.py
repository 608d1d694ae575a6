"""The curation recipe (a preset's ``curation:`` block): every knob of the SFT and RL curation, paper values
where the paper gives them (§2.1, §3.1), ours (noise rates, thresholds within the paper's ranges) said so in
the preset YAMLs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from falcon_h1r.tasks import DOMAINS, TeacherNoise

CURATION_VERSION = 1  # bump when a rule changes meaning, so cached curations are recomputed
# Paper Fig. 3, samples per domain (%); "other" has no synthetic counterpart, so the rest is renormalised.
PAPER_MIXTURE_PCT = {"math": 55.9, "code": 27.0, "science": 10.0}


@dataclass
class CurationRecipe:
    """The ``curation:`` block of a preset. Paper values where the paper gives them (§2.1, §3.1);
    the rest (noise rates, thresholds within the paper's ranges) are ours and say so in the YAML."""

    # --- teacher pool for SFT
    teacher_rollouts: int = 1  # teacher traces per SFT problem (paper ablates n in {4, 8, 12})
    teacher_noise: dict[str, float] = field(default_factory=dict)  # tasks.TeacherNoise rates
    malformed_rate: float = 0.0  # fraction of pool records corrupted as bad input (exercises the rejects path)
    max_trace_tokens: int = 512  # reasoning + answer tokens; longer traces are dropped
    keep_incorrect_hard: bool = False  # the paper's exception: keep wrong traces of the hardest problems
    drop_contaminated: bool = True
    # --- verification
    use_math_verify: bool = True
    math_verify_timeout_s: int = 2
    code_timeout_s: float = 5.0
    code_workers: int = 2  # sandboxed programs in flight (each program in its own process)
    # --- difficulty-aware SFT weights (paper §2.1: hard x1.25-1.75, medium x1, easy x0.5 or removed)
    sft_difficulty: Literal["metadata", "pass_rate"] = "metadata"
    sft_pass_rate_k: int = 4
    hard_pass_rate_max: float = 0.25  # pass rate <= this: hard
    easy_pass_rate_min: float = 0.875  # pass rate >= this: easy
    hard_length_quantile: float = 0.9  # a trace longer than this per-domain quantile marks its problem hard
    hard_weight_min: float = 1.25
    hard_weight_max: float = 1.75
    medium_weight: float = 1.0
    easy_weight: float = 0.5
    drop_easy: bool = False
    # --- RL pool and pass rates (paper §3.1: 8 rollouts of the SFT model at T 0.6, top-p 0.95)
    rl_domains: list[str] = field(default_factory=lambda: ["math", "code"])
    rl_pool_per_domain: int = 100
    pass_rate_k: int = 8
    pass_rate_temperature: float = 0.6
    pass_rate_top_p: float = 0.95
    pass_rate_max_new_tokens: int | None = None  # None: the preset's generation.max_new_tokens
    rollout_batch_size: int | None = None  # None: the preset's generation.batch_size
    # --- RL filter rules for 0/k problems
    truncated_keep_fraction: float = 0.1  # "mostly dropped, a small random subset kept" (fraction not given)
    majority_drop_at_least: int = 4  # a wrong answer repeated >= 4 of 8 times: likely a bad label
    # --- SFT mixture (paper Fig. 3, by samples)
    mixture: dict[str, float] = field(default_factory=lambda: dict(PAPER_MIXTURE_PCT))

    def __post_init__(self) -> None:
        from falcon_h1r.config import RecipeError

        known = {f for f in TeacherNoise.__dataclass_fields__}
        bad = sorted(set(self.teacher_noise) - known)
        if bad:
            raise RecipeError(f"curation.teacher_noise.{bad[0]}: unknown; accepted: {', '.join(sorted(known))}")
        for k, v in self.teacher_noise.items():
            if not 0 <= v <= 1:
                raise RecipeError(f"curation.teacher_noise.{k}: a rate in [0, 1], got {v}")
        for name in ("malformed_rate", "truncated_keep_fraction", "hard_pass_rate_max", "easy_pass_rate_min",
                     "hard_length_quantile"):
            if not 0 <= getattr(self, name) <= 1:
                raise RecipeError(f"curation.{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.hard_pass_rate_max >= self.easy_pass_rate_min:
            raise RecipeError("curation.hard_pass_rate_max must be below curation.easy_pass_rate_min "
                              f"({self.hard_pass_rate_max} >= {self.easy_pass_rate_min})")
        if not 0 < self.hard_weight_min <= self.hard_weight_max:
            raise RecipeError("curation.hard_weight_min must be > 0 and <= curation.hard_weight_max")
        for name in ("teacher_rollouts", "max_trace_tokens", "pass_rate_k", "sft_pass_rate_k", "rl_pool_per_domain",
                     "code_workers", "math_verify_timeout_s"):
            if getattr(self, name) < 1:
                raise RecipeError(f"curation.{name}: must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.majority_drop_at_least <= self.pass_rate_k:
            raise RecipeError(f"curation.majority_drop_at_least: must be in 1..pass_rate_k ({self.pass_rate_k}), "
                              f"got {self.majority_drop_at_least}")
        bad = [d for d in list(self.rl_domains) + list(self.mixture) if d not in DOMAINS]
        if bad:
            raise RecipeError(f"curation: domain {bad[0]!r} not accepted; use {', '.join(DOMAINS)}")
        if any(v < 0 for v in self.mixture.values()) or not sum(self.mixture.values()) > 0:
            raise RecipeError(f"curation.mixture: non-negative proportions with a positive sum, got {self.mixture}")

    def noise(self) -> TeacherNoise:
        return TeacherNoise(**self.teacher_noise)
