"""Data curation (paper §2.1 for SFT, §3.1 for RL): quality filters, verification of teacher traces,
pass-rate difficulty, difficulty-aware SFT weights, the RL filter rules, deduplication, a
contamination check, the streamed domain mixture and per-domain length statistics.

Two entry points the SFT and RL stages call, each cached like ``stages.py`` under
``results/<preset>/_cache/`` by a hash of every recipe value that shapes it:

- :func:`curate_sft` -> :class:`SFTCuration`: the kept teacher traces, each with a difficulty tier
  and a loss ``weight``, the domain mixture drawn from them, and a report of every removed record.
- :func:`curate_rl_pool` -> :class:`RLCuration`: a held-out RL pool, disjoint from the SFT
  problems, with each problem's pass rate from the SFT model and the 0/8..8/8 rules applied.

Nothing is dropped silently: every removed record lands in a removal report with the rule that
removed it and the stage (``malformed`` input is one stage; a malformed record never crashes a
run). Rule names are fixed (:data:`SFT_RULES`, :data:`RL_RULES`) so a summary always carries
every rule, zero or not.

Verification uses :func:`falcon_h1r.verify.check` for every record, with two additions: math
answers that tier 1 calls wrong go to math-verify with ``raise_on_error`` so a timeout is counted
(``verify_timeout``) instead of passing as "wrong"; and code runs in the sandbox in *batches*
(:func:`run_code_batch`): one sandbox process grades many candidates, each in a fresh namespace.
That is the fast path; ``verify.check`` per record is its plain twin (tests compare them).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from falcon_h1r.config import Preset
from falcon_h1r.results import RESULTS_ROOT, read_json, write_json
from falcon_h1r.tasks import DOMAINS, TeacherNoise, public
from falcon_h1r.verify import Verdict, check, extract_boxed, extract_code, final_answer_part, to_rational

CURATION_VERSION = 1  # bump when a rule changes meaning, so cached curations are recomputed

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
# What the pass-rate rules decide for each problem (paper §3.1; papers/rl_filter_rules.yaml).
RL_DECISIONS = ("drop_all_correct", "keep_partial", "drop_all_truncated", "keep_truncated_sample",
                "drop_bad_label", "keep_zero")
_DECISION_RULE = {"drop_all_correct": "rl_all_correct", "drop_all_truncated": "rl_all_truncated",
                  "drop_bad_label": "rl_bad_label"}
# Paper Fig. 3, samples per domain (%); "other" has no synthetic counterpart, so the rest is renormalised.
PAPER_MIXTURE_PCT = {"math": 55.9, "code": 27.0, "science": 10.0}


# ============================================================================== recipe
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
    code_batch_size: int = 128  # candidates graded per sandbox process (1 = one process per candidate)
    code_workers: int = 2  # sandbox processes in flight
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
                     "code_batch_size", "code_workers", "math_verify_timeout_s"):
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


def load_recipe(preset: Preset) -> CurationRecipe:
    return preset.section("curation", CurationRecipe)


# ============================================================================== removal report
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


# ============================================================================== bad input
_SFT_FIELDS = ("id", "domain", "question", "answer", "reasoning", "final")


def latex_parses(s: str, timeout_s: int = 2) -> bool:
    """Balanced braces, no dangling backslash, and (unless it is a plain number) math-verify parses it."""
    depth = 0
    for ch in s:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            return False
    if depth or s.rstrip().endswith("\\") or not s.strip():
        return False
    if to_rational(s) is not None:
        return True
    try:
        from math_verify import parse

        parsed = _on_main_thread(parse, f"${s}$", parsing_timeout=timeout_s)
    except Exception:  # noqa: BLE001 - "does not parse" is the answer, whatever the reason
        return False
    return bool(parsed) and not isinstance(parsed[0], str)  # math-verify falls back to the raw string


def validate_record(rec: Any, *, needs_trace: bool = True) -> tuple[str, str] | None:
    """``(rule, detail)`` when a record cannot be curated, else None. Never raises."""
    if not isinstance(rec, dict):
        return "malformed_type", f"record is a {type(rec).__name__}, expected a dict"
    fields = _SFT_FIELDS if needs_trace else _SFT_FIELDS[:4]
    missing = [f for f in fields if f not in rec or rec[f] is None]
    if missing:
        return "malformed_missing_field", f"missing {', '.join(missing)}"
    for f in fields:
        if not isinstance(rec[f], str):
            return "malformed_type", f"{f} is a {type(rec[f]).__name__}, expected a string"
    if rec["domain"] not in DOMAINS:
        return "malformed_type", f"domain {rec['domain']!r} not one of {', '.join(DOMAINS)}"
    if not rec["question"].strip():
        return "malformed_missing_field", "empty question"
    if rec["domain"] == "code":
        tests = rec.get("tests")
        if not isinstance(tests, (list, tuple)) or not tests or not all(isinstance(t, str) for t in tests):
            return "malformed_missing_field", "code record without a non-empty list of test strings"
    elif rec["domain"] == "math" and not latex_parses(rec["answer"]):
        return "malformed_latex", f"ground-truth answer does not parse: {rec['answer'][:80]!r}"
    elif rec["domain"] == "science":
        tol = rec.get("tolerance", 0.01)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)):
            return "malformed_type", f"tolerance is a {type(tol).__name__}, expected a number"
    return None


def corrupt_records(records: Sequence[dict[str, Any]], rate: float, seed: int) -> list[dict[str, Any]]:
    """A copy of ``records`` where a ``rate`` fraction is damaged the ways real dumps are: a missing
    field, a non-string answer, LaTeX that does not parse. Used to show the rejects path has work."""
    rng = random.Random(f"{seed}-corrupt")
    out = []
    for r in records:
        r = dict(r)
        if rng.random() < rate:
            kind = rng.choice(["missing", "type", "latex"])
            if kind == "missing":
                r.pop(rng.choice(["answer", "final", "question"]), None)
            elif kind == "type":
                r["answer"] = rng.randint(0, 99)
            elif r["domain"] == "math":
                r["final"] = r["final"].replace("\\boxed{", "\\boxed{\\frac{", 1)
            else:
                r["reasoning"] = None
        out.append(r)
    return out


# ============================================================================== quality filters
def quality_issue(rec: dict[str, Any], *, boxed_domains: Sequence[str] = ("math", "science")) -> tuple[str, str] | None:
    """The first quality rule a (well-formed) trace breaks, as ``(rule, detail)``, else None (paper §2.1)."""
    if not rec["reasoning"].strip():
        return "empty_reasoning", ""
    if not rec["final"].strip():
        return "empty_final", ""
    domain = rec["domain"]
    if domain in boxed_domains:
        final = final_answer_part(rec["final"])
        if "\\boxed" not in final:
            return "no_boxed", "final answer without \\boxed{}"
        pred = extract_boxed(final)
        if pred is None or (domain == "math" and not latex_parses(pred)):
            return "malformed_latex", f"\\boxed{{}} content does not parse: {final[-80:]!r}"
    if domain == "code":
        lang, code = extract_code(rec["final"])
        if code is None:
            return "no_code", "no fenced code block in the final answer"
        want = rec.get("language", "python")
        if lang != want:
            return "wrong_language", f"{lang} (expected {want})"
        from falcon_h1r.sandbox import syntax_ok

        if not syntax_ok(code):
            return "syntax_error", ""
    return None


# ============================================================================== verification
def _on_main_thread(fn, *args, **kw):
    """math-verify times out with signal.alarm, which only the main thread may use."""
    if threading.current_thread() is threading.main_thread():
        return fn(*args, **kw)
    from falcon_h1r.verify import _pool

    return _pool().submit(fn, *args, **kw).result()


def _math_verify_strict(pred: str, gold: str, timeout_s: int) -> str:
    """'equal' | 'different' | 'timeout' | 'error: ...' (math-verify with errors raised, not hidden)."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    try:
        g = parse(f"${gold}$", parsing_timeout=timeout_s, raise_on_error=True)
        p = parse(f"${pred}$", parsing_timeout=timeout_s, raise_on_error=True)
        if not g or not p:
            return "different"
        return "equal" if verify(g, p, timeout_seconds=timeout_s, raise_on_error=True) else "different"
    except TimeoutException:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        return f"error: {type(exc).__name__}: {str(exc)[:120]}"


