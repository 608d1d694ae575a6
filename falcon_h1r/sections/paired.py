"""Paired differences between two arms, the one implementation every section uses: the SFT ablations (arm A
minus arm B, paired by seed and held-out problem) and the RL curricula (pass rate after RL minus before,
paired by problem).

Statistic: the mean of the paired differences and a 95 % half-width from the normal approximation,
``1.96 * sqrt(var / n)`` with the sample variance (divided by ``n - 1``, or by 1 for a single pair). These are
the RL section's operations, float for float. The SFT ablations computed the same quantity as
``1.96 * sd / sqrt(n)``, which can differ in the last bit; no SFT table or summary shows a half-width at that
precision (the tiny preset recomputed and the committed small records re-rendered give identical files).
Issue 14 replaces this statistic with a new protocol; until then the numbers must not move.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Iterable, Mapping, NamedTuple, Sequence


class PairedDifference(NamedTuple):
    """Mean of A - B over ``n`` pairs and its 95 % half-width. Unpacks as ``diff, ci95, n``."""

    diff: float
    ci95: float
    n: int


def mean_ci95(differences: Sequence[float]) -> PairedDifference:
    """Mean and 95 % half-width (normal approximation) of paired differences; ``(nan, nan, 0)`` when empty."""
    n = len(differences)
    if n == 0:
        return PairedDifference(float("nan"), float("nan"), 0)
    mean = sum(differences) / n
    var = sum((x - mean) ** 2 for x in differences) / max(1, n - 1)
    return PairedDifference(mean, 1.96 * math.sqrt(var / n), n)


def paired_difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float],
                      keys: Iterable[Hashable] | None = None) -> PairedDifference:
    """``a[k] - b[k]`` over the keys both have (``keys`` in their order, else ``a``'s), e.g. per-problem pass
    rates after vs before RL keyed by problem id; ``(nan, nan, 0)`` when no key is shared."""
    shared = [k for k in (keys if keys is not None else a) if k in a and k in b]
    return mean_ci95([a[k] - b[k] for k in shared])


def _outcomes(row: Mapping[str, Any], level: int | None, domain: str | None) -> list[int]:
    keep = [(level is None or lv == level) and (domain is None or d == domain)
            for lv, d in zip(row["outcome_levels"], row["outcome_domains"])]
    return [o for o, k in zip(row["outcomes"], keep) if k]


def paired_rows(rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]], metric: str = "acc", *,
                level: int | None = None, domain: str | None = None) -> PairedDifference:
    """Arm A - arm B from result rows (one per seed), paired by seed and, for accuracy, by held-out problem
    (each row's ``outcomes``; optionally only the problems of one difficulty ``level`` or ``domain``);
    any other ``metric`` pairs the rows' values seed by seed."""
    by_seed_b = {r["seed"]: r for r in rows_b}
    pairs = [(a, by_seed_b[a["seed"]]) for a in rows_a if a["seed"] in by_seed_b]
    if not pairs:
        raise ValueError("no seed is shared by the two arms; run both at the same seeds")
    if metric == "acc":
        d = [x - y for a, b in pairs for x, y in zip(_outcomes(a, level, domain), _outcomes(b, level, domain))]
    else:
        d = [a[metric] - b[metric] for a, b in pairs]
    if not d:
        raise ValueError(f"no held-out problem at level {level} / domain {domain}")
    return mean_ci95(d)


__all__ = ["PairedDifference", "mean_ci95", "paired_difference", "paired_rows"]
