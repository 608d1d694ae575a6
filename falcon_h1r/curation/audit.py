"""Independent re-checks of what the curation kept (the paper's §2.1 and §3.1 claims), and the statistics the
claims read: the SFT quality rules and the RL pass-rate rules recomputed from scratch, the overlap of the RL
pool with the SFT problems, the shape of the kept pass-rate histogram, the length fit and the mixture shares.

Why hand-written and not the pipeline's own functions: a check that calls ``filters.quality_issue`` or
``rl_pool.rl_decision`` again can only agree with itself. The SFT re-check here has its own fence parser, its
own brace matcher and Python's ``compile`` (the pipeline uses ``verify.extract_code``,
``verify.extract_boxed`` and the sandbox's ``ast`` check); the RL re-check takes its threshold from the
paper's file (``papers/rl_filter_rules.yaml``), not from the recipe, so a recipe that drifts from the paper
shows up as violations; the overlap uses a looser text key than the dedup (all whitespace removed), so it can
see near duplicates the dedup's normaliser would let through.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any, Iterable, Mapping, Sequence

# Fence tags that name each language a code record may ask for (the record's ``language``, default python).
LANGUAGE_TAGS = {"python": {"python", "py", "python3"}, "javascript": {"javascript", "js"}, "cpp": {"cpp", "c++"}}
BOXED_DOMAINS = ("math", "science")  # paper §2.1: math; ours: science answers are boxed numbers too


# ============================================================================== SFT: the four quality rules
def _answer_part(final: str) -> str:
    cut = final.rfind("</think>")
    return final if cut < 0 else final[cut + len("</think>"):]


def _has_boxed(text: str) -> bool:
    """A ``\\boxed`` followed (after spaces) by a brace group that closes and is not empty."""
    start = 0
    while True:
        at = text.find("\\boxed", start)
        if at < 0:
            return False
        i = at + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    if text[i + 1:j].strip():
                        return True
                    break
        start = at + 1


def _last_fenced_block(text: str) -> tuple[str, str] | None:
    """``(tag, code)`` of the last complete ```-fenced block, read line by line; None without one."""
    blocks, tag, body = [], "", None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if body is None:
                tag, body = stripped[3:].strip().lower(), []
            else:
                blocks.append((tag, "\n".join(body)))
                body = None
        elif body is not None:
            body.append(line)
    return blocks[-1] if blocks else None


def sft_rule_violations(records: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Kept SFT records that the paper's four quality rules (§2.1) would reject, one row per broken rule:
    empty reasoning, a math (or science) final answer without a non-empty ``\\boxed{}``, code in another language
    than the record asks for, code that does not compile as Python (a code answer with no fenced block at all
    cannot pass either). An empty list means the rules hold on everything kept."""
    out = []
    for r in records:
        rid, domain = str(r.get("id", "?")), str(r.get("domain", "?"))
        reasoning, final = r.get("reasoning"), r.get("final")
        if not isinstance(reasoning, str) or not "".join(reasoning.split()):
            out.append({"id": rid, "domain": domain, "rule": "empty_reasoning", "detail": ""})
        if not isinstance(final, str):
            out.append({"id": rid, "domain": domain, "rule": "no_final", "detail": f"final is {type(final).__name__}"})
            continue
        answer = _answer_part(final)
        if domain in BOXED_DOMAINS and not _has_boxed(answer):
            out.append({"id": rid, "domain": domain, "rule": "no_boxed", "detail": answer[-80:]})
        if domain != "code":
            continue
        block = _last_fenced_block(answer)
        if block is None:
            out.append({"id": rid, "domain": domain, "rule": "no_code_block", "detail": answer[-80:]})
            continue
        tag, code = block
        want = str(r.get("language") or "python")
        if tag and tag not in LANGUAGE_TAGS.get(want, {want}):
            out.append({"id": rid, "domain": domain, "rule": "wrong_language", "detail": f"{tag} (wants {want})"})
        elif want == "python":
            try:
                compile(code, f"<kept trace {rid}>", "exec", dont_inherit=True)
            except (SyntaxError, ValueError) as exc:
                out.append({"id": rid, "domain": domain, "rule": "syntax_error", "detail": str(exc)[:80]})
    return out


# ============================================================================== RL: the pass-rate rules
def paper_rl_rule(paper_rules: Mapping[str, Any]) -> tuple[int, int]:
    """``(rollouts, majority drop threshold)`` of the paper's §3.1 rule, from ``papers/rl_filter_rules.yaml``."""
    k = int(paper_rules["pass_rate_estimation"]["rollouts"])
    at_least = int(paper_rules["rules"]["all_wrong"]["majority_answer_freq_drop_at_least"])
    return k, at_least


def paper_rl_keeps(correct: int, k: int, majority_freq: int, n_truncated: int, *, paper_k: int = 8,
                   paper_drop_at_least: int = 4) -> bool | None:
    """Whether the paper's §3.1 rule keeps a problem (None: either is allowed, i.e. 0/k with every rollout
    truncated, where the paper keeps "a small random subset"). The majority threshold is the paper's 4 of 8,
    scaled to ``k`` rollouts (at least ``paper_drop_at_least * k / paper_k`` repeats)."""
    if not 0 <= correct <= k:
        raise ValueError(f"correct={correct} outside 0..k={k}")
    if correct == k:
        return False
    if correct > 0:
        return True
    if n_truncated >= k:
        return None
    return majority_freq < math.ceil(paper_drop_at_least * k / paper_k)


def rl_rule_violations(rows: Iterable[Mapping[str, Any]], *, paper_k: int = 8,
                       paper_drop_at_least: int = 4) -> list[dict[str, Any]]:
    """Rated RL problems (rows with ``correct``, ``k``, ``majority_freq``, ``n_truncated`` and the pipeline's
    ``decision``) whose keep or drop differs from the paper's rule recomputed from those counts."""
    out = []
    for r in rows:
        decision = str(r["decision"])
        kept = decision.startswith("keep") if decision.startswith(("keep", "drop")) else None
        want = paper_rl_keeps(int(r["correct"]), int(r["k"]), int(r["majority_freq"]), int(r["n_truncated"]),
                              paper_k=paper_k, paper_drop_at_least=paper_drop_at_least)
        if kept is None or (want is not None and kept != want):
            out.append({"id": r.get("id", "?"), "correct": int(r["correct"]), "k": int(r["k"]),
                        "majority_freq": int(r["majority_freq"]), "decision": decision,
                        "paper_rule": "either" if want is None else "keep" if want else "drop"})
    return out


def kept_count_vs_pass_rate_spearman(kept_per_bin: Sequence[int]) -> tuple[float | None, str]:
    """Spearman correlation (scipy) between the number of correct rollouts (0, 1, ..., len-1) and the kept
    problems in that bin; ``(None, why)`` when it is not computable (fewer than 3 bins, or the same count in
    every bin), never NaN. A mirrored J (mass at the hard end) gives a negative value."""
    from scipy.stats import spearmanr

    counts = [int(c) for c in kept_per_bin]
    if len(counts) < 3:
        return None, f"only {len(counts)} pass-rate bins"
    if len(set(counts)) < 2:
        return None, f"the same number of kept problems ({counts[0]}) in every bin: no ranking to correlate"
    rho = spearmanr(range(len(counts)), counts).statistic
    return (float(rho), "") if math.isfinite(rho) else (None, "scipy returned a non-finite correlation")


# ============================================================================== overlap, lengths, mixture
def loose_key(text: str) -> str:
    """Unicode NFKC, case-folded, every whitespace removed, trailing punctuation dropped: coarser than the
    dedup's ``normalize_text`` (anything that equates, this equates too)."""
    s = "".join(unicodedata.normalize("NFKC", str(text)).casefold().split())
    return s.rstrip(".?!;:")


def overlap_count(texts: Iterable[str], reference: Iterable[str]) -> int:
    """How many of ``texts`` match a reference text exactly or under :func:`loose_key`."""
    ref = list(reference)
    exact, loose = set(ref), {loose_key(t) for t in ref}
    return sum(t in exact or loose_key(t) in loose for t in texts)


def max_ks_distance(fits: Iterable[Mapping[str, Any]]) -> tuple[float | None, str]:
    """The largest finite ``ks_stat`` over per-domain log-normal fits (``mixture.fit_lognormal`` rows);
    ``(None, why)`` when no domain has one."""
    vals = {str(f.get("domain", "?")): f.get("ks_stat") for f in fits}
    finite = {d: float(v) for d, v in vals.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if not finite:
        return None, "no domain has enough kept traces (>= 3) for a fit"
    skipped = sorted(set(vals) - set(finite))
    return max(finite.values()), (f"domains without a fit: {', '.join(skipped)}" if skipped else "")


def share_errors_pct(ours_pct: Mapping[str, float], paper_pct: Mapping[str, float], *,
                     exclude: Sequence[str] = ("other",)) -> dict[str, float]:
    """Per domain, our sample share minus the paper's (points), the paper's shares renormalised over its domains
    outside ``exclude`` (it has an "other" we do not synthesise); a paper domain we lack counts as 0 %."""
    paper = {d: float(v) for d, v in paper_pct.items() if d not in exclude}
    total = sum(paper.values())
    if total <= 0:
        raise ValueError(f"paper shares {dict(paper_pct)} have nothing outside {list(exclude)}")
    ours = {d: float(v) for d, v in ours_pct.items() if d not in exclude}
    return {d: ours.get(d, 0.0) - 100.0 * paper.get(d, 0.0) / total for d in sorted(set(paper) | set(ours))}


__all__ = ["BOXED_DOMAINS", "LANGUAGE_TAGS", "kept_count_vs_pass_rate_spearman", "loose_key", "max_ks_distance",
           "overlap_count", "paper_rl_keeps", "paper_rl_rule", "rl_rule_violations", "sft_rule_violations",
           "share_errors_pct"]