# math-verify entry point; tests replace it to simulate a timeout.
math_verify_strict = _math_verify_strict

_HARNESS = '''
import builtins as _b
_CANDIDATES = {payload}
__falcon_batch__ = []
for _src, _tests in _CANDIDATES:
    _g = {{"__name__": "__main__", "__builtins__": _b}}
    try:
        exec(compile(_src, "<candidate>", "exec", dont_inherit=True), _g)
        for _t in _tests:
            exec(compile(_t, "<test>", "exec", dont_inherit=True), _g)
        __falcon_batch__.append(True)
    except BaseException:
        __falcon_batch__.append(False)
    del _g
'''


def run_code_batch(items: Sequence[tuple[str, Sequence[str]]], *, timeout_s: float = 5.0, batch_size: int = 128,
                   workers: int = 2, progress: bool = False) -> list[tuple[bool, str]]:
    """``(passed, reason)`` for each ``(code, tests)``, graded in the sandbox ``batch_size`` at a time.

    Why batches: one sandbox process costs ~0.1-0.3 s to start, which dominates grading thousands of
    short programs. Each candidate runs in a fresh namespace, with the same pass/fail semantics as
    ``sandbox.run_python_tests`` (code, then every test; pass only if nothing raises). A batch that
    ends abnormally (timeout, forbidden call, crash) is re-graded one candidate per process, so one
    bad candidate never decides another's verdict. What batching gives up: candidates in one batch
    share an interpreter, so one could tamper with builtins to make a later one pass; use
    ``batch_size=1`` for untrusted, adversarial code.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from falcon_h1r.sandbox import run_python_tests

    items = [(c, list(t)) for c, t in items]
    results: list[tuple[bool, str] | None] = [None] * len(items)

    def one(i: int) -> None:
        r = run_python_tests(items[i][0], items[i][1], timeout_s=timeout_s)
        results[i] = (r.passed, "ok" if r.passed else f"tests_failed: {r.reason}")

    def chunk(idx: list[int]) -> None:
        if len(idx) == 1:
            return one(idx[0])
        payload = repr([items[i] for i in idx])
        code = _HARNESS.format(payload=payload)
        r = run_python_tests(code, [f"assert __falcon_batch__[{j}]" for j in range(len(idx))],
                             timeout_s=timeout_s * 2)
        if r.reason == "ok" or r.reason.startswith("tests_failed"):
            for j, i in enumerate(idx):
                ok = r.test_outcomes[j]
                results[i] = (ok, "ok" if ok else "tests_failed: batch")
        else:  # the harness itself did not finish: grade each candidate alone
            for i in idx:
                one(i)

    chunks = [list(range(s, min(s + batch_size, len(items)))) for s in range(0, len(items), batch_size)]
    with tqdm(total=len(items), desc="code tests (sandbox)", disable=not progress or not items, leave=False) as bar:
        if workers > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                for c in ex.map(lambda c: chunk(c) or c, chunks):
                    bar.update(len(c))
        else:
            for c in chunks:
                chunk(c)
                bar.update(len(c))
    return [r for r in results if r is not None]


def _distinct_exact_rationals(pred: str, gold: str) -> bool:
    """Both exact rationals written without decimals (integers, a/b, \\frac{a}{b}) that tier 1 found
    different. Two such values differ by at least 1/(b1*b2), so below 10^6 math-verify (which compares
    at 6 decimals) cannot call them equal either: skipping it changes no verdict and saves its ~50 ms
    per wrong answer, most of the grading time of a weak model's rollouts."""
    if "." in pred or "." in gold:
        return False
    a, b = to_rational(pred), to_rational(gold)
    return a is not None and b is not None and a != b and a.denominator * b.denominator < 10**6


