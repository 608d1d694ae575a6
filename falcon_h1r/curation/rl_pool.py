"""The RL problem pool (paper §3.1): validate, drop unverifiable problems, dedupe against the SFT set,
decontaminate, then apply the pass-rate rules per 0/k..k/k bin (:func:`rl_decision`). Separated from the
model (pass rates come from a ``rates_fn``) so every branch is testable."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from falcon_h1r.curation.dedup import dedup_against, normalize_text
from falcon_h1r.curation.filters import validate_record
from falcon_h1r.curation.pass_rates import PassRate, pass_rate_histogram
from falcon_h1r.curation.recipe import CurationRecipe
from falcon_h1r.curation.removals import RL_RULES, Removal, funnel
from falcon_h1r.verify import check

# What the pass-rate rules decide for each problem (paper §3.1; papers/rl_filter_rules.yaml).
RL_DECISIONS = ("drop_all_correct", "keep_partial", "drop_all_truncated", "keep_truncated_sample",
                "drop_bad_label", "keep_zero")
_DECISION_RULE = {"drop_all_correct": "rl_all_correct", "drop_all_truncated": "rl_all_truncated",
                  "drop_bad_label": "rl_bad_label"}


def rl_decision(rate: PassRate, recipe: CurationRecipe, seed: int = 0) -> str:
    """The paper's §3.1 rule for one problem (see RL_DECISIONS):

    k/k correct: dropped (too easy); 1..k-1: kept; 0/k: if every rollout hit the length limit, dropped
    except a small random subset (``truncated_keep_fraction``, drawn per problem from the seed);
    otherwise dropped when the majority answer repeats >= ``majority_drop_at_least`` times (a
    consistent wrong answer suggests a bad label), kept below that.
    """
    if rate.correct == rate.k:
        return "drop_all_correct"
    if rate.correct > 0:
        return "keep_partial"
    if rate.n_truncated == rate.k:
        lucky = random.Random(f"{seed}-rl-truncated-{rate.id}").random() < recipe.truncated_keep_fraction
        return "keep_truncated_sample" if lucky else "drop_all_truncated"
    if rate.majority_freq >= recipe.majority_drop_at_least:
        return "drop_bad_label"
    return "keep_zero"


@dataclass
class RLCuration:
    problems: list[dict[str, Any]]  # the kept RL pool, each with pass_rate, majority answer, decision
    rates: list[PassRate]  # every problem whose pass rate was estimated
    decisions: dict[str, str]  # problem id -> RL_DECISIONS entry
    removals: list[Removal]
    n_in: int
    k: int
    stats: dict[str, Any] = field(default_factory=dict)

    def funnel(self) -> list[dict[str, Any]]:
        return funnel(self.removals, RL_RULES, self.n_in)

    def dropped_by_rule(self) -> dict[str, int]:
        counts = Counter(r.rule for r in self.removals)
        return {rule: counts.get(rule, 0) for rule in RL_RULES}

    def histogram(self, kept_only: bool = False) -> list[int]:
        keep = {p["id"] for p in self.problems}
        return pass_rate_histogram([r for r in self.rates if not kept_only or r.id in keep], self.k)

    def to_json(self) -> dict[str, Any]:
        return {"problems": self.problems, "rates": [asdict(r) for r in self.rates], "decisions": self.decisions,
                "removals": [asdict(r) for r in self.removals], "n_in": self.n_in, "k": self.k, "stats": self.stats}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RLCuration":
        return cls(d["problems"], [PassRate(**r) for r in d["rates"]], d["decisions"],
                   [Removal(**r) for r in d["removals"]], d["n_in"], d["k"], d.get("stats", {}))


_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")


def problem_verifiable(p: dict[str, Any]) -> tuple[bool, str]:
    """Can the rule-based checker grade answers to this problem? The paper drops math whose answer
    it cannot verify: here free text (a word of 3+ letters outside LaTeX commands, e.g. a proof)
    or an answer that does not verify against itself; science needs a number, code tests of a form the
    sandbox's trusted side can compare (``assert <call> == <literal>``, see :func:`falcon_h1r.sandbox.parse_test`)."""
    if p["domain"] == "code":
        from falcon_h1r.sandbox import parse_test

        for t in p["tests"]:
            try:
                parse_test(t)
            except (TypeError, ValueError) as exc:
                return False, f"test {str(t)[:60]!r} not accepted: {str(exc)[:80]}"
        return True, ""
    if p["domain"] == "science":
        from falcon_h1r.verify import parse_number

        ok = parse_number(p["answer"]) is not None
        return ok, "" if ok else f"answer {p['answer'][:60]!r} is not a number"
    if re.search(r"[A-Za-z]{3,}", _LATEX_COMMAND.sub("", p["answer"])):
        return False, f"free-text answer {p['answer'][:60]!r}"
    v = check(p, f"\\boxed{{{p['answer']}}}", use_math_verify=False)
    return v.correct, "" if v.correct else f"answer {p['answer'][:60]!r} does not verify against itself"


