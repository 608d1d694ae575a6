"""The SFT domain mixture (paper Fig. 3) and the per-domain length statistics (paper Fig. 2's log-normal
shape): a streamed ``datasets`` mixture, a fixed-size draw for the ablations, the samples-and-tokens table,
and a scipy log-normal fit."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

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


def mixture_sample(records: Sequence[dict[str, Any]], proportions: dict[str, float], n: int,
                   seed: int) -> list[dict[str, Any]]:
    """``n`` records drawn with the domain ``proportions`` (renormalised over present domains), each
    domain cycling through its shuffled records, so every mixture trains on the same number of samples."""
    by_dom: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_dom.setdefault(r["domain"], []).append(r)
    probs = mixture_probabilities(proportions, by_dom)
    rng = random.Random(seed)
    for d in by_dom:
        rng.shuffle(by_dom[d])
    counts = {d: int(math.floor(p * n)) for d, p in probs.items()}
    for d in sorted(probs, key=lambda d: -(probs[d] * n - counts[d]))[: n - sum(counts.values())]:
        counts[d] += 1
    out = []
    for d, c in counts.items():
        out += [by_dom[d][i % len(by_dom[d])] for i in range(c)]
    rng.shuffle(out)
    return out


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