def grade(problems: Sequence[dict[str, Any]], responses: Sequence[str], *, use_math_verify: bool = True,
          math_verify_timeout_s: int = 2, code_timeout_s: float = 5.0, code_batch_size: int = 128,
          code_workers: int = 2, progress: bool = False) -> list[Verdict]:
    """Grade responses (``<think>`` trace + final answer) against their problems, like
    ``verify.check``, but with code batched in the sandbox and math-verify timeouts reported as
    ``reason == "verify_timeout"`` (errors as ``"verify_error: ..."``) rather than as "wrong"."""
    if len(problems) != len(responses):
        raise ValueError(f"{len(problems)} problems but {len(responses)} responses")
    out: list[Verdict | None] = [None] * len(problems)
    code_idx, code_items = [], []
    from falcon_h1r.sandbox import syntax_ok

    for i, (p, r) in enumerate(zip(problems, responses)):
        if p.get("domain") == "code" and isinstance(r, str):
            lang, code = extract_code(r)
            want = p.get("language", "python")
            if code is None:
                out[i] = Verdict(False, None, "no_answer")
            elif lang != want:
                out[i] = Verdict(False, code, f"wrong_language: {lang} (expected {want})")
            elif not syntax_ok(code):
                out[i] = Verdict(False, code, "tests_failed: syntax_error")
            else:
                code_idx.append(i)
                code_items.append((code, p["tests"]))
            continue
        v = check(p, r, use_math_verify=False)
        if (p.get("domain") == "math" and not v.correct and v.extracted is not None and use_math_verify
                and not _distinct_exact_rationals(v.extracted, p["answer"])):
            res = _on_main_thread(math_verify_strict, v.extracted, p["answer"], math_verify_timeout_s)
            if res == "equal":
                v = Verdict(True, v.extracted, "ok")
            elif res == "timeout":
                v = Verdict(False, v.extracted, "verify_timeout")
            elif res.startswith("error"):
                v = Verdict(False, v.extracted, f"verify_error: {res[7:]}")
        out[i] = v
    graded = run_code_batch(code_items, timeout_s=code_timeout_s, batch_size=code_batch_size, workers=code_workers,
                            progress=progress)
    for i, (code, _), (ok, reason) in zip(code_idx, code_items, graded):
        out[i] = Verdict(ok, code, reason)
    return [v for v in out if v is not None]


