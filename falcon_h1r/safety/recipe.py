"""The ``safety`` block of a preset (paper Appendix E, Table 10): which suites, which modes, which judge, and
how the judge's calls are batched (240K calls at the paper's scale: 81,970 prompts x 3 modes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from falcon_h1r.config import RecipeError
from falcon_h1r.safety.split import MODES
from falcon_h1r.safety.suites import BUILTIN_SUITE, PAPER_SUITES, SUITES


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
    batch_size: int = 8  # most judge texts per Llama Guard forward pass; not a paper value
    # Most padded tokens per Llama Guard forward pass (texts are sorted by length, so batches pad little);
    # bounds the judge's activation memory. Not a paper value.
    judge_max_batch_tokens: int = 65536
    # Judge calls handed to the judge at once: the window sorted by length, and the unit written to the
    # resumable verdict log. Not a paper value.
    judge_chunk: int = 1024
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
        for name in ("max_new_tokens", "batch_size", "judge_max_batch_tokens", "judge_chunk"):
            if getattr(self, name) < 1:
                raise RecipeError(f"safety.{name}: must be > 0, got {getattr(self, name)}")
        if self.max_prompts_per_suite is not None and self.max_prompts_per_suite < 1:
            raise RecipeError(f"safety.max_prompts_per_suite: must be > 0 or null, got {self.max_prompts_per_suite}")
        if not self.judge:
            raise RecipeError("safety.judge: use 'embedded' or a Llama Guard checkpoint directory")


__all__ = ["SafetyRecipe"]
