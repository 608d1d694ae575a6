"""Section 05's numbers with their intervals: the replay outcomes (one row per base, problem, series and K)
turned into curves, the premise, the savings, the keep-rule parity and the ``summary.json`` figures.

Every accuracy and token figure is an estimate of :mod:`falcon_h1r.stats` over ``[bases, problems]`` arrays
(the 64 draws per pool are averaged first: they resample one pool, they are not replicates), so its interval
covers retraining the base (unit ``bases``) and drawing other problems; every comparison is paired by base and
problem against majority voting at the same K (online: the same budget). Tokens are per problem (generated
tokens summed over a run, averaged over problems); savings are ratios of sums (``1 - sum(A) / sum(B)`` per base).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from falcon_h1r.stats import Estimate, arm_mean, paired_difference, paired_saving

MAJORITY = "majority"
WEIGHTED = ("mean_confidence_weighted", "tail_confidence_weighted", "bottom_window_weighted", "min_window_weighted")
SCORE_NAME = {"mean_confidence_weighted": "mean", "tail_confidence_weighted": "tail",
              "bottom_window_weighted": "bottom10", "min_window_weighted": "lowest_group"}


class Outcomes:
    """The replay outcomes as ``[bases, problems]`` arrays per (series, K), bases and problems in a fixed order."""

    def __init__(self, table: pd.DataFrame):
        if table.empty:
            raise ValueError("no replay outcomes: the pools were not evaluated")
        self.table = table
        self.bases = sorted(table["base"].unique().tolist())
        self.problems = sorted(table["problem_id"].unique().tolist())
        self._wide = {v: table.pivot_table(index=["series", "K", "base"], columns="problem_id", values=v,
                                           aggfunc="first") for v in ("acc", "tokens")}
        self._keys = set(self._wide["acc"].index.droplevel("base"))
        self._arrays: dict[tuple[str, int, str], np.ndarray] = {}

    def has(self, series: str, k: int) -> bool:
        return (series, k) in self._keys

    def array(self, series: str, k: int, value: str = "acc") -> np.ndarray:
        key = (series, int(k), value)
        if key not in self._arrays:
            block = self._wide[value].loc[(series, k)].reindex(index=self.bases, columns=self.problems)
            arr = block.to_numpy(dtype=float)
            if np.isnan(arr).any():
                raise ValueError(f"outcomes of {series!r} at K={k} miss some (base, problem) pairs")
            arr.setflags(write=False)
            self._arrays[key] = arr
        return self._arrays[key]

    def ks(self, series: str) -> list[int]:
        t = self.table
        return sorted(t.loc[t["series"] == series, "K"].unique().tolist())

    def series(self) -> list[str]:
        return list(dict.fromkeys(self.table["series"]))


def _est(e: Estimate, name: str) -> dict[str, Any]:
    return {name: e.mean, f"{name}_ci95": e.ci95, f"{name}_low": e.low, f"{name}_high": e.high,
            f"{name}_informative": e.informative}


def curves(out: Outcomes) -> pd.DataFrame:
    """Per series and K: accuracy and tokens per problem (mean over bases and problems, with 95 % intervals),
    mean traces, voters and stopped traces, and against majority@K (paired): accuracy difference and token
    saving, each with its interval."""
    t = out.table
    extra = t.groupby(["series", "K"], sort=False)[["traces", "voters", "stopped"]].mean()
    rows = []
    for (series, k), e in extra.iterrows():
        acc, tok = out.array(series, k), out.array(series, k, "tokens")
        row: dict[str, Any] = {"series": series, "K": int(k), **_est(arm_mean(acc, unit="bases"), "acc"),
                               **_est(arm_mean(tok, unit="bases"), "tokens"), **e.to_dict()}
        if series not in (MAJORITY, "pass@1") and out.has(MAJORITY, k):
            maj_acc, maj_tok = out.array(MAJORITY, k), out.array(MAJORITY, k, "tokens")
            row.update(_est(paired_difference(acc, maj_acc, unit="bases"), "acc_minus_majority"))
            row.update(_est(paired_saving(tok, maj_tok, unit="bases"), "token_saving_vs_majority"))
        rows.append(row)
    return pd.DataFrame(rows)


def premise(out: Outcomes) -> pd.DataFrame:
    """Majority@K against pass@1 at every K (paired by base and problem): the test-time-scaling premise."""
    p1 = out.array("pass@1", 1)
    rows = []
    for k in out.ks(MAJORITY):
        e = paired_difference(out.array(MAJORITY, k), p1, unit="bases")
        rows.append({"K": k, "majority_acc": float(out.array(MAJORITY, k).mean()), "pass1": float(p1.mean()),
                     **_est(e, "majority_minus_pass1"), "reason": e.reason})
    return pd.DataFrame(rows)


def premise_by_base(out: Outcomes, k: int) -> pd.DataFrame:
    """Per base: pass@1, majority@K and their difference (means over the problems; no interval: one base is one
    draw of the training run). Where these differ, the interval over bases of :func:`premise` is wide."""
    p1, maj = out.array("pass@1", 1), out.array(MAJORITY, k)
    return pd.DataFrame({"base": out.bases, "pass1": p1.mean(axis=1), f"majority_at_{k}": maj.mean(axis=1),
                         "majority_minus_pass1": (maj - p1).mean(axis=1)})


def premise_by_pass_rate(out: Outcomes, k: int,
                         edges: Sequence[float] = (0, 0.2, 0.4, 0.6, 0.8, 1.0)) -> pd.DataFrame:
    """The (base, problem) pairs binned by their pass@1 (the pool's own rate): how many sit in each bin and
    what majority@K does there. Voting lifts a problem whose correct answer is the most frequent one and sinks
    one where a wrong answer is: the premise's size is set by how many pairs sit in the middle bins, and by
    whether a problem's wrong answers agree with each other (then majority falls even where pass@1 is 0.2-0.4)."""
    p1, maj = out.array("pass@1", 1).ravel(), out.array(MAJORITY, k).ravel()
    bins = pd.cut(p1, list(edges), include_lowest=True)
    t = pd.DataFrame({"pass_rate_bin": bins, "pass1": p1, f"majority_at_{k}": maj})
    g = t.groupby("pass_rate_bin", observed=False)
    pass1, maj_k = g["pass1"].mean(), g[f"majority_at_{k}"].mean()
    return pd.DataFrame({"pairs": g.size(), "pass1": pass1, f"majority_at_{k}": maj_k,
                         "majority_minus_pass1": maj_k - pass1}).reset_index()


def tokens_at_accuracy(curve: pd.DataFrame, acc: float) -> float | None:
    """Tokens a curve (rows sorted by K, columns ``acc`` and ``tokens``) needs to first reach ``acc``,
    interpolated linearly in log-tokens between its two bracketing points; None if it never does."""
    curve = curve.sort_values("K")
    toks, accs = curve["tokens"].to_numpy(float), curve["acc"].to_numpy(float)
    hit = np.flatnonzero(accs >= acc - 1e-12)
    if hit.size == 0:
        return None
    i = int(hit[0])
    if i == 0 or accs[i] == accs[i - 1]:
        return float(toks[i])
    frac = (acc - accs[i - 1]) / (accs[i] - accs[i - 1])
    return float(np.exp(np.log(toks[i - 1]) + frac * (np.log(toks[i]) - np.log(toks[i - 1]))))


def equal_accuracy_saving(out: Outcomes, series: str, k: int) -> Estimate:
    """Tokens saved against majority voting at equal accuracy: per base, ``1 - tokens(series) / tokens
    majority voting needs to first reach the series' accuracy on its K curve`` (log-interpolated; NaN where it
    never does), then the mean over bases with a t interval over them (no problem axis: the curve is a
    per-base quantity).

    Not informative when the series' accuracy cannot be told apart from majority@K (their paired difference's
    interval includes 0): the equal-accuracy point then sits anywhere on the flat part of majority's curve, and
    a 0.005 accuracy wobble moves it by a factor of 100 in tokens (the small preset's DeepConf-high read
    -3,400 % +- 14,700 %). The same-budget saving is the reading there."""
    acc, tok = out.array(series, k), out.array(series, k, "tokens")
    per_base = []
    for b in range(len(out.bases)):
        curve = pd.DataFrame({"K": out.ks(MAJORITY),
                              "acc": [out.array(MAJORITY, kk)[b].mean() for kk in out.ks(MAJORITY)],
                              "tokens": [out.array(MAJORITY, kk, "tokens")[b].mean() for kk in out.ks(MAJORITY)]})
        need = tokens_at_accuracy(curve, float(acc[b].mean()))
        per_base.append(math.nan if need is None or need <= 0 else 1 - float(tok[b].mean()) / need)
    est = arm_mean(np.array(per_base), unit="bases")
    gap = paired_difference(acc, out.array(MAJORITY, k), unit="bases")
    if not gap.excludes_zero():
        why = (f"accuracy not told apart from majority@{k} (difference {gap.mean:+.3f}, interval [{gap.low:.3f}, "
               f"{gap.high:.3f}]): the equal-accuracy point on majority's curve cannot be located; read the "
               "same-budget saving")
        return replace(est, informative=False, reason=why + (f"; {est.reason}" if est.reason else ""))
    return est


def savings(out: Outcomes, online_series: Sequence[str]) -> pd.DataFrame:
    """Each online series at each budget against majority@budget: accuracy difference, token saving at the same
    budget (the DeepConf paper's Table 2 convention) and at equal accuracy on majority's K curve."""
    rows = []
    for series in online_series:
        for k in out.ks(series):
            if not out.has(MAJORITY, k):
                continue
            acc, tok = out.array(series, k), out.array(series, k, "tokens")
            maj_acc, maj_tok = out.array(MAJORITY, k), out.array(MAJORITY, k, "tokens")
            rows.append({"series": series, "budget": k, "acc": float(acc.mean()), "majority_acc": float(maj_acc.mean()),
                         "tokens": float(tok.mean()), "majority_tokens": float(maj_tok.mean()),
                         **_est(paired_difference(acc, maj_acc, unit="bases"), "acc_minus_majority"),
                         **_est(paired_saving(tok, maj_tok, unit="bases"), "saving_same_budget"),
                         **_est(equal_accuracy_saving(out, series, k), "saving_at_equal_acc")})
    return pd.DataFrame(rows)


def keep_rule_parity(out: Outcomes, etas: Sequence[float], k: int) -> pd.DataFrame:
    """Offline filtering at K under both keep rules: traces kept (voters) and accuracy under ``floor`` (exactly
    floor(eta K / 100)) and ``percentile`` (the official code's ``>= np.percentile``), and the paired accuracy
    difference percentile - floor."""
    t = out.table
    rows = []
    for method in WEIGHTED:
        for eta in etas:
            floor, pct = f"{method}@{eta:g}", f"{method}@{eta:g}/percentile"
            if not (out.has(floor, k) and out.has(pct, k)):
                continue
            voters = {s: float(t.loc[(t["series"] == s) & (t["K"] == k), "voters"].mean()) for s in (floor, pct)}
            a_floor, a_pct = out.array(floor, k), out.array(pct, k)
            rows.append({"score": SCORE_NAME[method], "eta": eta, "K": k, "kept_floor": voters[floor],
                         "kept_percentile": voters[pct], "acc_floor": float(a_floor.mean()),
                         "acc_percentile": float(a_pct.mean()),
                         **_est(paired_difference(a_pct, a_floor, unit="bases"), "percentile_minus_floor_acc")})
    return pd.DataFrame(rows)


def voting_spread(out: Outcomes, methods: Sequence[str], k: int) -> Estimate | None:
    """The largest accuracy gap among the unfiltered votes at K: the paired difference between the method with
    the highest and the one with the lowest mean accuracy (its interval over bases and problems). Choosing the
    two extremes after the fact biases it upwards, which is conservative for "about the same"."""
    present = [m for m in methods if out.has(m, k)]
    if len(present) < 2:
        return None
    means = {m: out.array(m, k).mean() for m in present}
    best, worst = max(present, key=means.get), min(present, key=means.get)
    return paired_difference(out.array(best, k), out.array(worst, k), unit="bases")


def headline(out: Outcomes, *, max_budget: int, eta_low: float, eta_high: float, keep_rule: str,
             methods: Sequence[str]) -> dict[str, Any]:
    """The ``summary.json`` estimates (each with its interval keys, :meth:`falcon_h1r.stats.Estimate.summary`)."""
    top = max_budget
    keys: dict[str, Any] = {}
    p1, maj = out.array("pass@1", 1), out.array(MAJORITY, top)
    keys.update(arm_mean(p1, unit="bases").summary("pass1"))
    keys.update(arm_mean(maj, unit="bases").summary(f"majority_acc_k{top}"))
    keys.update(paired_difference(maj, p1, unit="bases").summary("majority_minus_pass1"))
    maj_tok = out.array(MAJORITY, top, "tokens")
    for v in ("low", "high"):
        name, acc = f"online_{v}", out.array(f"online_{v}", top)
        tok = out.array(name, top, "tokens")
        keys.update(arm_mean(acc, unit="bases").summary(f"deepconf_{v}_acc"))
        keys.update(paired_difference(acc, maj, unit="bases").summary(f"deepconf_{v}_minus_majority_acc"))
        keys.update(paired_saving(tok, maj_tok, unit="bases").summary(f"deepconf_{v}_token_saving_vs_majority"))
        keys.update(equal_accuracy_saving(out, name, top).summary(f"deepconf_{v}_token_saving_at_equal_acc"))
        budget_only = out.array(f"{name}/budget_only", top, "tokens")
        keys.update(paired_saving(budget_only, maj_tok, unit="bases").summary(
            f"deepconf_{v}_confidence_stop_token_saving"))
        keys.update(paired_saving(tok, budget_only, unit="bases").summary(f"deepconf_{v}_consensus_extra_saving"))
    keys.update(paired_saving(out.array("consensus_only", top, "tokens"), maj_tok, unit="bases").summary(
        "consensus_stop_token_saving"))
    keys.update(paired_difference(out.array("consensus_only", top), maj, unit="bases").summary(
        "consensus_stop_minus_majority_acc"))
    suffix = "" if keep_rule == "floor" else f"/{keep_rule}"
    for method in WEIGHTED:
        for eta in (eta_low, eta_high):
            series = f"{method}@{eta:g}{suffix}"
            if out.has(series, top):
                keys.update(paired_difference(out.array(series, top), maj, unit="bases").summary(
                    f"offline_{SCORE_NAME[method]}_eta{eta:g}_minus_majority_acc"))
    spread = voting_spread(out, methods, top)
    if spread is not None:
        keys.update(spread.summary("voting_methods_acc_spread"))
    return keys


def premise_sentence(est: dict[str, Any], top: int, source: str) -> str:
    """The premise, in words, from the ``majority_minus_pass1`` keys."""
    value, half = est.get("majority_minus_pass1"), est.get("majority_minus_pass1_ci95")
    if value is None:
        return f"Majority@{top} against pass@1 has no finite value here ({source})."
    text = f"majority@{top} minus pass@1: **{value:+.3f}** ± " + (f"{half:.3f}" if half is not None else "n/a")
    low = est.get("majority_minus_pass1_ci95_low")
    if not est.get("majority_minus_pass1_informative"):
        return (f"{text} ({source}); not informative: {est.get('majority_minus_pass1_reason')}. Whether voting "
                "beats a single sample cannot be read from this run.")
    if low is not None and low > 0:
        return f"Voting beats a single sample: {text} ({source}), the interval above 0. DeepConf's premise holds."
    return (f"Voting does **not** beat a single sample here: {text} ({source}). DeepConf filters and stops votes, so "
            "its numbers below compare methods on a set where voting itself does not help; the testbed (the tasks "
            "and bases) is what to revisit, not the claim.")


__all__ = ["Outcomes", "curves", "premise", "premise_by_base", "premise_by_pass_rate", "tokens_at_accuracy",
           "equal_accuracy_saving", "savings", "keep_rule_parity", "voting_spread", "headline", "premise_sentence"]