def grade_kwargs(recipe: CurationRecipe) -> dict[str, Any]:
    """The recipe's grading settings, as keyword arguments of :func:`grade` / :func:`estimate_pass_rates`."""
    return {"use_math_verify": recipe.use_math_verify, "math_verify_timeout_s": recipe.math_verify_timeout_s,
            "code_timeout_s": recipe.code_timeout_s, "code_batch_size": recipe.code_batch_size,
            "code_workers": recipe.code_workers}


def trace_response(rec: dict[str, Any]) -> str:
    """The full assistant text of a teacher trace, as a model would emit it (prompt opened ``<think>``)."""
    from falcon_h1r.tokenizer import format_response

    return "<think>\n" + format_response(rec["reasoning"], rec["final"])


# ============================================================================== difficulty and weights
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


# ============================================================================== pass rates
@dataclass
class PassRate:
    id: str
    domain: str
    difficulty: int
    k: int
    correct: int
    majority_answer: str | None  # most frequent extracted answer (normalised), any rollout
    majority_freq: int
    n_truncated: int  # rollouts that hit the length limit
    mean_tokens: float
    reasons: dict[str, int] = field(default_factory=dict)  # grading outcome counts

    @property
    def pass_rate(self) -> float:
        return self.correct / self.k


def answer_key(domain: str, extracted: str | None) -> str | None:
    """A canonical form for majority voting: exact rationals for math, rounded numbers for science,
    whitespace-collapsed code."""
    if extracted is None:
        return None
    if domain == "math":
        from falcon_h1r.verify import normalize_math

        q = to_rational(extracted)
        return str(q) if q is not None else normalize_math(extracted)
    if domain == "science":
        from falcon_h1r.verify import parse_number

        x = parse_number(extracted)
        return f"{x:.4g}" if x is not None else extracted.strip()
    return re.sub(r"\s+", " ", extracted).strip()


