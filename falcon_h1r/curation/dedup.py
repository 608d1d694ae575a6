"""Deduplication and the contamination check (paper §4.1's exact-string check, plus a normalised match)."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any, Iterable, Sequence

_SPACE_AROUND_PUNCT = re.compile(r"\s*([^\w\s])\s*")


@functools.lru_cache(maxsize=1 << 16)  # the same questions are normalised by every check of a run
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
