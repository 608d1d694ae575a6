"""SFT curation of teacher traces (paper §2.1): bad input -> quality -> length -> contamination ->
verification -> difficulty-aware weights (hard x1.25-1.75, medium x1, easy x0.5 or removed), every removed
record reported with its rule."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from falcon_h1r.curation.dedup import normalize_text
from falcon_h1r.curation.filters import quality_issue, validate_record
from falcon_h1r.curation.grading import grade, grade_kwargs, trace_response
from falcon_h1r.curation.recipe import CurationRecipe
from falcon_h1r.curation.removals import SFT_RULES, Removal, funnel
from falcon_h1r.tasks import public


def difficulty_tier(recipe: CurationRecipe, *, pass_rate: float | None = None, level: int | None = None,
                    levels: Sequence[int] = (1, 2, 3), long_trace: bool = False) -> tuple[str, float]:
    """``(tier, weight)`` of one SFT record (paper §2.1).

    Hard when the pass rate is low (or, without one, the problem's metadata level is the top one)
    or the trace is long; easy when the pass rate is high (or the level is the bottom one) and the
    trace is not long; medium otherwise. Hard weights lie in [hard_weight_min, hard_weight_max]:
    the lower the pass rate the higher (pass rate 0 gets the maximum); a problem hard by metadata
    or length alone gets the midpoint, by both the maximum.
    """
    hard_by_problem, easy = False, False
    h = 0.0
    if pass_rate is not None:
        hard_by_problem = pass_rate <= recipe.hard_pass_rate_max
        easy = pass_rate >= recipe.easy_pass_rate_min
        if hard_by_problem:
            h = 1.0 - pass_rate / recipe.hard_pass_rate_max if recipe.hard_pass_rate_max > 0 else 1.0
    elif level is not None and len(set(levels)) > 1:
        hard_by_problem = level >= max(levels)
        easy = level <= min(levels)
        h = 0.5 if hard_by_problem else 0.0
    if hard_by_problem and long_trace and pass_rate is None:
        h = 1.0
    elif long_trace and not hard_by_problem:
        h = 0.5
    if hard_by_problem or long_trace:
        return "hard", recipe.hard_weight_min + (recipe.hard_weight_max - recipe.hard_weight_min) * h
    if easy:
        return "easy", 0.0 if recipe.drop_easy else recipe.easy_weight
    return "medium", recipe.medium_weight


def is_hard_problem(recipe: CurationRecipe, pass_rate: float | None, level: int | None,
                    levels: Sequence[int]) -> bool:
    """Hard by the problem itself (pass rate or metadata), the set the incorrect-trace exception uses."""
    if pass_rate is not None:
        return pass_rate <= recipe.hard_pass_rate_max
    return level is not None and len(set(levels)) > 1 and level >= max(levels)


# ============================================================================== SFT curation
@dataclass
class SFTCuration:
    records: list[dict[str, Any]]  # kept traces with tier, weight, correct, prompt/response tokens
    removals: list[Removal]
    n_in: int
    mixture: list[dict[str, Any]] = field(default_factory=list)  # the streamed domain mixture, materialised
    stats: dict[str, Any] = field(default_factory=dict)

    def funnel(self) -> list[dict[str, Any]]:
        return funnel(self.removals, SFT_RULES, self.n_in)

    def dropped_by_rule(self) -> dict[str, int]:
        counts = Counter(r.rule for r in self.removals)
        return {rule: counts.get(rule, 0) for rule in SFT_RULES}

    def rejects(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.removals]

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "removals": self.rejects(), "n_in": self.n_in, "mixture": self.mixture,
                "stats": self.stats}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "SFTCuration":
        return cls(d["records"], [Removal(**r) for r in d["removals"]], d["n_in"], d.get("mixture", []),
                   d.get("stats", {}))


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token counts of many texts in one call to the fast tokenizer."""
    if not texts:
        return []
    return [len(x) for x in tokenizer.hf(list(texts), add_special_tokens=False)["input_ids"]]


def curate_sft_records(pool: Sequence[Any], tokenizer: Any, recipe: CurationRecipe, *,
                       eval_questions: Iterable[str] = (), pass_rates: dict[str, float] | None = None,
                       levels: Sequence[int] = (1, 2, 3), progress: bool = False) -> SFTCuration:
    """Filter, verify and weight a pool of teacher traces (records of ``tasks.teacher_records``).

    Order: bad input -> quality -> length -> contamination -> verification -> difficulty weights.
    ``pass_rates`` (problem id -> pass rate) switches the difficulty source from metadata to pass rate.
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    removals: list[Removal] = []

    def drop(rec: Any, stage: str, rule: str, detail: str = "") -> None:
        rid = rec.get("id", "?") if isinstance(rec, dict) else "?"
        dom = rec.get("domain", "?") if isinstance(rec, dict) else "?"
        removals.append(Removal(str(rid), str(dom), stage, rule, detail))

    bar = tqdm(total=len(pool), desc="curate SFT: filters", disable=not progress, leave=False)
    alive = []
    for rec in pool:
        bad = validate_record(rec)
        if bad:
            drop(rec, "malformed", *bad)
        else:
            issue = quality_issue(rec)
            if issue:
                drop(rec, "malformed" if issue[0] == "malformed_latex" else "quality", *issue)
            else:
                alive.append(public(rec))  # a copy, without the generator's private working
        bar.update(1)
    bar.close()

    # Length: reasoning + answer tokens, the part the paper's context limit bounds.
    resp_tokens = count_tokens(tokenizer, [trace_response(r) for r in alive])
    prompt_tokens = count_tokens(tokenizer, [tokenizer.prompt(r["question"]) for r in alive])
    kept = []
    for r, n_resp, n_prompt in zip(alive, resp_tokens, prompt_tokens):
        if n_resp > recipe.max_trace_tokens:
            drop(r, "length", "too_long", f"{n_resp} > {recipe.max_trace_tokens} tokens")
        else:
            r.update(response_tokens=n_resp, prompt_tokens=n_prompt)
            kept.append(r)

    exact, normed = set(eval_questions), {normalize_text(q) for q in eval_questions}
    alive, kept = kept, []
    for r in alive:
        hit = "exact" if r["question"] in exact else "normalized" if normalize_text(r["question"]) in normed else None
        if hit and recipe.drop_contaminated:
            drop(r, "contamination", "contaminated", f"{hit} match with an evaluation question")
        else:
            kept.append(r)

    verdicts = grade(kept, [trace_response(r) for r in kept], progress=progress, **grade_kwargs(recipe))
    alive, kept = kept, []
    for r, v in zip(alive, verdicts):
        pr = (pass_rates or {}).get(r["id"])
        if v.reason == "verify_timeout":
            drop(r, "malformed", "verify_timeout", f"math-verify timed out on {v.extracted!r}")
        elif v.reason.startswith("verify_error"):
            drop(r, "malformed", "verify_error", v.reason)
        elif not v.correct and not (recipe.keep_incorrect_hard
                                    and is_hard_problem(recipe, pr, r.get("difficulty"), levels)):
            drop(r, "verification", "incorrect", v.reason)
        else:
            r["correct"] = bool(v.correct)
            kept.append(r)

    # Difficulty weights; "long" is per domain (domains have different natural lengths).
    by_dom = defaultdict(list)
    for r in kept:
        by_dom[r["domain"]].append(r["response_tokens"])
    long_at = {d: _quantile(v, recipe.hard_length_quantile) for d, v in by_dom.items()}
    alive, kept = kept, []
    for r in alive:
        pr = (pass_rates or {}).get(r["id"])
        tier, weight = difficulty_tier(recipe, pass_rate=pr, level=r.get("difficulty"), levels=levels,
                                       long_trace=r["response_tokens"] > long_at[r["domain"]])
        r.update(tier=tier, weight=round(weight, 6), pass_rate=pr)
        if weight <= 0:
            why = f"pass rate {pr}" if pr is not None else f"level {r.get('difficulty')}"
            drop(r, "difficulty", "easy_removed", why)
        else:
            kept.append(r)
    wall = time.time() - t0
    stats = {"wall_s": round(wall, 3), "records_per_s": len(pool) / wall if wall > 0 else None,
             "long_trace_threshold": long_at, "n_kept": len(kept)}
    return SFTCuration(kept, removals, len(pool), [], stats)


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.inf
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