def pass_rates_from_verdicts(problems: Sequence[dict[str, Any]], verdicts: Sequence[Verdict],
                             finish: Sequence[str], tokens: Sequence[int], k: int) -> list[PassRate]:
    """Aggregate ``k`` graded rollouts per problem (problem-major order) into pass rates."""
    if not (len(verdicts) == len(finish) == len(tokens) == len(problems) * k):
        raise ValueError(f"expected {len(problems) * k} rollouts ({len(problems)} problems x {k})")
    out = []
    for i, p in enumerate(problems):
        vs, fin, tok = verdicts[i * k:(i + 1) * k], finish[i * k:(i + 1) * k], tokens[i * k:(i + 1) * k]
        keys = Counter(a for a in (answer_key(p["domain"], v.extracted) for v in vs) if a is not None)
        maj, freq = keys.most_common(1)[0] if keys else (None, 0)
        out.append(PassRate(p["id"], p["domain"], int(p.get("difficulty", 0)), k, sum(v.correct for v in vs), maj, freq,
                            sum(f == "length" for f in fin), sum(tok) / k,
                            dict(Counter(v.reason.split(":")[0] for v in vs))))
    return out


def estimate_pass_rates(model: Any, tokenizer: Any, problems: Sequence[dict[str, Any]], gen: Any, *, k: int = 8,
                        seed: int = 0, progress: bool = True, **grade_kw: Any) -> list[PassRate]:
    """``k`` sampled rollouts per problem from ``model`` (batched ``generate``), graded.

    ``gen`` is the GenerationConfig to sample with (the paper: T 0.6, top-p 0.95, max 32K tokens).
    """
    # ``gen.engine`` picks the static-cache CUDA-graph engine on GPU, transformers' loop on CPU.
    from falcon_h1r.inference import generate

    prompts = [tokenizer.prompt(p["question"]) for p in problems for _ in range(k)]
    comps = generate(model, tokenizer, prompts, gen, seed=seed, progress=progress, desc=f"pass-rate rollouts (k={k})")
    expanded = [p for p in problems for _ in range(k)]
    verdicts = grade(expanded, ["<think>\n" + c.text for c in comps], progress=progress, **grade_kw)
    return pass_rates_from_verdicts(problems, verdicts, [c.finish_reason for c in comps],
                                    [c.num_tokens for c in comps], k)


def pass_rate_histogram(rates: Sequence[PassRate], k: int) -> list[int]:
    """Problems per number of correct rollouts, 0..k."""
    counts = Counter(r.correct for r in rates)
    return [counts.get(c, 0) for c in range(k + 1)]


# ============================================================================== RL filter rules
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


# ============================================================================== dedup and contamination
_SPACE_AROUND_PUNCT = re.compile(r"\s*([^\w\s])\s*")


def normalize_text(s: str) -> str:
    """Case- and spacing-insensitive form (Unicode NFKC) for near-exact matching.

    Symbols are kept (only the spaces around them go), so "x + -3" and "x + 3" stay different: in
    math questions a dropped sign is a different problem, not a near duplicate."""
    s = unicodedata.normalize("NFKC", str(s)).casefold()
    s = _SPACE_AROUND_PUNCT.sub(r"\1", " ".join(s.split()))
    return s.rstrip(".?!;: ")


def dedup_against(candidates: Sequence[dict[str, Any]], reference: Iterable[str], *,
                  field_name: str = "question") -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Split ``candidates`` into (kept, removed-with-"exact"|"normalized") against reference texts.

    Duplicates inside ``candidates`` are removed too (the first one stays)."""
    ref = list(reference)
    exact, normed = set(ref), {normalize_text(t) for t in ref}
    kept, removed = [], []
    for c in candidates:
        text = c[field_name]
        n = normalize_text(text)
        if text in exact:
            removed.append((c, "exact"))
        elif n in normed:
            removed.append((c, "normalized"))
        else:
            kept.append(c)
            exact.add(text)
            normed.add(n)
    return kept, removed


def contamination(train_texts: Iterable[str], eval_sets: dict[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Per evaluation set: the % of its items found verbatim (and after normalisation) in the training texts
    (the paper's §4.1 exact-string check, reported in %)."""
    train = list(train_texts)
    exact, normed = set(train), {normalize_text(t) for t in train}
    rows = []
    for name, items in eval_sets.items():
        n = len(items)
        hit_exact = sum(q in exact for q in items)
        hit_norm = sum(normalize_text(q) in normed for q in items)
        rows.append({"benchmark": name, "n_eval": n, "overlap_exact": hit_exact,
                     "overlap_pct": 100.0 * hit_exact / n if n else 0.0,
                     "overlap_normalized": hit_norm, "overlap_normalized_pct": 100.0 * hit_norm / n if n else 0.0})
    return rows


