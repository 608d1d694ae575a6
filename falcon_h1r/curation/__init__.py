"""Data curation (paper §2.1 for SFT, §3.1 for RL), one concern per module:

- :mod:`~falcon_h1r.curation.recipe`: :class:`CurationRecipe` (the ``curation:`` block);
- :mod:`~falcon_h1r.curation.removals`: the fixed rule names, :class:`Removal`, the funnel;
- :mod:`~falcon_h1r.curation.filters`: bad input (``malformed_*``, never a crash) and quality rules;
- :mod:`~falcon_h1r.curation.grading`: verification against ground truth, code batched in the sandbox;
- :mod:`~falcon_h1r.curation.sft_records`: the SFT pipeline and its difficulty-aware weights;
- :mod:`~falcon_h1r.curation.pass_rates`: k graded rollouts per problem from a model;
- :mod:`~falcon_h1r.curation.rl_pool`: the RL pool and the paper's 0/k..k/k rules;
- :mod:`~falcon_h1r.curation.dedup`: deduplication and the contamination check;
- :mod:`~falcon_h1r.curation.mixture`: the streamed domain mixture and the length fits;
- :mod:`~falcon_h1r.curation.audit`: independent re-checks of what was kept, and the claims' statistics;
- :mod:`~falcon_h1r.curation.controls`: positive controls that plant duplicates and held-out problems.

Nothing is dropped silently: every removed record lands in a removal report with the rule that removed it
and the stage. What a preset curates, and the caches, live in :mod:`falcon_h1r.sections.curation`.
"""

from falcon_h1r.curation.dedup import contamination, dedup_against, normalize_text
from falcon_h1r.curation.filters import corrupt_records, latex_parses, quality_issue, validate_record
from falcon_h1r.curation.grading import grade, grade_kwargs, run_code_batch, trace_response
from falcon_h1r.curation.mixture import (build_mixture, fit_lognormal, mixture_probabilities, mixture_sample,
                                         mixture_table)
from falcon_h1r.curation.pass_rates import (PassRate, answer_key, estimate_pass_rates, pass_rate_histogram,
                                            pass_rates_from_verdicts)
from falcon_h1r.curation.recipe import CURATION_VERSION, PAPER_MIXTURE_PCT, CurationRecipe
from falcon_h1r.curation.removals import RL_RULES, SFT_RULES, Removal, funnel
from falcon_h1r.curation.rl_pool import RL_DECISIONS, RLCuration, problem_verifiable, rl_decision, select_rl_pool
from falcon_h1r.curation.sft_records import SFTCuration, curate_sft_records, difficulty_tier, is_hard_problem

__all__ = [
    "CURATION_VERSION", "CurationRecipe", "PAPER_MIXTURE_PCT", "PassRate", "RLCuration", "RL_DECISIONS", "RL_RULES",
    "Removal", "SFTCuration", "SFT_RULES", "answer_key", "build_mixture", "contamination", "corrupt_records",
    "curate_sft_records", "dedup_against", "difficulty_tier", "estimate_pass_rates", "fit_lognormal", "funnel",
    "grade", "grade_kwargs", "is_hard_problem", "latex_parses", "mixture_probabilities", "mixture_sample",
    "mixture_table", "normalize_text", "pass_rate_histogram", "pass_rates_from_verdicts", "problem_verifiable",
    "quality_issue", "rl_decision", "run_code_batch", "select_rl_pool", "trace_response", "validate_record",
]
