"""DeepConf's constants and its method knobs (the ``deepconf:`` block of a preset).

Only what the method itself reads lives here: the window, the top-k of the confidence, the warm-up size,
the budget, the kept percentages, the consensus threshold, the final vote and the live batch size. What
an experiment around the method chooses (which problems, how many traces in a pool, the budget sweep,
the resamplings) belongs to the section that runs it (:mod:`falcon_h1r.sections.deepconf`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from falcon_h1r.config import RecipeError

WINDOW = 2048  # DeepConf §3.1: group size n = 2048 tokens (512 / 1024 also tried, Table 8)
TOP_K = 20  # vLLM logprobs=20 in every official code path
SCORES = ("lowest_group", "bottom10_group", "tail", "mean")
# The five rules of the paper / official ``compute_all_voting_results``, and the score each weights by.
VOTE_METHODS = ("majority", "mean_confidence_weighted", "tail_confidence_weighted", "bottom_window_weighted",
                "min_window_weighted")
SCORE_OF_METHOD: dict[str, str | None] = {
    "majority": None,
    "mean_confidence_weighted": "mean",
    "tail_confidence_weighted": "tail",
    "bottom_window_weighted": "bottom10_group",
    "min_window_weighted": "lowest_group",
}
Variant = Literal["low", "high"]
# How the top-eta % filter decides how many traces to keep (see DeepConfRecipe.keep_rule).
KEEP_RULES = ("floor", "percentile")


@dataclass
class DeepConfRecipe:
    """The ``deepconf`` block of a preset: DeepConf's own knobs. Defaults are the DeepConf paper's values
    (Fu et al. 2025, arXiv 2508.15260; the Falcon-H1R paper's §5 uses them).

    Fields:
        window: tokens per confidence group (sliding window, stride 1). DeepConf §3.1: 2048; Table 8
            ablates 512 / 1024 / 2048. The small presets shrink it to their short traces.
        top_k: log-probs averaged into a token's confidence. DeepConf §2 and every official code path:
            20 (vLLM ``logprobs=20``); ``generation.top_logprobs`` must match.
        tail_tokens: tokens of the tail confidence (the mean over the last ones). DeepConf §3.1: 2048.
        n_init: warm-up traces run to completion before the stop threshold is set. DeepConf Table 12:
            N_init = 16 (the Falcon-H1R paper's §5.1 too).
        budget: traces per problem of one online run, warm-up included. DeepConf Table 2: B = 512
            (Falcon-H1R Table 7: K = 512).
        eta_low: percentage of traces kept by DeepConf-low (its threshold is the 100 - eta_low
            percentile of the warm-up lowest-group confidences). DeepConf Table 12: 10.
        eta_high: percentage kept by DeepConf-high. DeepConf Table 12: 90.
        tau: consensus threshold: sampling stops once the leading answer's weighted share reaches it.
            DeepConf Table 12 / App. B.1: 0.95.
        online_vote_method: the vote that gives an online run its answer (one of ``VOTE_METHODS``).
            DeepConf Alg. 2: weighted by the lowest-group confidence (``min_window_weighted``).
        online_batch_size: traces launched per live batch after the warm-up; the consensus check runs
            between batches. 1 is the paper's sequential protocol; larger batches trade tokens for wall time.
        keep_rule: how the offline top-eta % filter counts what it keeps. ``floor``: exactly
            ``max(1, floor(eta * n / 100))`` traces, the best by score (the DeepConf paper's "top-eta %" read
            literally, as TensorRT-LLM's port does: K = 512, eta = 10 keeps 51). ``percentile``: every trace whose
            score is ``>= np.percentile(scores, 100 - eta)`` (linear), as the official analysis code does, which
            made the DeepConf paper's Table 1 numbers; it keeps one more than ``floor`` for most n (52 of 512)
            and more on ties. The section reports both; this field picks the one its headline uses.
    """

    window: int = WINDOW
    top_k: int = TOP_K
    tail_tokens: int = 2048
    n_init: int = 16
    budget: int = 512
    eta_low: float = 10.0
    eta_high: float = 90.0
    tau: float = 0.95
    online_vote_method: str = "min_window_weighted"
    online_batch_size: int = 1
    keep_rule: str = "floor"

    def __post_init__(self) -> None:
        for name in ("window", "top_k", "tail_tokens", "n_init", "budget", "online_batch_size"):
            if getattr(self, name) < 1:
                raise RecipeError(f"deepconf.{name}: must be >= 1, got {getattr(self, name)}")
        if self.top_k > 20:
            raise RecipeError(f"deepconf.top_k: must be in 1..20 (generation keeps at most 20), got {self.top_k}")
        for name in ("eta_low", "eta_high"):
            if not 0 < getattr(self, name) <= 100:
                raise RecipeError(f"deepconf.{name}: a kept percentage in (0, 100], got {getattr(self, name)}")
        if not 0 < self.tau <= 1:
            raise RecipeError(f"deepconf.tau: must be in (0, 1], got {self.tau}")
        if self.budget < self.n_init:
            raise RecipeError(f"deepconf.budget: every budget must be >= n_init={self.n_init}, got {self.budget}")
        if self.keep_rule not in KEEP_RULES:
            raise RecipeError(f"deepconf.keep_rule: {self.keep_rule!r} not accepted; use one of {list(KEEP_RULES)}")
        if self.online_vote_method not in VOTE_METHODS:
            raise RecipeError(f"deepconf.online_vote_method: {self.online_vote_method!r} not accepted; use one of "
                              f"{list(VOTE_METHODS)}")

    def eta(self, variant: Variant) -> float:
        """Kept percentage of a DeepConf variant: low -> eta_low (10), high -> eta_high (90)."""
        if variant not in ("low", "high"):
            raise ValueError(f"variant {variant!r} not accepted; use 'low' (keep top 10 %) or 'high' (top 90 %)")
        return self.eta_low if variant == "low" else self.eta_high


__all__ = ["WINDOW", "TOP_K", "SCORES", "VOTE_METHODS", "SCORE_OF_METHOD", "KEEP_RULES", "Variant", "DeepConfRecipe"]