# ============================================================================== mixture
MIXTURE_COLUMNS = ("id", "domain", "difficulty", "question", "answer", "reasoning", "final", "style", "tier",
                   "weight", "prompt_tokens", "response_tokens", "tests", "language", "tolerance", "unit")


def _mixture_row(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "domain": r["domain"], "difficulty": int(r.get("difficulty", 0)),
            "question": r["question"], "answer": r["answer"], "reasoning": r["reasoning"], "final": r["final"],
            "style": str(r.get("style", "")), "tier": str(r.get("tier", "")), "weight": float(r.get("weight", 1.0)),
            "prompt_tokens": int(r.get("prompt_tokens", 0)), "response_tokens": int(r.get("response_tokens", 0)),
            "tests": list(r.get("tests", [])), "language": str(r.get("language", "")),
            "tolerance": float(r.get("tolerance", 0.0)), "unit": str(r.get("unit", ""))}


def mixture_probabilities(proportions: dict[str, float], available: Iterable[str]) -> dict[str, float]:
    """Proportions renormalised over the domains that have records (the paper's "other" has none here)."""
    avail = set(available)
    p = {d: float(v) for d, v in proportions.items() if d in avail and v > 0}
    if not p:
        raise ValueError(f"no domain of the mixture {proportions} has records (have: {sorted(avail)})")
    total = sum(p.values())
    return {d: v / total for d, v in p.items()}


def _yield_rows(rows: list[dict[str, Any]]):
    yield from rows


def build_mixture(records: Sequence[dict[str, Any]], proportions: dict[str, float], *, seed: int = 0):
    """A streamed SFT mixture: one ``datasets.IterableDataset`` per domain, shuffled, interleaved with
    the domain probabilities, stopping when the first domain runs out (so nothing repeats); records
    keep their difficulty ``weight`` (the SFT loss multiplies by it), and removed ones (weight 0) are
    filtered out of the stream. Returns ``(dataset, probabilities)``."""
    from datasets import Features, IterableDataset, Sequence as DSeq, Value, interleave_datasets

    feats = Features({"id": Value("string"), "domain": Value("string"), "difficulty": Value("int64"),
                      "question": Value("string"), "answer": Value("string"), "reasoning": Value("string"),
                      "final": Value("string"), "style": Value("string"), "tier": Value("string"),
                      "weight": Value("float64"), "prompt_tokens": Value("int64"), "response_tokens": Value("int64"),
                      "tests": DSeq(Value("string")), "language": Value("string"), "tolerance": Value("float64"),
                      "unit": Value("string")})
    by_dom = defaultdict(list)
    for r in records:
        by_dom[r["domain"]].append(_mixture_row(r))
    probs = mixture_probabilities(proportions, by_dom)
    parts = []
    for d in probs:
        rows = list(by_dom[d])
        random.Random(f"{seed}-mixture-{d}").shuffle(rows)
        # from_generator, not Dataset.from_list(...).to_iterable_dataset(): same stream, but it skips a
        # per-row Arrow cast that made interleaving ~3x slower here.
        parts.append(IterableDataset.from_generator(_yield_rows, features=feats, gen_kwargs={"rows": rows}))
    mixed = interleave_datasets(parts, probabilities=list(probs.values()), seed=seed,
                                stopping_strategy="first_exhausted")
    return mixed.filter(lambda r: r["weight"] > 0), probs