def select_rl_pool(candidates: Sequence[Any], rates_fn, recipe: CurationRecipe, *, sft_questions: Iterable[str],
                   eval_questions: Iterable[str] = (), seed: int = 0) -> RLCuration:
    """Validate, dedupe against SFT, decontaminate, estimate pass rates (``rates_fn(problems)``) and
    apply the pass-rate rules. Separated from the model so every branch is testable."""
    t0 = time.time()
    removals: list[Removal] = []
    ok = []
    for p in candidates:
        bad = validate_record(p, needs_trace=False)
        if bad:
            rid = p.get("id", "?") if isinstance(p, dict) else "?"
            dom = p.get("domain", "?") if isinstance(p, dict) else "?"
            removals.append(Removal(str(rid), str(dom), "rl_malformed", "rl_malformed", f"{bad[0]}: {bad[1]}"))
            continue
        good, why = problem_verifiable(p)
        if not good:
            removals.append(Removal(p["id"], p["domain"], "rl_malformed", "rl_unverifiable", why))
            continue
        ok.append(p)
    kept, dups = dedup_against(ok, sft_questions)
    for p, how in dups:
        removals.append(Removal(p["id"], p["domain"], "rl_dedup", f"rl_duplicate_{how}",
                                f"{how} match with the SFT set"))
    ev = list(eval_questions)
    ev_exact, ev_norm = set(ev), {normalize_text(q) for q in ev}
    clean = []
    for p in kept:
        if recipe.drop_contaminated and (p["question"] in ev_exact or normalize_text(p["question"]) in ev_norm):
            removals.append(Removal(p["id"], p["domain"], "rl_contamination", "rl_contaminated",
                                    "match with an evaluation question"))
        else:
            clean.append(p)
    t1 = time.time()
    rates = list(rates_fn(clean)) if clean else []
    t2 = time.time()
    if [r.id for r in rates] != [p["id"] for p in clean]:
        raise ValueError(f"rates_fn must return one PassRate per problem, in order; got {len(rates)} for "
                         f"{len(clean)} problems")
    decisions, pool = {}, []
    for p, r in zip(clean, rates):
        d = rl_decision(r, recipe, seed)
        decisions[p["id"]] = d
        if d.startswith("drop"):
            removals.append(Removal(p["id"], p["domain"], "rl_pass_rate", _DECISION_RULE[d],
                                    f"{r.correct}/{r.k} correct, {r.n_truncated} truncated, "
                                    f"majority x{r.majority_freq}"))
        else:
            pool.append({**p, "pass_rate": r.pass_rate, "correct": r.correct, "k": r.k,
                         "majority_answer": r.majority_answer, "majority_freq": r.majority_freq, "rl_decision": d})
    stats = {"filter_wall_s": round(t1 - t0, 3), "pass_rate_wall_s": round(t2 - t1, 3),
             "pass_rate_problems_per_s": len(clean) / (t2 - t1) if t2 > t1 else None, "n_rated": len(clean)}
    return RLCuration(pool, list(rates), decisions, removals, len(candidates), recipe.pass_rate_k, stats)
