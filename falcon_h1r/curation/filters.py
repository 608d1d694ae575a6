"""Bad input and quality filters (paper §2.1): which records cannot be curated at all (``malformed_*``, never a
crash), which traces break a quality rule, and a corrupter that damages records the ways real dumps are
damaged, so the rejects path has work at every preset."""

from __future__ import annotations

import random
from typing import Any, Sequence

from falcon_h1r.curation.grading import on_main_thread
from falcon_h1r.tasks import DOMAINS
from falcon_h1r.verify import extract_boxed, extract_code, final_answer_part, to_rational

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

        parsed = on_main_thread(parse, f"${s}$", parsing_timeout=timeout_s)
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