def mixture_table(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples and tokens (prompt + response) per domain, with shares in %."""
    n = Counter(r["domain"] for r in records)
    tok = Counter()
    for r in records:
        tok[r["domain"]] += int(r.get("prompt_tokens", 0)) + int(r.get("response_tokens", 0))
    ns, ts = sum(n.values()), sum(tok.values())
    return [{"domain": d, "samples": n[d], "pct_samples": 100.0 * n[d] / ns if ns else 0.0, "tokens": tok[d],
             "pct_tokens": 100.0 * tok[d] / ts if ts else 0.0, "avg_tokens_per_sample": tok[d] / n[d]}
            for d in sorted(n, key=lambda d: -n[d])]


# ============================================================================== length statistics
def fit_lognormal(lengths: Sequence[float]) -> dict[str, float]:
    """Log-normal fit (scipy, location fixed at 0) of response lengths and its KS goodness of fit."""
    import numpy as np
    from scipy import stats

    x = np.asarray([v for v in lengths if v > 0], dtype=float)
    if len(x) < 3:
        return {"n": len(x), "mu": math.nan, "sigma": math.nan, "median": math.nan, "ks_stat": math.nan,
                "ks_pvalue": math.nan}
    sigma, _, scale = stats.lognorm.fit(x, floc=0)
    ks = stats.kstest(x, "lognorm", args=(sigma, 0, scale))
    return {"n": int(len(x)), "mu": float(np.log(scale)), "sigma": float(sigma), "median": float(np.median(x)),
            "mean": float(x.mean()), "ks_stat": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}


# ============================================================================== RL curation
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
    or an answer that does not verify against itself; science needs a number, code parseable tests."""
    if p["domain"] == "code":
        from falcon_h1r.sandbox import syntax_ok

        bad = [t for t in p["tests"] if not syntax_ok(t)]
        return (not bad, f"test does not parse: {bad[0][:80]!r}" if bad else "")
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


# ============================================================================== cached stage entry points
def model_fingerprint(model: Any) -> str:
    """A cheap content hash of a model's weights (shapes and sums), for cache keys."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            x = p.detach().float()
            h.update(f"{name}{tuple(p.shape)}{x.sum().item():.6e}{x.abs().sum().item():.6e}".encode())
    return h.hexdigest()[:12]


def _cache_path(preset: Preset, root: Path, kind: str, *parts: Any) -> Path:
    from falcon_h1r.sections.common import cache_dir, recipe_hash

    return cache_dir(preset, root) / f"curation-{kind}-{recipe_hash(CURATION_VERSION, *parts)}.json"


def sft_pool(preset: Preset, recipe: CurationRecipe, problems: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The imperfect teacher's traces for ``problems``, some corrupted as bad input (recipe rates)."""
    from falcon_h1r.tasks import teacher_records

    recs = [public(r) for r in teacher_records(problems, preset.tasks.teacher_style, preset.seed,
                                               rollouts=recipe.teacher_rollouts, noise=recipe.noise())]
    return corrupt_records(recs, recipe.malformed_rate, preset.seed) if recipe.malformed_rate else recs


def curate_sft(preset: Preset, *, model: Any = None, tokenizer: Any = None, root: Path = RESULTS_ROOT,
               progress: bool = True, force: bool = False) -> SFTCuration:
    """The preset's curated SFT records (with weights) and their streamed mixture, cached.

    The pool is the imperfect teacher's traces over the preset's training problems. With
    ``curation.sft_difficulty: pass_rate`` the difficulty comes from ``curation.sft_pass_rate_k``
    rollouts of ``model`` (default: the preset's SFT base model) on each training problem.
    """
    from falcon_h1r.sections.common import get_tokenizer, task_sets

    recipe = load_recipe(preset)
    sets = task_sets(preset)
    tok = tokenizer or get_tokenizer(preset, sets, root)
    model_key = None
    if recipe.sft_difficulty == "pass_rate":
        if model is None:
            from falcon_h1r.sections.common import get_base_model

            base = get_base_model(preset, root=root, progress=progress)
            model, tok = base.model, base.tokenizer
        model_key = model_fingerprint(model)
    path = _cache_path(preset, root, "sft", recipe, preset.tasks, preset.tokenizer, preset.seed, model_key,
                       preset.generation if model_key else None)
    if path.exists() and not force:
        return SFTCuration.from_json(read_json(path))
    pass_rates = None
    if model_key:
        gen = rollout_generation_config(preset, recipe)
        rates = estimate_pass_rates(model, tok, sets["train"], gen, k=recipe.sft_pass_rate_k, seed=preset.seed,
                                    progress=progress, **grade_kwargs(recipe))
        pass_rates = {r.id: r.pass_rate for r in rates}
    pool = sft_pool(preset, recipe, sets["train"])
    cur = curate_sft_records(pool, tok, recipe, eval_questions=[p["question"] for p in sets["test"]],
                             pass_rates=pass_rates, levels=preset.tasks.difficulties, progress=progress)
    ds, probs = build_mixture(cur.records, recipe.mixture, seed=preset.seed)
    cur.mixture = [dict(r) for r in ds]
    cur.stats["mixture_probabilities"] = probs
    cur.stats["difficulty_source"] = recipe.sft_difficulty
    write_json(path, cur.to_json())
    return cur


def rollout_generation_config(preset: Preset, recipe: CurationRecipe):
    """The preset's GenerationConfig with the pass-rate sampling of the recipe (paper: T 0.6, top-p 0.95)."""
    return replace(preset.generation, temperature=recipe.pass_rate_temperature, top_p=recipe.pass_rate_top_p,
                   max_new_tokens=recipe.pass_rate_max_new_tokens or preset.generation.max_new_tokens,
                   batch_size=recipe.rollout_batch_size or preset.generation.batch_size)


def rl_candidates(preset: Preset, recipe: CurationRecipe,
                  sets: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A held-out pool of RL problems (split "rl"), never a test question."""
    from falcon_h1r.tasks import generate_split

    t = preset.tasks
    return [public(p) for p in generate_split(recipe.rl_domains, t.difficulties, recipe.rl_pool_per_domain, "rl",
                                              preset.seed, exclude_questions={p["question"] for p in sets["test"]})]


def curate_rl_pool(preset: Preset, model: Any = None, tokenizer: Any = None, *, root: Path = RESULTS_ROOT,
                   progress: bool = True, force: bool = False) -> RLCuration:
    """The preset's curated RL pool, cached: held-out problems, disjoint from the SFT problems, with
    pass rates from ``model`` (default: the preset's SFT base model) and the 0/8..8/8 rules applied."""
    from falcon_h1r.sections.common import task_sets

    recipe = load_recipe(preset)
    if model is None:
        from falcon_h1r.sections.common import get_base_model

        base = get_base_model(preset, root=root, progress=progress)
        model, tokenizer = base.model, base.tokenizer
    if tokenizer is None:
        raise ValueError("curate_rl_pool: pass the model's tokenizer with the model")
    gen = rollout_generation_config(preset, recipe)
    path = _cache_path(preset, root, "rl", recipe, preset.tasks, preset.seed, gen, model_fingerprint(model))
    if path.exists() and not force:
        return RLCuration.from_json(read_json(path))
    sets = task_sets(preset)
    cands = rl_candidates(preset, recipe, sets)

    def rates_fn(problems):
        return estimate_pass_rates(model, tokenizer, problems, gen, k=recipe.pass_rate_k, seed=preset.seed,
                                   progress=progress, **grade_kwargs(recipe))

    cur = select_rl_pool(cands, rates_fn, recipe, sft_questions=[p["question"] for p in sets["train"]],
                         eval_questions=[p["question"] for p in sets["test"]], seed=preset.seed)
    write_json(path, cur.to_json())
    return cur


__all__ = [
    "CurationRecipe", "PassRate", "RLCuration", "RL_DECISIONS", "RL_RULES", "Removal", "SFTCuration", "SFT_RULES",
    "answer_key", "build_mixture", "contamination", "corrupt_records", "curate_rl_pool", "curate_sft",
    "curate_sft_records", "dedup_against", "difficulty_tier", "estimate_pass_rates", "fit_lognormal", "funnel",
    "grade", "grade_kwargs", "latex_parses", "load_recipe", "mixture_probabilities", "mixture_table", "normalize_text",
    "pass_rate_histogram", "pass_rates_from_verdicts", "quality_issue", "rl_candidates", "rl_decision",
    "rollout_generation_config", "run_code_batch", "sft_pool",
    "select_rl_pool", "validate_record",
]
