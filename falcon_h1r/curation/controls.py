"""Positive controls for the curation's two "nothing found" claims (paper §3.1: the RL set is disjoint from the
SFT data; §4.1: no contamination). A count of 0 proves nothing unless the check would have found something
that was there, so these plant known duplicates and known held-out problems, run the real pipeline functions
on them, and count what was caught.

Every planted item is a fresh copy with an id starting with :data:`PLANTED_PREFIX`; the controls return their
own reports and never touch the inputs, the caches or the curated data (:func:`assert_nothing_planted` is the
guard the section runs on what it curated).
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Iterable, Sequence

from falcon_h1r.curation.dedup import contamination, normalize_text
from falcon_h1r.curation.pass_rates import PassRate
from falcon_h1r.curation.recipe import CurationRecipe
from falcon_h1r.curation.rl_pool import select_rl_pool
from falcon_h1r.curation.sft_records import curate_sft_records
from falcon_h1r.tasks import public

PLANTED_PREFIX = "planted-"
PLANT_KINDS = ("exact", "normalized")


def normalized_variant(text: str) -> str:
    """A text that differs from ``text`` but equals it under the dedup's ``normalize_text`` (case swapped,
    every run of whitespace doubled, padded): what a careless copy of a problem looks like."""
    variant = "  " + re.sub(r"(\s+)", r"\1\1", text.swapcase()) + "  "
    if variant == text or normalize_text(variant) != normalize_text(text):
        variant = "  " + text + "  "  # swapcase does not round-trip for a few characters
    return variant


def plant(problems: Sequence[dict[str, Any]], per_domain: int, seed: int, tag: str) -> list[dict[str, Any]]:
    """``2 * per_domain`` problems of each domain (the lowest levels first, so their traces are short):
    ``per_domain`` planted as exact copies and ``per_domain`` others as :func:`normalized_variant` copies.
    Different problems for the two kinds, so an exact copy can never stand in for a missed variant. Each
    copy gets a new id (``planted-<tag>-<kind>-<original id>``), ``planted_kind`` and ``planted_from``; the
    inputs are not changed."""
    rng = random.Random(f"{seed}-plant-{tag}")
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for p in problems:
        by_domain.setdefault(p["domain"], []).append(p)
    out = []
    for domain in sorted(by_domain):
        pool = sorted(by_domain[domain], key=lambda p: (int(p.get("difficulty", 0)), rng.random()))
        for i, p in enumerate(pool[:2 * per_domain]):
            kind = PLANT_KINDS[i % 2]
            text = p["question"] if kind == "exact" else normalized_variant(p["question"])
            out.append({**p, "id": f"{PLANTED_PREFIX}{tag}-{kind}-{p['id']}", "question": text,
                        "planted_kind": kind, "planted_from": p["id"]})
    return out


def keep_everything_rates(k: int) -> Callable[[Sequence[dict[str, Any]]], list[PassRate]]:
    """A ``rates_fn`` for :func:`select_rl_pool` that rates every problem 1/k (kept by the rules), so a planted
    problem the dedup or decontamination misses ends up in the pool, where the control sees it."""
    def rates(problems: Sequence[dict[str, Any]]) -> list[PassRate]:
        return [PassRate(p["id"], p["domain"], int(p.get("difficulty", 0)), k, 1, None, 0, 0, 0.0) for p in problems]
    return rates


def _mixed_in(real: Sequence[dict[str, Any]], planted: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    out = [dict(p) for p in real] + [dict(p) for p in planted]
    random.Random(f"{seed}-plant-order").shuffle(out)
    return out


def dedup_control(candidates: Sequence[dict[str, Any]], sft_problems: Sequence[dict[str, Any]],
                  recipe: CurationRecipe, *, eval_questions: Iterable[str] = (), per_domain: int = 3,
                  seed: int = 0) -> list[dict[str, Any]]:
    """Plant exact and normalised copies of SFT problems (of the recipe's RL domains) among the RL
    ``candidates``, run :func:`select_rl_pool` on the mix, and return one row per planted copy with
    ``found`` (removed by a duplicate rule) and whether it reached the pool."""
    planted = plant([p for p in sft_problems if p["domain"] in recipe.rl_domains], per_domain, seed, "dup")
    res = select_rl_pool(_mixed_in(candidates, [public(p) for p in planted], seed), keep_everything_rates(recipe.pass_rate_k), recipe,
                         sft_questions=[p["question"] for p in sft_problems], eval_questions=list(eval_questions),
                         seed=seed)
    removed = {r.id: r.rule for r in res.removals}
    pooled = {p["id"] for p in res.problems}
    return [{"control": "rl_dedup_vs_sft", "id": p["id"], "domain": p["domain"], "kind": p["planted_kind"],
             "removed_by": removed.get(p["id"], ""), "reached_pool": p["id"] in pooled,
             "found": removed.get(p["id"], "").startswith("rl_duplicate_")} for p in planted]


def contamination_control(heldout: Sequence[dict[str, Any]], train_texts: Sequence[str],
                          sft_problems: Sequence[dict[str, Any]], recipe: CurationRecipe, tokenizer: Any, *,
                          make_traces: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
                          levels: Sequence[int] = (1, 2, 3), per_domain: int = 3,
                          seed: int = 0) -> list[dict[str, Any]]:
    """Plant exact and normalised copies of held-out problems into the training data and check that each is
    caught three times over: flagged by the contamination check run on ``train_texts`` plus the plants
    (exact copies by the exact match, the paper's §4.1 check; variants by the normalised match), removed by
    the SFT curation (its traces, from ``make_traces``, curated with :func:`curate_sft_records`) and removed
    by the RL curation (:func:`select_rl_pool`). One row per planted copy; ``found`` needs all three.

    Only held-out problems that neither the training texts nor the SFT problems already contain are planted
    (real contamination is what ``contamination_pct`` reports, not this control; and a copy of an SFT problem
    would be removed by the RL dedup before the RL decontamination could show what it does)."""
    present = {normalize_text(t) for t in list(train_texts) + [p["question"] for p in sft_problems]}
    clean = [p for p in heldout if normalize_text(p["question"]) not in present]
    planted = plant(clean, per_domain, seed, "contam")
    eval_questions = [p["question"] for p in heldout]

    original = {p["id"]: p["question"] for p in clean}
    checked = contamination(list(train_texts) + [p["question"] for p in planted],
                            {p["id"]: [original[p["planted_from"]]] for p in planted})
    flagged = {row["benchmark"]: row for row in checked}

    sft = curate_sft_records(make_traces(planted), tokenizer, recipe, eval_questions=eval_questions, levels=levels)
    sft_removed = {r.id: r.rule for r in sft.removals}
    sft_kept = {r["id"] for r in sft.records}
    rl = select_rl_pool([public(p) for p in planted], keep_everything_rates(recipe.pass_rate_k), recipe,
                        sft_questions=[p["question"] for p in sft_problems], eval_questions=eval_questions, seed=seed)
    rl_removed = {r.id: r.rule for r in rl.removals}
    rl_kept = {p["id"] for p in rl.problems}

    rows = []
    for p in planted:
        f = flagged[p["id"]]
        by_check = (f["overlap_exact"] if p["planted_kind"] == "exact" else f["overlap_normalized"]) == 1
        by_sft = sft_removed.get(p["id"]) == "contaminated"
        by_rl = rl_removed.get(p["id"]) == "rl_contaminated"
        rows.append({"control": "heldout_in_training", "id": p["id"], "domain": p["domain"],
                     "kind": p["planted_kind"], "flagged_by_check": by_check,
                     "sft_removed_by": sft_removed.get(p["id"], ""), "rl_removed_by": rl_removed.get(p["id"], ""),
                     "reached_pool": p["id"] in sft_kept or p["id"] in rl_kept, "found": by_check and by_sft and by_rl})
    return rows


def found_fraction(rows: Sequence[dict[str, Any]]) -> float | None:
    """Share of planted copies found (None when nothing was planted)."""
    return sum(bool(r["found"]) for r in rows) / len(rows) if rows else None


def assert_nothing_planted(*collections: Iterable[dict[str, Any]]) -> None:
    """Raise when a planted copy (id ``planted-...``) is in curated data: the controls must never leak."""
    leaked = [str(r.get("id")) for c in collections for r in c if str(r.get("id", "")).startswith(PLANTED_PREFIX)]
    if leaked:
        raise RuntimeError(f"planted control items leaked into curated data: {', '.join(leaked[:5])}")


__all__ = ["PLANTED_PREFIX", "PLANT_KINDS", "assert_nothing_planted", "contamination_control", "dedup_control",
           "found_fraction", "keep_everything_rates", "normalized_variant", "plant"]
