"""The RL section's paired difference of per-problem pass rates (after RL minus before, paired by problem), with a
95 % half-width from the normal approximation, ``1.96 * sqrt(var / n)`` (sample variance, ``n - 1``).

Being retired: the SFT ablations moved to the one statistical protocol (``falcon_h1r.stats``: Student-t over seeds
with the crossed seeds x problems variance); the RL section (issue 16) is the last user of this z interval and
moves to ``falcon_h1r.stats.paired_difference`` with its rework, after which this module goes.
"""

from __future__ import annotations

import math
from typing import Hashable, Iterable, Mapping, NamedTuple, Sequence


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


__all__ = ["PairedDifference", "mean_ci95", "paired_difference"]
