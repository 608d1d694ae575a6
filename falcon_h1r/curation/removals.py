"""The removal report of both curations: the fixed rule names (so a summary always carries every rule, zero or
not), one :class:`Removal` per dropped record, and the funnel of what each rule removed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

# Removal rules, in pipeline order (summary keys are ``dropped_by_rule_<rule>``).
SFT_RULES = (
    "malformed_missing_field", "malformed_type", "malformed_latex",  # bad input (stage "malformed")
    "empty_reasoning", "empty_final", "no_boxed", "no_code", "wrong_language", "syntax_error",  # quality
    "too_long",  # length limit
    "contaminated",  # exact / normalized overlap with an evaluation set
    "verify_timeout", "verify_error", "incorrect",  # verification against ground truth
    "easy_removed",  # difficulty (only when the recipe removes easy problems)
)
RL_RULES = (
    "rl_malformed", "rl_unverifiable",  # bad or uncheckable problems
    "rl_duplicate_exact", "rl_duplicate_normalized",  # overlap with the SFT set
    "rl_contaminated",
    "rl_all_correct", "rl_all_truncated", "rl_bad_label",  # the pass-rate rules (paper §3.1)
)


@dataclass
class Removal:
    """One removed record: which record, at which stage, by which rule, and why."""

    id: str
    domain: str
    stage: str  # malformed | quality | length | contamination | verification | difficulty | rl_*
    rule: str
    detail: str = ""


def funnel(removals: Sequence[Removal], rules: Sequence[str], n_in: int) -> list[dict[str, Any]]:
    """Records removed by each rule, in pipeline order, with what is left after each."""
    counts = Counter(r.rule for r in removals)
    unknown = set(counts) - set(rules)
    if unknown:
        raise ValueError(f"removals name rules outside the rule list: {sorted(unknown)}")
    rows, left = [], n_in
    for rule in rules:
        left -= counts.get(rule, 0)
        rows.append({"rule": rule, "removed": counts.get(rule, 0), "remaining": left})
    return rows
